"""Snakemake entry point: a method's generation parts (evaluation.generation.jobs) as one generations table."""
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    from mva_core.artifacts import current_provenance, read_provenance
    from mva_core.contracts import EVALUATION_PROMPTS, GENERATIONS, POINTS, read_table, write_table
    from mva_core.generation import merge_parts

    parts = [read_table(path, GENERATIONS) for path in snakemake.input.parts]
    merged = merge_parts(parts, read_table(snakemake.input.prompts, EVALUATION_PROMPTS),
                         read_table(snakemake.input.points, POINTS), snakemake.params.samples_per_prompt)
    # the table's replies were computed where the parts ran (a GPU node), not on this host
    current_provenance()["compute"] = (read_provenance(snakemake.input.parts[0]) or {}).get(
        "compute", current_provenance()["compute"])
    write_table(merged, snakemake.output[0], GENERATIONS)
    print(f"merged {len(parts)} part(s): {len(merged):,} generations")
