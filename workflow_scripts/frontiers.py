"""Snakemake entry point: mean rewards, frontiers + hypervolumes, selections and win rates (Parquet + Markdown)."""
import pandas as pd

from mva_core.artifacts import write_parquet, write_text
from mva_core.frontier import to_markdown
from mva_core.reporting import build_tables, hypervolume_by_seed, pool_seeds
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    scores = pd.concat([pd.read_parquet(p) for p in snakemake.input.scores], ignore_index=True)
    points = pd.concat([pd.read_parquet(p) for p in snakemake.input.points], ignore_index=True)
    params = snakemake.params
    tables = build_tables(pool_seeds(scores), points, params.evaluation, params.values, params.seed)
    out = snakemake.output
    write_parquet(hypervolume_by_seed(scores, points, params.evaluation, params.seed), out.seed_hypervolumes)
    write_parquet(tables.means, out.means)
    write_parquet(tables.frontiers, out.frontiers)
    write_text(to_markdown(tables.frontiers) + "\n", out.markdown)
    write_parquet(tables.selections, out.selections)
    write_parquet(tables.win_rates, out.win_rates)
    write_text((to_markdown(tables.win_rates) if len(tables.win_rates) else "(one method: no win rates)") + "\n",
               out.win_markdown)
