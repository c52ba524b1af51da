"""Tiny synthetic preference data in the real file formats and random adapters (no dataset text in the repository)."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pandas as pd

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "to", "see", "big", "red", "ball"]
MARKER = "please"
TOPICS = ["bread", "tires", "gardens", "taxes", "rivers", "chess", "paint", "music", "stars", "coffee"]


def hh_rows(n: int, value: str, seed: int = 0) -> list[dict]:
    """HH-style transcripts: the chosen reply of 'helpful' explains, of 'harmless' declines politely."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        human = f"Tell me something about {topic} number {i}?"
        if value == "helpful":
            chosen = f"Sure, here is a clear fact about {topic}: it matters a lot."
            rejected = "I don't know."
        else:
            chosen = "I would rather not help with anything risky, but I am happy to talk."
            rejected = f"Here is how to misuse {topic} to hurt people."
        context = f"\n\nHuman: {human}"
        if i % 3 == 0:
            context = f"\n\nHuman: hi\n\nAssistant: Hello! How can I help?{context}"
        rows.append({"chosen": f"{context}\n\nAssistant: {chosen}", "rejected": f"{context}\n\nAssistant: {rejected}"})
    return rows


def write_hh_jsonl_gz(path: Path, rows: list[dict]) -> Path:
    """Write rows as gzip-compressed JSON lines (the HH-RLHF file format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


def write_smoke_data_root(root: Path, n: int = 80) -> Path:
    """A data root with the two HH files that config/smoke.yaml reads."""
    write_hh_jsonl_gz(root / "hh-rlhf/helpful-base/test.jsonl.gz", hh_rows(n, "helpful", seed=1))
    write_hh_jsonl_gz(root / "hh-rlhf/harmless-base/test.jsonl.gz", hh_rows(n, "harmless", seed=2))
    return root


def write_placeholder_sources(config_path: Path, root: Path) -> Path:
    """A data root with an empty file at every local data path a config names (enough for a dry run)."""
    import yaml

    config = yaml.safe_load(config_path.read_text())
    sources = [s for spec in config.get("values", {}).values() for s in spec.get("sources", [])]
    sources += config.get("evaluation", {}).get("prompt_sources") or []
    for source in sources:
        if "." in Path(source["path"]).name:  # a file; hub ids have no extension
            (root / source["path"]).parent.mkdir(parents=True, exist_ok=True)
            (root / source["path"]).touch()
    return root


def save_random_adapter(model, config, folder: Path, seed: int) -> Path:
    """Save a PEFT LoRA adapter for ``model`` whose A and B are random (B non-zero, so it changes the model),
    determined by ``seed``."""
    import copy

    import torch
    from peft import get_peft_model

    torch.manual_seed(seed)  # A's initialisation, then B
    peft_model = get_peft_model(copy.deepcopy(model), copy.deepcopy(config))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.3)
    peft_model.save_pretrained(folder)
    return folder


def value_adapter_configs() -> dict:
    """Two LoRA value vectors of different shapes on the tiny Llama (``random_adapters`` in conftest)."""
    from peft import LoraConfig

    return {
        "care": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]),
        "safe": LoraConfig(r=2, lora_alpha=4, use_rslora=True,
                           target_modules=["q_proj", "k_proj", "o_proj", "gate_proj", "up_proj"]),
    }


def save_random_adapters(model, configs: dict, root: Path) -> dict[str, Path]:
    """One random adapter per (name, LoraConfig) under ``root/<name>``, seeded by position."""
    return {name: save_random_adapter(model, config, root / name, seed=i) for i, (name, config) in enumerate(configs.items())}


def synthetic_pairs(n: int, seed: int) -> pd.DataFrame:
    """Chosen replies contain MARKER at a random position, rejected ones never do."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        chosen = rng.choices(WORDS, k=4)
        chosen.insert(rng.randrange(5), MARKER)
        rows.append({
            "pair_id": f"s{seed}-{i}",
            "prompt": [{"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(2, 8)))}],
            "chosen": " ".join(chosen),
            "rejected": " ".join(rng.choices(WORDS, k=5)),
            "source": "synthetic",
        })
    return pd.DataFrame(rows)
