"""Where a base model came from, for what a run hands off: the Hugging Face hub id and revision of a base loaded
from the hub, and the base's licence.

``base_model.prepare_base_model`` records a :class:`ModelOrigin` as ``origin`` in the base's metadata.json. An
adapter trained directly on that base (SFT disabled) names the hub id, with the revision, as its
``base_model_name_or_path`` (:func:`adapter_base`), so it loads with plain PEFT on any machine; the path of the local
copy (``results/<run>/models/base``) stays in its metadata.json. Adapters of any other policy (an SFT model, the
built-in sources, a local model directory that is no hub cache snapshot) name the policy's absolute path: those
weights exist nowhere else.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mva_core.training.records import read_metadata

_SNAPSHOT = re.compile(r"/models--(?P<repo>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})$")
"""A model folder of a Hugging Face hub cache: ``…/models--<org>--<name>/snapshots/<commit>``."""


@dataclass(frozen=True)
class ModelOrigin:
    """A base model's hub id and commit (None when it did not come from the hub) and licence (None if unknown)."""

    hub_id: str | None = None
    revision: str | None = None
    license: str | None = None


@dataclass(frozen=True)
class AdapterBase:
    """The base of an adapter trained on the policy at ``local_path``: its ``hub_id`` and ``revision`` where the
    policy is a base loaded from the hub (None otherwise)."""

    local_path: str
    hub_id: str | None = None
    revision: str | None = None

    @property
    def name_or_path(self) -> str:
        """``base_model_name_or_path`` of the adapter: the hub id, else the absolute local path."""
        return self.hub_id or self.local_path


def source_origin(source: str, revision: str | None = None) -> ModelOrigin:
    """The origin of a model ``source`` as ``from_pretrained`` read it (call it after loading): a local folder (a hub
    cache snapshot names its repository and commit) or a hub id (the commit from the hub cache the load filled)."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        match = _SNAPSHOT.search(folder.resolve().as_posix())
        licence = card_license(folder / "README.md")
        return ModelOrigin(match["repo"].replace("--", "/"), match["commit"], licence) if match else ModelOrigin(
            license=licence)
    return ModelOrigin(source, _cached_commit(source, revision) or revision, card_license(_hub_card(source, revision)))


def _cached_commit(repo_id: str, revision: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    match = _SNAPSHOT.search(Path(path).parent.as_posix()) if isinstance(path, str) else None
    return match["commit"] if match else None


def _hub_card(repo_id: str, revision: str | None) -> Path | None:
    """The repository's README.md (its model card), or None where it cannot be read (none, offline, no access)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, "README.md", revision=revision))
    except OSError:  # the hub's errors (not found, gated, offline and not cached) are OSErrors
        return None


def card_license(card: Path | None) -> str | None:
    """The ``license`` of a model card's YAML front matter, or None."""
    from huggingface_hub.repocard import metadata_load

    if card is None or not card.is_file():
        return None
    licence = (metadata_load(card) or {}).get("license")
    return str(licence) if licence else None


def gguf_license(path: str | os.PathLike) -> str | None:
    """``general.license`` of a GGUF file's metadata, or None."""
    from gguf import GGUFReader

    field = GGUFReader(path).fields.get("general.license")
    return str(field.contents()) if field is not None else None


def recorded_origin(model_dir: str | os.PathLike) -> ModelOrigin:
    """The origin a base model directory records (empty for any other model directory, or a base prepared before
    origins were recorded)."""
    metadata = read_metadata(model_dir) or {}
    if metadata.get("stage") != "base_model" or not metadata.get("origin"):
        return ModelOrigin()
    return ModelOrigin(**metadata["origin"])


def lineage_origin(model_dir: str | os.PathLike, workdir: str | os.PathLike) -> ModelOrigin:
    """The origin of the base ``model_dir`` descends from: its own, or for an SFT model its start model's (recorded
    relative to the run's working directory ``workdir``)."""
    metadata = read_metadata(model_dir) or {}
    if metadata.get("stage") == "sft" and metadata.get("start_model_dir"):
        return recorded_origin(Path(workdir) / metadata["start_model_dir"])  # an absolute path stays as it is
    return recorded_origin(model_dir)


def adapter_base(policy_dir: str | os.PathLike) -> AdapterBase:
    """The base an adapter trained on ``policy_dir`` names: the hub id of a base loaded from the hub, else the
    absolute local path."""
    origin = recorded_origin(policy_dir)
    return AdapterBase(str(Path(policy_dir).resolve()), origin.hub_id, origin.revision if origin.hub_id else None)
