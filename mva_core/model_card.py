"""The model card of an ``mva-export`` folder: README.md with YAML metadata (the Hugging Face model-card format),
written from the export's record (``mva_export.json``)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml


def card_metadata(record: Mapping[str, Any]) -> dict[str, Any]:
    """The YAML front matter: base model (its hub id where known, else the local path), licence (where the base's
    card or GGUF metadata names one), library, tags, and what was combined: method, seed, λ, the value vectors with
    their sha256, dtype."""
    lora = record["form"] == "lora"
    metadata: dict[str, Any] = {"base_model": record["hub_base_model"] or record["base_model"]}
    if record["hub_revision"]:
        metadata["base_model_revision"] = record["hub_revision"]
    if record["license"]:
        metadata["license"] = record["license"]
    metadata.update({
        "library_name": "peft" if lora else "transformers",
        "tags": ["mva", "multi-value-alignment", "lora" if lora else "merge"],
        "method": record["method"],
        "seed": record["seed"],
        "lambdas": dict(record["lambdas"]),
        "value_vectors": {value: {"sha256": info["sha256"], "path": info["path"]}
                          for value, info in record["value_vectors"].items()},
        "dtype": record["dtype"],
    })
    if lora:
        metadata["lora_rank"] = record["rank"]
    return metadata


def model_card(record: Mapping[str, Any], record_file: str) -> str:
    """README.md: the metadata block, then how the weights were made and how to load them."""
    lam = ", ".join(f"λ_{v} = {x:g}" for v, x in record["lambdas"].items())
    base = record["hub_base_model"] or record["base_model"]
    if record["form"] == "lora":
        what = (f"One LoRA adapter of rank {record['rank']} = Σ_v r_v whose B·A is Σ_v λ_v·ΔW_v exactly (A = [A_1; …; "
                "A_k], B = [λ_1 s_1 B_1, …, λ_k s_k B_k], scaling 1).")
        load = ["from peft import AutoPeftModelForCausalLM", "", "model = AutoPeftModelForCausalLM.from_pretrained(\"<this folder>\")"]
    else:
        what = "W = W_base + Σ_v λ_v·ΔW_v, written into the weights."
        load = ["from transformers import AutoModelForCausalLM", "",
                "model = AutoModelForCausalLM.from_pretrained(\"<this folder>\")"]
    lines = ["---", yaml.safe_dump(card_metadata(record), sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# MVA model: {record['method']}, seed {record['seed']}, {lam}", "", what, "", "```python", *load, "```",
             "", f"- base model: `{base}`" + (
                 f" (the vectors were trained on `{record['base_model']}`)" if record["hub_base_model"] else "")]
    lines += [f"- value vector `{v}`: `{info['path']}` (adapter sha256 `{info['sha256']}`)"
              for v, info in record["value_vectors"].items()]
    lines += ["", f"Full record (base model provenance included): `{record_file}`.", ""]
    return "\n".join(lines)
