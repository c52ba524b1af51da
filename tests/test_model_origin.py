"""Hand-off of adapters (issue 25): an adapter trained directly on a base loaded from the hub names the hub id (and
commit) as its ``base_model_name_or_path`` and loads with plain PEFT; adapters of any other policy name its
absolute path. The hub is simulated offline: a Hugging Face cache folder made in the test."""
from __future__ import annotations

import json

import huggingface_hub.constants
import pandas as pd
import pytest
import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from transformers import AutoModelForCausalLM

from mva_core.base_model import BaseModelSettings, prepare_base_model
from mva_core.model_origin import ModelOrigin, adapter_base, source_origin
from mva_core.penalties import PenaltySettings
from mva_core.value_training import DPOSettings, LoraSettings, train_value_vector

HUB_ID = "tiny-org/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_llama, tiny_tokenizer):
    """An offline hub whose cache holds ``HUB_ID`` at ``COMMIT`` (the tiny model, a model card with a licence):
    the snapshot folder."""
    repo = tmp_path / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    tiny_llama.save_pretrained(snapshot)
    tiny_tokenizer.save_pretrained(snapshot)
    (snapshot / "README.md").write_text("---\nlicense: mit\nlanguage: en\n---\n# A tiny model\n")
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text(COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return snapshot


def pairs(n: int = 8) -> pd.DataFrame:
    return pd.DataFrame({"pair_id": [f"p{i}" for i in range(n)],
                         "prompt": [[{"role": "user", "content": f"What is {i} plus {i}?"}] for i in range(n)],
                         "chosen": [f"It is {2 * i}." for i in range(n)], "rejected": ["No."] * n})


def test_an_adapter_trained_on_a_hub_base_names_the_hub_id_and_loads_with_plain_peft(hub_cache, tmp_path):
    base = prepare_base_model(BaseModelSettings(source=HUB_ID), tmp_path / "results/r/models/base")
    assert json.loads((base / "metadata.json").read_text())["origin"] == {
        "hub_id": HUB_ID, "revision": COMMIT, "license": "mit"}
    adapter = train_value_vector(base, pairs(), tmp_path / "results/r/seed_1/value_vectors/independent/helpful",
                                 frozen_vectors={}, lora=LoraSettings(r=2, alpha=4),
                                 dpo=DPOSettings(batch_size=4, learning_rate=1e-2, epochs=1),
                                 penalty=PenaltySettings(kind="none"), checkpoint_dir=tmp_path / "ckpt", threads=1)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["base_model_name_or_path"], config["revision"]) == (HUB_ID, COMMIT)
    assert json.loads((adapter / "metadata.json").read_text())["start_model_path"] == str(base.resolve())
    input_ids = torch.randint(3, 200, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        from_hub = AutoPeftModelForCausalLM.from_pretrained(adapter).eval()(input_ids=input_ids).logits
        local = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
        torch.testing.assert_close(from_hub, local(input_ids=input_ids).logits)
        with local.disable_adapter():
            assert (from_hub - local(input_ids=input_ids).logits).abs().max() > 0  # the adapter was trained


@pytest.mark.parametrize("source", ["tiny_random", "local folder"])
def test_adapters_of_other_bases_name_the_absolute_local_path(tmp_path, tiny_model_dir, source):
    settings = BaseModelSettings(source=str(tiny_model_dir) if source == "local folder" else source)
    base = prepare_base_model(settings, tmp_path / "models/base")
    assert adapter_base(base).name_or_path == str(base.resolve()) and adapter_base(base).revision is None
    (tmp_path / "models/sft").mkdir()  # an SFT model never names the hub: its weights exist only here
    (tmp_path / "models/sft/metadata.json").write_text(json.dumps({"stage": "sft", "start_model_dir": str(base)}))
    assert adapter_base(tmp_path / "models/sft").name_or_path == str((tmp_path / "models/sft").resolve())


def test_a_hub_cache_snapshot_folder_is_named_by_its_hub_id_and_commit(hub_cache, tmp_path):
    assert source_origin(str(hub_cache)) == ModelOrigin(HUB_ID, COMMIT, "mit")
    base = prepare_base_model(BaseModelSettings(source=str(hub_cache)), tmp_path / "models/base")
    assert (adapter_base(base).name_or_path, adapter_base(base).revision) == (HUB_ID, COMMIT)


def test_the_default_base_records_the_licence_of_its_gguf_file():
    from mva_core.base_model import model_origin

    assert model_origin(BaseModelSettings()) == ModelOrigin(license="apache-2.0")
