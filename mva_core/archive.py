"""mva-archive: a run's per-prompt scores and its tables, kept in git so the analysis rebuilds without ``results/``.

``results/`` is not in git and a machine may not be kept, so a long run commits what it has finished:

    mva-archive save results/decorrelation docs/decorrelation_run   # finished seeds' scores, then the tables
    mva-archive tables docs/decorrelation_run                       # the tables again, from the archive alone

``save`` copies, for every training seed whose scores are complete (every method × value), the per-prompt scores
and the dependence tables, plus the run's recorded config, λ points, reward-model accuracies, benchmark TSVs and the
evaluation prompts' ids and origins (never their text: dataset text stays out of the repository; the selection /
test split needs only ids and origins). ``tables`` then computes every evaluation table, summary.md and job_times.md
from the archive with the run's own code path (``reporting.build_tables``, ``summary.summary_markdown``), so the
tables of a partly finished run cover its finished seeds and say how many (``design.n_seeds``).

The archive is text: every table is CSV (floats written to round-trip exactly, identifier columns read back as
strings), so git diffs it and no binary data file enters the repository; the run's Parquet files stay in results/.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mva_core.artifacts import atomic_file, write_text
from mva_core.config_errors import ConfigError
from mva_core.contracts import EVALUATION_PROMPTS, POINTS, SCORES, read_table, validate_table
from mva_core.markdown import to_markdown
from mva_core.methods import MethodPlan, value_order
from mva_core.reporting import (
    MARKDOWN_TABLES,
    TABLE_FILES,
    benchmark_seconds,
    build_tables,
    read_accuracies,
    read_decorrelation,
)
from mva_core.run_config import read_run_config
from mva_core.summary import summary_markdown

PROMPT_COLUMNS = ["prompt_id", "origin", "category"]
"""What the archive keeps of the evaluation prompts: no text."""
TEXT_COLUMNS = ("point_id", "prompt_id", "method", "value", "kind", "adapter", "rm_dtype", "origin", "category",
                "module", "value_a", "value_b")
"""Columns read back from an archive's CSV as strings (an id such as ``1234`` or ``0_1`` must not become a number)."""


def write_csv(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        table.to_csv(tmp, index=False)


def read_csv(path: Path) -> pd.DataFrame:
    """An archive table, its identifier columns as strings."""
    header = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS if c in header})


class ArchiveError(ValueError):
    """A run or archive that cannot be read; the message names the file."""


def _config(folder: Path) -> dict:
    """The config a run recorded (rule run_config), which its archive keeps."""
    return read_run_config(folder).config


def seed_files(config: dict, suffix: str) -> list[str]:
    """The files (relative to ``seed_<s>/``) of one finished seed: every method's scores per value, every vector set's
    dependence table; ``suffix`` ``.parquet`` in a run, ``.csv`` in an archive."""
    plan, values = MethodPlan.of(config), value_order(config)
    return [*(f"evaluation/{m}/scores_{v}{suffix}" for m in config["methods"] for v in values),
            *(f"decorrelation/{s}{suffix}" for s in plan.vector_sets)]


def complete_seeds(folder: Path, config: dict, suffix: str = ".parquet") -> list[str]:
    """The config's seeds whose files (``seed_files``) ``folder`` holds: a run (``.parquet``) or an archive
    (``.csv``)."""
    wanted = seed_files(config, suffix)
    return [s for s in configured_seeds(config) if all((folder / f"seed_{s}" / f).is_file() for f in wanted)]


def configured_seeds(config: dict) -> list[str]:
    return [str(s) for s in (config["seeds"] or [config["seed"]])]


UNCOMPARED_KEYS = ("seeds", "compute")
"""Config keys that may differ between the runs whose seeds one archive holds (the seeds themselves; where and on
what hardware the jobs ran)."""


def check_same_experiment(run: Path, archive: Path, config: dict, prompt_ids: set[str]) -> None:
    """Refuse to add ``run``'s seeds to an archive of another config or other evaluation prompts."""
    if not (archive / "config.yaml").is_file():
        return
    held = _config(archive)
    differing = sorted(k for k in set(config) | set(held) if k not in UNCOMPARED_KEYS and config.get(k) != held.get(k))
    if differing:
        raise ArchiveError(f"{archive} holds seeds of another config than {run / 'config.yaml'} (keys {differing} "
                           "differ): archive this run into a new folder")
    held_ids = set(read_csv(archive / "evaluation/prompts.csv")["prompt_id"])
    if held_ids != prompt_ids:
        raise ArchiveError(f"{archive} holds seeds scored on other evaluation prompts than {run}'s "
                           f"({len(held_ids ^ prompt_ids)} prompt ids differ): archive this run into a new folder")


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target) as tmp:
        shutil.copyfile(source, tmp)


def _as_csv(source: Path, target: Path) -> None:
    write_csv(pd.read_parquet(source), target)


