"""How much a run's evaluation asks for, known when the workflow is planned, before any job runs.

``evaluation_workload`` counts the λ points of every method and the evaluation prompts: points × prompts × samples per
prompt is the number of generations per training seed (each is also scored once per value). The Snakefile prints it and refuses a plan
above ``evaluation.max_generations_per_seed`` (null: no ceiling); the evaluation-prompts job checks the ceiling again
with the prompts it actually found (a prompt source with ``n: null`` is counted only there).

``policy_positions`` reads the policy's context length (positions) from a model directory's ``config.json``: at plan
time from the run's materialised base model or a local ``base_model.source``, else in the evaluation-prompts job
(which also checks every prompt's length against it).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mva_core.config_errors import key_error
from mva_core.grid import GridSettings
from mva_core.methods import method_for, value_order

CEILING_KEY = "evaluation.max_generations_per_seed"
MAX_NEW_TOKENS_KEY = "evaluation.generation.max_new_tokens"
BUILT_GRID_LIMIT = 100_000
"""Grids of at most this many λ vectors are built to count a grid method's points exactly; a larger one is counted by
its size plus the SFT and single-vector references (an upper bound, without building it)."""
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


@dataclass(frozen=True)
class EvaluationWorkload:
    """λ points per method and evaluation prompts of one training seed."""

    points: Mapping[str, int]
    prompts: int
    """Prompts known at plan time (eval splits and prompt sources with ``n``)."""
    whole_sources: tuple[str, ...] = ()
    """Prompt sources with ``n: null``: all their prompts are used, a number known only to the evaluation-prompts job."""
    samples: int = 1
    """Replies per prompt and point (``evaluation.generation.samples_per_prompt``)."""

    @property
    def n_points(self) -> int:
        return sum(self.points.values())

    @property
    def generations_per_seed(self) -> int:
        return self.n_points * self.prompts * self.samples

    def summary(self, n_seeds: int, ceiling: int | None) -> str:
        """One line: points per method, prompts and generations per training seed, and the ceiling."""
        per_method = ", ".join(f"{name} {n:,}" for name, n in self.points.items())
        prompts = f"{self.prompts:,}" + (f" + all of {list(self.whole_sources)}" if self.whole_sources else "")
        at_least = "at least " if self.whole_sources else ""
        prompts += f" prompts x {self.samples} samples" if self.samples > 1 else " prompts"
        return (f"Evaluation plan: {self.n_points:,} λ points ({per_method}) x {prompts} = {at_least}"
                f"{self.generations_per_seed:,} generations per training seed, {n_seeds} training seed(s) (ceiling "
                f"{'none' if ceiling is None else f'{ceiling:,}'}: {CEILING_KEY})")

    def check(self, ceiling: int | None, prompts: int | None = None) -> None:
        """Raise ConfigError (key ``evaluation.max_generations_per_seed``) when the generations per seed, with
        ``prompts`` prompts (default: the planned ones), exceed ``ceiling`` (None: no ceiling)."""
        prompts = self.prompts if prompts is None else prompts
        generations = self.n_points * prompts * self.samples
        samples = f" x {self.samples} samples" if self.samples > 1 else ""
        if ceiling is not None and generations > ceiling:
            raise key_error(CEILING_KEY, f"is {ceiling:,}, but this config asks for {generations:,} generations per "
                                         f"training seed ({self.n_points:,} λ points of all methods x {prompts:,} "
                                         f"prompts{samples}); shrink evaluation.grid, the methods, the "
                                         f"prompts or the samples, or raise {CEILING_KEY} (null: no ceiling) if you "
                                         "mean it")


def evaluation_workload(config: Mapping[str, Any]) -> EvaluationWorkload:
    """The workload of a validated config."""
    evaluation = config["evaluation"]
    grid = GridSettings.of(evaluation["grid"])
    k = len(value_order(config))
    points = {}
    for name in config["methods"]:
        method = method_for(name, config)
        if method.type == "grid" and grid.size(k) > BUILT_GRID_LIMIT:
            points[name] = grid.size(k) + 1 + k
        else:
            points[name] = len(method.points(grid, seed=config["seed"]))
    sources = evaluation["prompt_sources"]
    prompts = evaluation["prompts_per_value"] * k + sum(s["n"] for s in sources if s.get("n") is not None)
    return EvaluationWorkload(points, prompts, tuple(s["name"] for s in sources if s.get("n") is None),
                              evaluation["generation"].get("samples_per_prompt", 1))


def policy_positions(model_dir: str | Path) -> int | None:
    """Positions (context length) in a model directory's ``config.json``; None if it has none that says so."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    settings = json.loads(path.read_text())
    settings = settings.get("text_config", settings)  # multimodal models keep the language model's own
    return next((int(settings[key]) for key in POSITION_KEYS if isinstance(settings.get(key), int)), None)


def planned_policy_positions(config: Mapping[str, Any], base_model_dir: str | Path) -> tuple[int, str] | None:
    """(positions, where they were read) of the policy at plan time: the run's materialised base model
    ``base_model_dir`` (SFT keeps its config) if it was made from the configured ``base_model.source`` and
    ``revision``, else ``base_model.source`` if it is a local model directory."""
    wanted = {key: config["base_model"].get(key) for key in ("source", "revision")}
    candidates = [Path(config["base_model"]["source"]).expanduser()]
    if _made_from(Path(base_model_dir)) == wanted:
        candidates.insert(0, Path(base_model_dir))
    for where in candidates:
        positions = policy_positions(where)
        if positions is not None:
            return positions, str(where)
    return None


def _made_from(model_dir: Path) -> dict | None:
    """``source`` and ``revision`` a materialised base model was made from (its ``metadata.json``), None if unknown."""
    try:
        settings = json.loads((model_dir / "metadata.json").read_text())["settings"]["base_model"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {key: settings.get(key) for key in ("source", "revision")}


def check_max_new_tokens(max_new_tokens: int, positions: int, where: str) -> None:
    """Raise ConfigError when ``max_new_tokens`` leaves no position of the policy's context for a prompt."""
    if max_new_tokens >= positions:
        raise key_error(MAX_NEW_TOKENS_KEY, f"is {max_new_tokens:,}, but the policy ({where}) has a context of "
                                            f"{positions:,} positions, prompt included; lower it to at most "
                                            f"{positions:,} minus the longest evaluation prompt's tokens")
