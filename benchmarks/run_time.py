"""Where a finished run's time goes: the share of job time per stage, generation tokens per second and seconds per
DPO step, from the run's own Snakemake benchmark TSVs, generations and value-vector metadata (nothing is rerun).

    python benchmarks/run_time.py results/decorrelation_pilot [--json FILE]

The processor and dtype are the ones the run's jobs recorded (provenance ``compute``); a run from before the
processor was recorded says so. Job seconds are wall clock, so they include waiting for the other job when Snakemake
ran two at once on the same cores.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from mva_core.artifacts import read_provenance
from mva_core.markdown import to_markdown
from mva_core.reporting import benchmark_seconds
from mva_core.shared_points import borrowed_points


def job_seconds(run: Path) -> pd.DataFrame:
    """One row per benchmarked job: stage (its rule), the job's path below the stage, and its wall-clock seconds."""
    jobs = benchmark_seconds(run)
    if jobs.empty:
        raise SystemExit(f"{run}: no benchmark TSVs under {run / 'benchmarks'}: not a run of this pipeline")
    return jobs


def stage_shares(jobs: pd.DataFrame) -> pd.DataFrame:
    table = jobs.groupby("stage")["s"].agg(jobs="count", seconds="sum").sort_values("seconds", ascending=False)
    table["share"] = table["seconds"] / table["seconds"].sum()
    return table.reset_index()


def generation_speed(run: Path, jobs: pd.DataFrame) -> pd.DataFrame:
    """Per seed and method: answers and response tokens its generate jobs made (their kept ``generation_parts``,
    which leave out the points copied from an earlier method; a run whose parts were deleted, made before they were
    kept, copied nothing, so its merged table counts), generate-job seconds (all parts), tokens and answers per s."""
    rows = []
    generate = jobs[jobs["stage"] == "generate"]
    for path in sorted(run.glob("seed_*/evaluation/*/generations.parquet")):
        seed, method = path.parts[-4].removeprefix("seed_"), path.parts[-2]
        mine = (generate["job"] == f"seed{seed}/{method}") | generate["job"].str.startswith(f"seed{seed}/{method}/")
        seconds = generate.loc[mine, "s"].sum()  # one job, or its evaluation.generation.jobs parts
        parts = sorted(path.parent.glob("generation_parts/*.parquet")) or [path]
        table = pd.concat([pd.read_parquet(p, columns=["n_response_tokens"]) for p in parts], ignore_index=True)
        tokens = int(table["n_response_tokens"].sum())
        rows.append({"seed": seed, "method": method, "answers": len(table), "tokens": tokens, "seconds": seconds,
                     "tokens_per_s": tokens / seconds if seconds else float("nan"),
                     "answers_per_s": len(table) / seconds if seconds else float("nan")})
    return pd.DataFrame(rows)


def dpo_speed(run: Path, jobs: pd.DataFrame) -> pd.DataFrame:
    """Per trained vector: optimizer steps, the trainer's seconds per step and the whole job's seconds per step
    (model loading, reference log-probs and saving included)."""
    rows = []
    train = jobs[jobs["stage"] == "train_value_vector"]
    for path in sorted(run.glob("seed_*/value_vectors/*/*/metadata.json")):
        meta = json.loads(path.read_text())
        steps = meta.get("global_steps")
        if not steps:
            continue
        seed, method, value = path.parts[-5].removeprefix("seed_"), path.parts[-3], path.parts[-2]
        job = train.loc[train["job"] == f"seed{seed}/{method}/{value}", "s"].sum()
        rows.append({"seed": seed, "vector": f"{method}/{value}", "steps": steps,
                     "trainer_s_per_step": meta["train_metrics"]["train_runtime"] / steps, "job_s_per_step": job / steps})
    return pd.DataFrame(rows)


def compute_record(run: Path) -> dict:
    generations = sorted(run.glob("seed_*/evaluation/*/generations.parquet"))
    record = (read_provenance(generations[0]) or {}).get("compute", {}) if generations else {}
    return {"processor": record.get("processor", "not recorded by this run"), "dtype": record.get("dtype", "unknown"),
            "device": record.get("device", "unknown")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", type=Path, help="also write every table here")
    args = parser.parse_args(argv)
    jobs = job_seconds(args.run_dir)
    shares, generation, dpo = stage_shares(jobs), generation_speed(args.run_dir, jobs), dpo_speed(args.run_dir, jobs)
    compute = compute_record(args.run_dir)
    print(f"Run {args.run_dir}: {len(jobs)} jobs, {jobs['s'].sum() / 3600:.2f} job hours; "
          f"{compute['device']} {compute['processor']}, {compute['dtype']}.\n")
    print(to_markdown(shares.round({"seconds": 1, "share": 3})))
    if len(generation):
        total_tokens, total_s = generation["tokens"].sum(), generation["seconds"].sum()
        print(f"\nGeneration: {generation['answers'].sum()} answers, {total_tokens} response tokens in {total_s:.0f} s "
              f"of generate jobs: {total_tokens / total_s:.1f} tokens/s, {generation['answers'].sum() / total_s:.2f} "
              f"answers/s (per job: {generation['tokens_per_s'].min():.1f} to {generation['tokens_per_s'].max():.1f} "
              "tokens/s).")
    if len(dpo):
        print(f"DPO: {len(dpo)} vectors, {dpo['steps'].median():.0f} steps each; trainer "
              f"{dpo['trainer_s_per_step'].median():.2f} s/step, whole job {dpo['job_s_per_step'].median():.2f} s/step "
              "(medians).")
    if args.json:
        args.json.write_text(json.dumps({"compute": compute, "stages": shares.to_dict("records"),
                                         "generation": generation.to_dict("records"),
                                         "dpo": dpo.to_dict("records")}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