def save(run: Path, archive: Path, only: Sequence[str] | None = None) -> list[str]:
    """Copy the finished part of ``run`` into ``archive`` (see the module docstring); return the seeds copied.

    ``only``: just these seeds (those Snakemake has just brought up to date: a seed's files can exist and still be
    out of date after a config change, so run Snakemake before saving)."""
    config = _config(run)
    methods, values = list(config["methods"]), value_order(config)
    seeds = [s for s in complete_seeds(run, config) if only is None or s in only]
    if not seeds:
        raise ArchiveError(f"{run}: no training seed has scores for every method ({', '.join(methods)}) and value "
                           f"({', '.join(values)}) and every dependence table yet: nothing to archive")
    prompts = read_table(run / "evaluation" / "prompts.parquet", EVALUATION_PROMPTS)
    check_same_experiment(run, archive, config, set(prompts["prompt_id"]))
    _copy(run / "config.yaml", archive / "config.yaml")
    write_csv(prompts[[c for c in PROMPT_COLUMNS if c in prompts.columns]], archive / "evaluation/prompts.csv")
    for method in methods:
        _as_csv(run / f"evaluation/{method}/points.parquet", archive / f"evaluation/{method}/points.csv")
    for seed in seeds:
        for relative in seed_files(config, ".parquet"):
            _as_csv(run / f"seed_{seed}" / relative, archive / f"seed_{seed}" / relative.replace(".parquet", ".csv"))
    for path in [*run.glob("reward_models/accuracy_*.json"), *run.glob("benchmarks/**/*.tsv")]:
        _copy(path, archive / path.relative_to(run))
    return seeds


def job_times_markdown(jobs: pd.DataFrame) -> str:
    """job_times.md from ``reporting.benchmark_seconds``: seconds per job and their total."""
    if jobs.empty:
        return "(no benchmark TSVs)\n"
    table = pd.DataFrame({"job": jobs["stage"] + "/" + jobs["job"], "seconds": [round(s, 1) for s in jobs["s"]]})
    total = pd.DataFrame([{"job": "**total**", "seconds": round(table["seconds"].sum(), 1)}])
    return ("Wall-clock seconds per job (the run's Snakemake `benchmark:` TSVs; `python benchmarks/run_time.py` on "
            "the run gives shares and speeds).\n\n" + to_markdown(pd.concat([table, total], ignore_index=True)))


def rebuild_tables(archive: Path) -> list[str]:
    """Every evaluation table (``tables/<name>.csv``, some also ``.md``), summary.md and job_times.md of ``archive``,
    from its scores alone; returns the seeds they cover."""
    config = _config(archive)
    plan, values, methods = MethodPlan.of(config), value_order(config), list(config["methods"])
    seeds = complete_seeds(archive, config, ".csv")
    if not seeds:
        raise ArchiveError(f"{archive}: no seed with every method's scores: not an archive written by mva-archive save")
    scores = pd.concat([validate_table(read_csv(archive / f"seed_{s}/evaluation/{m}/scores_{v}.csv"), SCORES)
                        for s in seeds for m in methods for v in values], ignore_index=True)
    points = pd.concat([validate_table(read_csv(archive / f"evaluation/{m}/points.csv"), POINTS) for m in methods],
                       ignore_index=True)
    prompts = read_csv(archive / "evaluation/prompts.csv")
    tables = build_tables(scores, points, prompts, config["evaluation"], values, config["seed"], plan.baselines,
                          plan.interference_references, plan.planted_methods)
    for name, stem in TABLE_FILES.items():
        write_csv(getattr(tables, name), archive / f"tables/{stem}.csv")
    for name in MARKDOWN_TABLES:
        table = getattr(tables, name)
        write_text((to_markdown(table) if len(table) else "(one method: nothing to compare)") + "\n",
                   archive / f"tables/{TABLE_FILES[name]}.md")
    decorrelation = read_decorrelation([archive / f"seed_{s}/decorrelation/{v}.csv" for s in seeds for v in plan.vector_sets],
                                       plan.decorrelation_sets, read=read_csv)
    accuracies = read_accuracies(sorted(archive.glob("reward_models/accuracy_*.json")))
    jobs = benchmark_seconds(archive)
    configured = configured_seeds(config)
    status = (f"Archived training seeds: {', '.join(seeds)} ({len(seeds)} of the {len(configured)} the config names)"
              + ("; interim: the run is not finished, so these tables are not its findings.\n\n"
                 if len(seeds) < len(configured) else ".\n\n"))
    write_text(status + summary_markdown(config["run_name"], tables, accuracies, decorrelation,
                                float(jobs["s"].sum()) if len(jobs) else None,
                                config["evaluation"]["win_rate_target"], None), archive / "summary.md")
    write_text(job_times_markdown(jobs), archive / "job_times.md")
    return seeds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mva-archive", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    save_command = commands.add_parser("save", help="copy a run's finished seeds into an archive, then its tables")
    save_command.add_argument("run_dir", type=Path)
    save_command.add_argument("archive", type=Path)
    tables_command = commands.add_parser("tables", help="rebuild an archive's tables from its scores alone")
    tables_command.add_argument("archive", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "save":
            copied = save(args.run_dir, args.archive)
            print(f"{args.archive}: seeds {', '.join(copied)} of {args.run_dir} archived")
        seeds = rebuild_tables(args.archive)
    except (ArchiveError, ConfigError, FileNotFoundError) as err:
        print(f"mva-archive: {err}", file=sys.stderr)
        return 2
    print(f"{args.archive}/tables, summary.md, job_times.md: rebuilt from seeds {', '.join(seeds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
