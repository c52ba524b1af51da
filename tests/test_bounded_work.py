"""Issue 22, items 3 and 6: bounded work checked up front, permanent failures that are not retried, failed reruns
that keep the finished tables, and prompts that do not fit the policy's context."""
from __future__ import annotations

import ast
import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, snakemake
from synthetic import write_placeholder_sources

from mva_core.config import ConfigError, validate_config
from mva_core.data import ContextBudget, DataError, PromptSet, evaluation_prompts
from mva_core.generation import GenerationSettings, encode_prompt, generate_grid
from mva_core.job_failures import RECORD_SUFFIX
from mva_core.summary import context_lines
from mva_core.workflow_io import logged_job
from mva_core.workload import evaluation_workload

SMOKE = REPO / "config/smoke.yaml"


def smoke_config(**evaluation) -> dict:
    config = yaml.safe_load(SMOKE.read_text())
    config["evaluation"].update(evaluation)
    return config


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------------------------------ sizes in the config


@pytest.mark.parametrize("key,section,value", [
    ("evaluation.bootstrap", "evaluation", {"bootstrap": 1_000_000_000}),
    ("evaluation.generation.max_new_tokens", "generation", {"max_new_tokens": 1_000_000_000}),
])
def test_sizes_far_beyond_any_run_fail_validation_naming_the_key(key, section, value):
    config = smoke_config()
    (config["evaluation"] if section == "evaluation" else config["evaluation"]["generation"]).update(value)
    with pytest.raises(ConfigError, match=rf"config key '{key}': 1000000000 is greater than the maximum"):
        validate_config(config)


def test_generations_above_the_ceiling_fail_validation_unless_allowed():
    """A 100 x 100 grid: 10,000 points for each of smoke's 4 grid methods, 13 for the others, x 6 prompts."""
    grid = {"type": "product", "lambdas": [i / 99 for i in range(100)]}
    with pytest.raises(ConfigError, match=r"config key 'evaluation.max_generations_per_seed': is 50,000, but this "
                                          r"config asks for 240,078 generations per training seed \(40,013 λ points"):
        validate_config(smoke_config(grid=grid, max_generations_per_seed=50_000))
    validate_config(smoke_config(grid=grid, max_generations_per_seed=None))  # null: no ceiling
    workload = evaluation_workload(validate_config(smoke_config()))  # 29 points x 6 prompts
    workload.check(174)
    with pytest.raises(ConfigError, match=r"asks for 290 generations per training seed \(29 λ points of all "
                                          r"methods x 10 prompts\)"):
        workload.check(174, prompts=10)  # the evaluation-prompts job, once a source with n: null is counted
    for shipped in [REPO / "config.yaml", *sorted((REPO / "config").glob("paper_*.yaml"))]:
        validate_config(yaml.safe_load(shipped.read_text()))  # the default ceiling lets the shipped configs through


def plan(tmp_path: Path, overlay: str) -> subprocess.CompletedProcess:
    """``snakemake -n`` of the smoke config with ``overlay`` on top, placeholder data files."""
    root = write_placeholder_sources(SMOKE, tmp_path / "placeholder_data")
    (tmp_path / "overlay.yaml").write_text(overlay)
    return snakemake("-n", "--configfile", str(SMOKE), str(tmp_path / "overlay.yaml"), "--config",
                     f"data_roots=['{root}']", workdir=tmp_path)


def test_the_plan_prints_points_prompts_and_generations_per_seed(tmp_path):
    result = plan(tmp_path, "evaluation: {grid: {type: product, lambdas: [0.0, 0.25, 0.5, 0.75, 1.0]}}\n")
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("Evaluation plan: 113 λ points (mva 25, mva_dw 25, soup 25, ortho 25, single 5, expo 6, modpo 2) x 6 "
            "prompts = 678 generations per training seed, 1 training seed(s) (ceiling 500,000: "
            "evaluation.max_generations_per_seed)") in result.stderr


def test_max_new_tokens_that_leave_no_room_in_the_policy_context_fail_the_plan(tmp_path):
    """Once the base model exists (a rerun), its config.json bounds max_new_tokens before any job starts."""
    base = tmp_path / "results/smoke/models/base"
    base.mkdir(parents=True)
    (base / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 1024}))
    made_from = {"settings": {"base_model": {"source": "tiny_random", "revision": None}}}
    (base / "metadata.json").write_text(json.dumps(made_from))
    result = plan(tmp_path, "evaluation: {generation: {max_new_tokens: 1024}}\n")
    assert result.returncode != 0
    assert ("config key 'evaluation.generation.max_new_tokens': is 1,024, but the policy (results/smoke/models/base) "
            "has a context of 1,024 positions") in result.stdout + result.stderr
    made_from["settings"]["base_model"]["source"] = "another/model"  # to be rebuilt: its job checks the new one
    (base / "metadata.json").write_text(json.dumps(made_from))
    assert plan(tmp_path, "evaluation: {generation: {max_new_tokens: 1024}}\n").returncode == 0


# ------------------------------------------------------------------------------------------------ permanent failures


