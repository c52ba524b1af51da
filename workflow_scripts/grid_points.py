"""Snakemake entry point: the λ points one method is evaluated at."""
from mva_core.artifacts import write_parquet
from mva_core.grid import GridSettings, method_points
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    params = snakemake.params
    grid = dict(params.grid)
    grid["lambdas"] = tuple(grid["lambdas"])
    grid["points"] = tuple(tuple(p) for p in grid["points"])
    points = method_points(params.method, GridSettings(**grid), params.values, params.weightings, seed=params.seed)
    write_parquet(points.assign(method=snakemake.wildcards.method), snakemake.output[0])
