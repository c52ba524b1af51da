"""The training harness without training: settings → TrainingArguments, the log and metadata formats, scratch dirs."""
from __future__ import annotations

import dataclasses
import json

import pytest
from transformers.trainer_callback import TrainerState
from trl import DPOConfig, RewardConfig, SFTConfig

from mva_core.reward_models import RewardModelSettings
from mva_core.sft import SFTSettings
from mva_core.training.harness import SCHEDULE_ARGUMENTS, TrainingJob, schedule_arguments
from mva_core.training.records import TrainingMetadata, read_metadata, training_log
from mva_core.value_training import DPOSettings

STAGES = [  # settings class, its trainer's config class, the fields the stage uses itself (not trainer arguments)
    (SFTSettings, SFTConfig, {"max_length", "lora_r", "lora_alpha", "lora_dropout", "target_modules"}),
    (DPOSettings, DPOConfig, {"beta", "max_length", "max_prompt_length", "precompute_ref_log_probs"}),
    (RewardModelSettings, RewardConfig, {"source", "input_format", "batch_size", "dtype", "max_length",
                                         "trust_remote_code", "lora_r", "backbone_layers", "scorer", "revision"}),
]


@pytest.mark.parametrize("settings_class,config_class,own", STAGES, ids=lambda x: getattr(x, "__name__", ""))
def test_every_setting_is_a_trainer_argument_or_used_by_its_stage(settings_class, config_class, own):
    names = {f.name for f in dataclasses.fields(settings_class)}
    trainer_fields = set(settings_class.TRAINER_FIELDS)
    assert trainer_fields <= names and trainer_fields <= set(SCHEDULE_ARGUMENTS)
    assert trainer_fields | own == names and not trainer_fields & own
    config_fields = {f.name for f in dataclasses.fields(config_class)}
    assert {SCHEDULE_ARGUMENTS[name] for name in trainer_fields} <= config_fields


def test_job_arguments_carry_the_settings_and_a_scratch_dir_without_checkpoints(tmp_path):
    dpo = DPOSettings(learning_rate=3e-4, epochs=0.5, gradient_checkpointing=True, warmup_ratio=0.25,
                      lr_scheduler="cosine", logging_steps=3, save_steps=7, seed=5)
    job = TrainingJob(stage="value_vector", label="DPO", start_model_dir=tmp_path, pair_ids=["a"],
                      settings={"dpo": dpo}, checkpoint_dir=None)
    with job:
        args = job.arguments(DPOConfig, dpo, beta=0.2, max_length=None)
        scratch = job.trainer_dir
        assert scratch.is_dir() and args.output_dir == str(scratch) and args.save_strategy == "no"
    assert not scratch.exists()
    assert (args.learning_rate, args.num_train_epochs, args.activation_checkpointing, args.warmup_steps) == (
        3e-4, 0.5, True, 0.25)
    assert (args.lr_scheduler_type, args.logging_steps, args.save_steps, args.seed, args.beta) == (
        "cosine", 3, 7, 5, 0.2)
    assert args.use_cpu and not args.bf16 and args.report_to == [] and args.disable_tqdm
    assert schedule_arguments(RewardModelSettings(train_batch_size=3, batch_size=99))["per_device_train_batch_size"] == 3


def test_a_job_resumes_only_its_own_runs_checkpoints(tmp_path):
    def job(**changes):
        fields = {"stage": "sft", "label": "SFT", "start_model_dir": "base", "pair_ids": ["a", "b"],
                  "settings": {"sft": SFTSettings()}, "checkpoint_dir": tmp_path / "ckpt", **changes}
        return TrainingJob(**fields)

    with job():
        pass
    (tmp_path / "ckpt" / "checkpoint-2").mkdir()
    TrainerState(global_step=2).save_to_json(str(tmp_path / "ckpt" / "checkpoint-2" / "trainer_state.json"))
    with job() as same:
        assert same.resume_from == str(tmp_path / "ckpt" / "checkpoint-2")
    with job(pair_ids=["a", "c"]) as other:  # other data: its checkpoints are discarded
        assert other.resume_from is None and not (tmp_path / "ckpt" / "checkpoint-2").exists()


def test_training_log_keeps_logging_steps_with_named_columns_first():
    history = [{"step": 1, "epoch": 0.5, "loss": 0.7, "learning_rate": 1e-3, "grad_norm": 2.0, "penalty": 0.1},
               {"step": 2, "epoch": 1.0, "loss": 0.6, "learning_rate": 5e-4, "grad_norm": 1.0},
               {"step": 2, "train_runtime": 3.0, "train_loss": 0.65}]  # the trainer's final summary: not a step
    log = training_log(history, metrics=("dpo_loss", "penalty"))
    assert list(log.columns) == ["step", "epoch", "loss", "dpo_loss", "penalty", "learning_rate", "grad_norm"]
    assert log["step"].tolist() == [1, 2] and log["dpo_loss"].isna().all() and log["penalty"].isna().tolist() == [
        False, True]


def test_metadata_has_one_format_and_older_formats_read_into_it(tmp_path):
    metadata = TrainingMetadata(stage="sft", start_model_dir="base", settings={"sft": {"lora_r": 2}},
                                details={"extra": 1})
    metadata.write(tmp_path / "new")
    written = json.loads((tmp_path / "new" / "metadata.json").read_text())
    assert written["extra"] == 1 and "trl" in written["library_versions"] and read_metadata(tmp_path / "new") == written
    with pytest.raises(ValueError, match="'stage'"):
        TrainingMetadata(stage="sft", start_model_dir="base", settings={}, details={"stage": "x"}).to_json()

    (tmp_path / "vector").mkdir()
    (tmp_path / "vector" / "metadata.json").write_text(json.dumps(
        {"sft_model_dir": "models/sft", "lora": {"r": 4}, "dpo": {"beta": 0.1}, "penalty": {"kind": "none"}}))
    vector = read_metadata(tmp_path / "vector")
    assert vector["start_model_dir"] == "models/sft" and vector["settings"]["lora"] == {"r": 4}
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "metadata.json").write_text(json.dumps(
        {"base_model_dir": "models/base", "settings": {"input_format": "hh_transcript"}}))
    reward_model = read_metadata(tmp_path / "rm")
    assert reward_model["settings"]["reward_model"]["input_format"] == "hh_transcript"
    assert read_metadata(tmp_path / "nothing") is None