@dataclass
class FakeJob:
    """The parts of the ``snakemake`` object of a workflow script that ``logged_job`` reads."""

    log: list[str]
    attempt: int = 1
    input: list[str] = field(default_factory=list)
    rule: str = "frontiers"
    wildcards: dict = field(default_factory=dict)
    params: dict = field(default_factory=lambda: {"bootstrap": 1000})
    config: dict = field(default_factory=dict)

    @property
    def resources(self) -> dict:
        return {"attempt": self.attempt}


def run_job(job: FakeJob, body) -> BaseException | None:
    try:
        with logged_job(job):
            body()
    except BaseException as error:  # noqa: BLE001 (SystemExit included)
        return error
    return None


def test_a_permanent_error_is_not_retried_and_the_retry_log_quotes_it(tmp_path):
    log = tmp_path / "logs/frontiers/main.log"
    ran = []

    def bootstrap():
        ran.append(1)
        raise MemoryError("Unable to allocate 14.9 GiB for an array with shape (1000000000, 2)")

    first = run_job(FakeJob([str(log)]), bootstrap)
    assert isinstance(first, MemoryError) and len(ran) == 1
    assert "this error is permanent" in log.read_text()
    retry = run_job(FakeJob([str(log)], attempt=2), bootstrap)
    assert isinstance(retry, SystemExit) and len(ran) == 1, "the retry redid the work"
    text = log.read_text()
    assert text.startswith("attempt 2 of frontiers not run: attempt 1 failed with an error that a retry cannot fix")
    assert "MemoryError: Unable to allocate 14.9 GiB" in text and "in bootstrap" in text  # attempt 1's traceback
    assert str(retry.code).splitlines()[1].strip() == "MemoryError: Unable to allocate 14.9 GiB for an array with " \
                                                      "shape (1000000000, 2)"


def test_data_errors_are_permanent_but_other_errors_and_changed_jobs_keep_their_retry(tmp_path):
    log = tmp_path / "logs/prepare_value_data/helpful.log"
    record = Path(str(log) + RECORD_SUFFIX)
    ran = []

    def empty_split():
        ran.append(1)
        raise DataError("value 'helpful': split 'eval' is empty")

    run_job(FakeJob([str(log)], rule="prepare_value_data"), empty_split)
    assert record.is_file()
    changed = FakeJob([str(log)], attempt=2, rule="prepare_value_data", params={"bootstrap": 500})
    assert isinstance(run_job(changed, empty_split), DataError) and len(ran) == 2  # other settings: tried again

    def transient():
        ran.append(1)
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    record.unlink(missing_ok=True)
    assert isinstance(run_job(FakeJob([str(log)]), transient), RuntimeError) and not record.exists()
    assert run_job(FakeJob([str(log)], attempt=2), lambda: ran.append(1)) is None and len(ran) == 4

    run_job(FakeJob([str(log)]), empty_split)
    assert record.is_file()
    assert run_job(FakeJob([str(log)]), lambda: None) is None  # a new run (attempt 1) tries again and succeeds
    assert not record.exists()


def test_workflow_scripts_load_no_torch_before_the_retry_check():
    """A refused retry ends within seconds: the imports a script makes before ``with logged_job(...)`` are light."""
    for script in sorted((REPO / "workflow_scripts").glob("*.py")):
        imports = []
        for node in ast.parse(script.read_text()).body:
            if isinstance(node, ast.With):
                break
            if isinstance(node, ast.Import | ast.ImportFrom):
                imports.append(ast.unparse(node))
        code = "\n".join([*imports, "import sys", "print(sorted({'torch', 'transformers'} & set(sys.modules)))"])
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0 and result.stdout.strip() == "[]", f"{script.name}: {result.stdout}{result.stderr}"


# ------------------------------------------------------------------------------------------------ prompts that do not fit


def splits(tiny_tokenizer) -> dict[str, pd.DataFrame]:
    long = [{"role": "user", "content": "tell me about bread " * 60}]
    short = [[{"role": "user", "content": f"question {i}?"}] for i in range(3)]
    return {"helpful": pd.DataFrame({"prompt": [long, *short]})}


def test_prompts_longer_than_the_context_are_skipped_and_counted(tiny_tokenizer):
    eval_splits = splits(tiny_tokenizer)
    long = eval_splits["helpful"]["prompt"].iloc[0]
    n_long = len(encode_prompt(tiny_tokenizer, long))
    budget = ContextBudget(n_long + 63, 64, lambda m: len(encode_prompt(tiny_tokenizer, m)))
    prompts = evaluation_prompts(eval_splits, 3, budget=budget)
    assert len(prompts) == 3 and long not in list(prompts["prompt"])
    assert prompts.attrs["too_long"] == {"helpful": 1}
    roomy = ContextBudget(n_long + 64, 64, budget.tokens)
    assert evaluation_prompts(eval_splits, 3, budget=roomy).attrs["too_long"] == {}
    external = PromptSet("extra", pd.DataFrame({"prompt_id": ["a", "b"], "prompt": [long, [{"role": "user", "content": "hi"}]],
                                                "category": [None, None], "source": ["x", "x"]}))
    mixed = evaluation_prompts({}, 0, [external], budget=budget)
    assert list(mixed["prompt_id"]) == ["b"] and mixed.attrs["too_long"] == {"extra": 1}
    only_long = PromptSet("extra", external.prompts.head(1))
    with pytest.raises(DataError, match=r"no evaluation prompt fits the policy's \d+ positions minus "
                                        r"evaluation.generation.max_new_tokens 64"):
        evaluation_prompts({}, 0, [only_long], budget=budget)
    with pytest.raises(DataError, match=r"only 2 distinct prompts that fit the policy's .* \(1 longer ones skipped\)"):
        evaluation_prompts({"helpful": eval_splits["helpful"].head(3)}, 3, budget=budget)


