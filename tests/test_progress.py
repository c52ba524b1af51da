"""Progress lines in job logs: one per training logging step (with total, elapsed and ETA) and none from
transformers beside it; one per tenth of a row loop (generation, scoring, the reference log-prob precompute)."""
from __future__ import annotations

import contextlib
import io
import re

import pandas as pd
import pytest
from transformers.trainer_callback import TrainerControl, TrainerState

from mva_core.progress import LineProgress, ProgressLog


def test_training_progress_has_step_total_elapsed_eta_and_loss(capsys):
    callback, state = ProgressLog("DPO"), TrainerState(max_steps=16)
    callback.on_train_begin(None, state, TrainerControl())
    for step in (1, 2):
        state.global_step = step
        callback.on_log(None, state, TrainerControl(), logs={"loss": 0.5 / step})
    callback.on_log(None, state, TrainerControl(), logs={"train_runtime": 3.0, "train_loss": 0.375})  # the summary
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "DPO: training 16 steps"
    assert re.fullmatch(r"DPO step 2/16 \(12%\), elapsed \dm\d\ds, ETA \dm\d\ds, loss 0\.25", lines[-2])
    assert lines[-1] == "DPO: trained 2 steps in 0m03s, mean loss 0.375"
    assert len(lines) == 4 and "\r" not in "".join(lines)


def test_row_progress_prints_a_line_per_tenth_and_the_end(capsys):
    progress = LineProgress(95, "generate")
    for _ in range(95):
        progress.update()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[-1].startswith("generate: 95/95 rows (100%)")
    assert lines[0].startswith("generate: 10/95 rows (10%)")
    assert all(re.search(r", \d+\.\d\d rows/s$", line) for line in lines)


@pytest.fixture(scope="module")
def dpo_job_log(tmp_path_factory, tiny_model_dir) -> list[str]:
    """The job log (stdout and stderr, as ``logged_job`` writes them) of a tiny DPO run: 16 pairs in batches of 4,
    4 steps, a progress line every 2nd step, the reference log-probs precomputed."""
    from mva_core.penalties import PenaltySettings
    from mva_core.value_training import DPOSettings, LoraSettings, train_value_vector

    tmp = tmp_path_factory.mktemp("dpo_job_log")
    pairs = pd.DataFrame({
        "pair_id": [f"p{i:02d}" for i in range(16)],
        "prompt": [[{"role": "user", "content": f"What is {i} plus {i}?"}] for i in range(16)],
        "chosen": [f"It is {2 * i}." for i in range(16)],
        "rejected": ["I will not tell you."] * 16,
    })
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        train_value_vector(tiny_model_dir, pairs, tmp / "vector", frozen_vectors={}, lora=LoraSettings(r=2, alpha=4),
                           dpo=DPOSettings(batch_size=4, learning_rate=1e-2, logging_steps=2),
                           penalty=PenaltySettings(), checkpoint_dir=tmp / "ckpt", threads=1)
    return log.getvalue().splitlines()


def test_a_training_job_logs_exactly_one_line_per_logging_step(dpo_job_log):
    """No metrics dict from transformers' printer callback beside ProgressLog's line (issue 25)."""
    steps = [line for line in dpo_job_log if re.match(r"DPO step \d+/4 ", line)]
    assert [line.split()[2] for line in steps] == ["2/4", "4/4"]
    metric_lines = [line for line in dpo_job_log if "loss" in line]
    assert metric_lines == [*steps, metric_lines[-1]] and metric_lines[-1].startswith("DPO: trained 4 steps in ")
    assert not [line for line in dpo_job_log if line.lstrip().startswith("{")]


def test_the_reference_log_prob_precompute_reports_its_progress_before_training(dpo_job_log):
    precompute = [line for line in dpo_job_log if line.startswith("reference log-probs (train): ")]
    assert [line.split()[3] for line in precompute] == ["4/16", "8/16", "12/16", "16/16"]
    assert all(re.search(r", ETA \dm\d\ds, \d+\.\d\d rows/s$", line) for line in precompute)
    assert dpo_job_log.index(precompute[-1]) < dpo_job_log.index("DPO: training 4 steps")
