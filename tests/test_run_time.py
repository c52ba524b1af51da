"""benchmarks/run_time.py: a finished run's stage shares, generation tokens/s and seconds per DPO step."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run_time.py"


@pytest.fixture(scope="module")
def run_time():
    spec = importlib.util.spec_from_file_location("run_time", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def benchmark(run: Path, job: str, seconds: float) -> None:
    path = run / "benchmarks" / f"{job}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:00\t1.0\n")


def test_shares_tokens_per_second_and_seconds_per_step(tmp_path, run_time, capsys):
    benchmark(tmp_path, "generate/seed1/soup/part0", 30.0)
    benchmark(tmp_path, "generate/seed1/soup/part1", 10.0)  # a method's parts add up
    benchmark(tmp_path, "generate/seed1/soup_x/part0", 1000.0)  # another method, not soup's
    benchmark(tmp_path, "train_value_vector/seed1/independent/concise", 50.0)
    benchmark(tmp_path, "base_model/main", 10.0)
    generations = tmp_path / "seed_1" / "evaluation" / "soup" / "generations.parquet"
    generations.parent.mkdir(parents=True)
    pd.DataFrame({"point_id": ["a", "b", "c"], "n_response_tokens": [100, 300, 400]}).to_parquet(generations)
    vector = tmp_path / "seed_1" / "value_vectors" / "independent" / "concise"
    vector.mkdir(parents=True)
    (vector / "metadata.json").write_text(json.dumps({"global_steps": 10, "train_metrics": {"train_runtime": 20.0}}))

    assert run_time.main([str(tmp_path), "--json", str(tmp_path / "times.json")]) == 0
    times = json.loads((tmp_path / "times.json").read_text())
    shares = {row["stage"]: row["share"] for row in times["stages"]}
    assert shares == pytest.approx({"generate": 1040 / 1100, "train_value_vector": 50 / 1100, "base_model": 10 / 1100})
    (soup,) = times["generation"]
    assert (soup["answers"], soup["tokens"], soup["seconds"]) == (3, 800, 40.0)
    assert soup["tokens_per_s"] == pytest.approx(20.0)
    (dpo,) = times["dpo"]
    assert (dpo["trainer_s_per_step"], dpo["job_s_per_step"]) == pytest.approx((2.0, 5.0))
    assert "20.0 tokens/s" in capsys.readouterr().out


def test_a_folder_without_benchmarks_is_refused(tmp_path, run_time):
    with pytest.raises(SystemExit, match="no benchmark TSVs"):
        run_time.main([str(tmp_path)])


def test_rows_copied_from_an_earlier_method_are_not_counted_as_generated(tmp_path, run_time):
    benchmark(tmp_path, "generate/seed42/soup/part0", 10.0)
    generations = tmp_path / "seed_42" / "evaluation" / "soup" / "generations.parquet"
    (generations.parent / "generation_parts").mkdir(parents=True)
    pd.DataFrame({"point_id": ["0_0", "1_0", "0_1"], "n_response_tokens": [50, 60, 70]}).to_parquet(generations)
    own = pd.DataFrame({"point_id": ["0_1"], "n_response_tokens": [70]})  # 0_0 and 1_0 were copied from mva
    own.to_parquet(generations.parent / "generation_parts" / "0.parquet")
    (soup,) = run_time.generation_speed(tmp_path, run_time.job_seconds(tmp_path)).to_dict("records")
    assert (soup["answers"], soup["tokens"], soup["tokens_per_s"]) == (1, 70, 7.0)
