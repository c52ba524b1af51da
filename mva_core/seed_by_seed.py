"""Run a long multi-seed experiment one training seed at a time, archiving each finished seed (``mva-archive``).

    python -m mva_core.seed_by_seed --configfile config/decorrelation.yaml --archive docs/decorrelation_run --cores 2

Snakemake schedules a plain run's jobs across all seeds, so a run stopped after hours may have no seed finished.
This asks Snakemake for one seed's scores and dependence tables at a time (in the config's seed order), then copies
that seed into the archive and rebuilds the archive's tables from the finished seeds, and after the last seed runs
the whole workflow (tables, figures, summary) and archives once more. Stopped at any point, it resumes: finished
jobs are skipped by Snakemake, finished seeds are already archived, and on a new machine (``results/`` gone) the
seeds the archive holds are kept, not trained again; the archive's tables then cover every seed, and the run's own
figures are not made. Arguments after ``--`` go to Snakemake.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mva_core.archive import complete_seeds, configured_seeds, rebuild_tables, save, seed_files
from mva_core.config import validate_config
from mva_core.config_files import load_config_files
from mva_core.methods import value_order
from mva_core.run_config import RUN_CONFIG


def seed_targets(config: dict, seed: str) -> list[str]:
    """The files that finish one training seed: every method's scores per value, every vector set's dependence,
    and each value's evaluator check against chance (seed-free, made once), without which no archived judgement
    counts."""
    run = f"results/{config['run_name']}"
    return [f"{run}/{RUN_CONFIG}", *(f"{run}/reward_models/accuracy_{value}.json" for value in value_order(config)),
            *(f"{run}/seed_{seed}/{f}" for f in seed_files(config, ".parquet"))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", nargs="+", required=True)
    parser.add_argument("--archive", type=Path, required=True, help="e.g. docs/decorrelation_run")
    parser.add_argument("--cores", default="2")
    parser.add_argument("snakemake_args", nargs="*", help="after --: more Snakemake arguments")
    args = parser.parse_args(argv)
    config = validate_config(load_config_files(args.configfile))
    run = Path(f"results/{config['run_name']}")
    seeds = configured_seeds(config)
    command = [sys.executable, "-m", "snakemake", "--cores", args.cores, "--configfile", *args.configfile,
               *args.snakemake_args]
    archived = complete_seeds(args.archive, config, ".csv")
    for seed in seeds:
        if seed in archived and seed not in complete_seeds(run, config):
            print(f"seed_by_seed: seed {seed} is archived in {args.archive} (its results/ are gone): kept, not rerun",
                  flush=True)
            continue
        print(f"seed_by_seed: training seed {seed} ({seeds.index(seed) + 1} of {len(seeds)})", flush=True)
        subprocess.run([*command, *seed_targets(config, seed)], check=True)
        save(run, args.archive, [seed])  # only the seed Snakemake just brought up to date
        print(f"seed_by_seed: {args.archive} holds seeds {', '.join(rebuild_tables(args.archive))}", flush=True)
    if complete_seeds(run, config) == seeds:
        subprocess.run(command, check=True)  # tables, figures, summary of the whole run
        save(run, args.archive)
    else:
        print(f"seed_by_seed: results/ lacks archived seeds, so the run's own figures are not made; the tables in "
              f"{args.archive} cover every seed", flush=True)
    rebuild_tables(args.archive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
