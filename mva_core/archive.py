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
"""
from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from mva_core.artifacts import write_parquet, write_text
from mva_core.config import validate_config
from mva_core.contracts import EVALUATION_PROMPTS, POINTS, SCORES, read_table
from mva_core.markdown import to_markdown
from mva_core.methods import MethodPlan, value_order
from mva_core.reporting import (
    MARKDOWN_TABLES,
    TABLE_FILES,
    build_tables,
    read_accuracies,
    read_decorrelation,
    total_wall_seconds,
)
from mva_core.summary import summary_markdown

PROMPT_COLUMNS = ["prompt_id", "origin", "category"]
"""What the archive keeps of the evaluation prompts: no text."""


class ArchiveError(ValueError):
    """A run or archive that cannot be read; the message names the file."""


def _config(folder: Path) -> dict:
    path = folder / "config.yaml"
    if not path.is_file():
        raise ArchiveError(f"{path} is missing: a run records it (rule run_config) and an archive keeps it")
    return validate_config(yaml.safe_load(path.read_text()))


def complete_seeds(run: Path, methods: Sequence[str], values: Sequence[str]) -> list[str]:
    """Seeds (as in ``seed_<s>``) whose score files exist for every method and value."""
    seeds = sorted((p.name.removeprefix("seed_") for p in run.glob("seed_*") if p.is_dir()), key=_seed_key)
    return [s for s in seeds if all((run / f"seed_{s}/evaluation/{m}/scores_{v}.parquet").is_file()
                                    for m in methods for v in values)]


def _seed_key(seed: str) -> tuple[int, str]:
    return (int(seed), seed) if seed.lstrip("-").isdigit() else (0, seed)


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def save(run: Path, archive: Path) -> list[str]:
    """Copy the finished part of ``run`` into ``archive`` (see the module docstring); return the seeds copied."""
    config = _config(run)
    methods, values = list(config["methods"]), value_order(config)
    seeds = complete_seeds(run, methods, values)
    if not seeds:
        raise ArchiveError(f"{run}: no training seed has scores for every method ({', '.join(methods)}) and value "
                           f"({', '.join(values)}) yet: nothing to archive")
    _copy(run / "config.yaml", archive / "config.yaml")
    prompts = read_table(run / "evaluation" / "prompts.parquet", EVALUATION_PROMPTS)
    write_parquet(prompts[[c for c in PROMPT_COLUMNS if c in prompts.columns]], archive / "evaluation/prompts.parquet")
    for method in methods:
        _copy(run / f"evaluation/{method}/points.parquet", archive / f"evaluation/{method}/points.parquet")
    for seed in seeds:
        for path in [*run.glob(f"seed_{seed}/evaluation/*/scores_*.parquet"), *run.glob(f"seed_{seed}/decorrelation/*.parquet")]:
            _copy(path, archive / path.relative_to(run))
    for path in [*run.glob("reward_models/accuracy_*.json"), *run.glob("benchmarks/**/*.tsv")]:
        _copy(path, archive / path.relative_to(run))
    return seeds


def job_times_markdown(archive: Path) -> str:
    rows = [{"job": "/".join(p.relative_to(archive / "benchmarks").with_suffix("").parts),
             "seconds": round(float(pd.read_csv(p, sep="\t")["s"].sum()), 1)}
            for p in sorted((archive / "benchmarks").rglob("*.tsv"))]
    if not rows:
        return "(no benchmark TSVs)\n"
    table = pd.DataFrame(rows)
    total = pd.DataFrame([{"job": "**total**", "seconds": round(table["seconds"].sum(), 1)}])
    return ("Wall-clock seconds per job (the run's Snakemake `benchmark:` TSVs; `python benchmarks/run_time.py` on "
            "the run gives shares and speeds).\n\n" + to_markdown(pd.concat([table, total], ignore_index=True)))


def rebuild_tables(archive: Path) -> list[str]:
    """Every evaluation table (``tables/<name>.parquet`` and ``.md``), summary.md and job_times.md of ``archive``,
    from its scores alone; returns the seeds they cover."""
    config = _config(archive)
    plan, values, methods = MethodPlan.of(config), value_order(config), list(config["methods"])
    seeds = complete_seeds(archive, methods, values)
    if not seeds:
        raise ArchiveError(f"{archive}: no seed with every method's scores: not an archive written by mva-archive save")
    scores = pd.concat([read_table(p, SCORES) for s in seeds for p in sorted(archive.glob(f"seed_{s}/evaluation/*/scores_*.parquet"))],
                       ignore_index=True)
    points = pd.concat([read_table(archive / f"evaluation/{m}/points.parquet", POINTS) for m in methods], ignore_index=True)
    prompts = pd.read_parquet(archive / "evaluation/prompts.parquet")
    tables = build_tables(scores, points, prompts, config["evaluation"], values, config["seed"], plan.baselines,
                          plan.interference_references, plan.planted_methods)
    for name, stem in TABLE_FILES.items():
        write_parquet(getattr(tables, name), archive / f"tables/{stem}.parquet")
    for name in MARKDOWN_TABLES:
        table = getattr(tables, name)
        write_text((to_markdown(table) if len(table) else "(one method: nothing to compare)") + "\n",
                   archive / f"tables/{TABLE_FILES[name]}.md")
    decorrelation = read_decorrelation([p for s in seeds for p in sorted(archive.glob(f"seed_{s}/decorrelation/*.parquet"))],
                                       plan.decorrelation_sets)
    accuracies = read_accuracies(sorted(archive.glob("reward_models/accuracy_*.json")))
    benchmarks = sorted((archive / "benchmarks").rglob("*.tsv"))
    configured = [str(s) for s in (config["seeds"] or [config["seed"]])]
    status = (f"Archived training seeds: {', '.join(seeds)} ({len(seeds)} of the {len(configured)} the config names)"
              + ("; interim: the run is not finished, so these tables are not its findings.\n\n"
                 if len(seeds) < len(configured) else ".\n\n"))
    write_text(status + summary_markdown(config["run_name"], tables, accuracies, decorrelation,
                                total_wall_seconds(benchmarks) if benchmarks else None,
                                config["evaluation"]["win_rate_target"], None), archive / "summary.md")
    write_text(job_times_markdown(archive), archive / "job_times.md")
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
    except (ArchiveError, FileNotFoundError) as err:
        print(f"mva-archive: {err}", file=sys.stderr)
        return 2
    print(f"{args.archive}/tables, summary.md, job_times.md: rebuilt from seeds {', '.join(seeds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
