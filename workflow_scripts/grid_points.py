"""Snakemake entry point: the λ points one method is evaluated at."""
from mva_core.contracts import POINTS, write_table
from mva_core.grid import GridSettings
from mva_core.methods import method_from_section
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    params = snakemake.params
    method = method_from_section(snakemake.wildcards.method, params.method, params.values, params.weightings)
    points = method.points(GridSettings.of(params.grid), seed=params.seed)
    write_table(points.assign(method=snakemake.wildcards.method), snakemake.output[0], POINTS)