def test_a_prompt_longer_than_the_context_fails_the_run_when_asked_naming_it(tiny_tokenizer):
    eval_splits = splits(tiny_tokenizer)
    long = eval_splits["helpful"]["prompt"].iloc[0]
    n_long = len(encode_prompt(tiny_tokenizer, long))
    budget = ContextBudget(1024, 1024 - n_long + 1, lambda m: len(encode_prompt(tiny_tokenizer, m)), "fail")
    with pytest.raises(DataError, match=rf"evaluation prompt \w+ \(origin 'helpful'\) has {n_long} tokens: .* needs "
                                        r"1,025 positions, but the policy has 1,024"):
        evaluation_prompts(eval_splits, 3, budget=budget)


def test_generation_refuses_a_prompt_that_does_not_fit_the_model(tiny_llama, tiny_tokenizer):
    messages = [{"role": "user", "content": "tell me about bread " * 60}]
    n = len(encode_prompt(tiny_tokenizer, messages))
    prompts = pd.DataFrame({"prompt_id": ["long"], "prompt": [messages]})
    points = pd.DataFrame({"point_id": ["sft"]})
    settings = GenerationSettings(max_new_tokens=tiny_llama.config.max_position_embeddings - n + 1)
    with pytest.raises(DataError, match=rf"prompt 'long' has {n} tokens: with max_new_tokens .* needs 1,025 positions"):
        generate_grid(tiny_llama, tiny_tokenizer, None, prompts, points, settings, progress=False)


def test_summary_counts_the_skipped_prompts():
    check = {"positions": 1024, "max_new_tokens": 64, "on_long_prompt": "drop", "too_long": {"helpful": 2, "extra": 1}}
    assert context_lines(check)[0] == ("**3 evaluation prompt(s) were skipped** as longer than the policy's context "
                                       "allows (1,024 positions, 64 of them for the reply): extra 1, helpful 2 "
                                       "(evaluation.on_long_prompt: drop; never truncated).")
    assert "Every evaluation prompt fits" in context_lines({**check, "too_long": {}})[0]


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_a_failed_frontiers_rerun_keeps_the_tables_and_is_redone_next_time(smoke_run, tmp_path):
    """After a good run: an oversized bootstrap fails the plan naming the key; a frontiers job that fails (a corrupt
    score file) keeps tables/ byte for byte, its retry ends at once quoting the first error, and the next plan redoes
    frontiers rather than calling the kept tables up to date."""
    reference, args = smoke_run
    workdir = tmp_path / "copy"
    shutil.copytree(reference, workdir, symlinks=True)
    run = workdir / "results/smoke"
    tables = digests(run / "tables")

    # 10^10: on the parent commit the job then fails at once (149 GiB is more than a machine has), not filling memory
    overlay = tmp_path / "oversized.yaml"
    overlay.write_text("evaluation: {bootstrap: 10000000000}\n")
    at = args.index("--config")
    oversized = snakemake(*args[:at], str(overlay), *args[at:], workdir=workdir)
    assert oversized.returncode != 0
    assert ("config key 'evaluation.bootstrap': 10000000000 is greater than the maximum of 100000"
            in oversized.stdout + oversized.stderr)
    assert digests(run / "tables") == tables

    scores = run / "seed_1/evaluation/mva/scores_helpful.parquet"
    scores.write_bytes(scores.read_bytes()[: scores.stat().st_size // 2])  # truncated; newer: frontiers reruns
    started = time.monotonic()
    failed = snakemake(*args, "--until", "frontiers", workdir=workdir)
    assert failed.returncode != 0
    assert digests(run / "tables") == tables, "a failed rerun changed or removed finished tables"
    log = (run / "logs/frontiers/main.log").read_text()
    assert log.startswith("attempt 2 of frontiers not run: attempt 1 failed with an error that a retry cannot fix")
    assert f"CorruptArtifactError: artifact {scores.relative_to(workdir)} is corrupt" in log
    print(f"failed frontiers rerun (two attempts) took {time.monotonic() - started:.0f} s:\n{failed.stderr[-6000:]}")
    planned = snakemake(*args, "-n", workdir=workdir)
    assert "Nothing to be done" not in planned.stdout + planned.stderr and "rule frontiers:" in planned.stdout
