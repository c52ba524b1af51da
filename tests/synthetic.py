"""Tiny synthetic preference data in the real file formats and random adapters (no dataset text in the repository)."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

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


def save_random_adapter(model, config, folder: Path, seed: int) -> Path:
    """Save a PEFT LoRA adapter for ``model`` whose B is random (non-zero), so it changes the model."""
    import copy

    import torch
    from peft import get_peft_model

    peft_model = get_peft_model(copy.deepcopy(model), copy.deepcopy(config))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.3)
    peft_model.save_pretrained(folder)
    return folder


def save_random_adapters(model, configs: dict, root: Path) -> dict[str, Path]:
    """One random adapter per (name, LoraConfig) under ``root/<name>``, seeded by position."""
    return {name: save_random_adapter(model, config, root / name, seed=i) for i, (name, config) in enumerate(configs.items())}
