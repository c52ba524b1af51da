"""Snakemake entry point: a method's generation parts (evaluation.generation.jobs) as one generations table."""
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    from mva_core.artifacts import current_provenance, read_provenance
    from mva_core.contracts import EVALUATION_PROMPTS, GENERATIONS, POINTS, read_table, write_table
    from mva_core.generation import merge_parts
    from mva_core.shared_points import copied_rows

    parts = [read_table(path, GENERATIONS) for path in snakemake.input.parts]
    owner_names = sorted(set(snakemake.params.borrowed.values()))  # the order of input.borrowed (borrowed_generations)
    owners = {owner: read_table(path, GENERATIONS) for owner, path in zip(owner_names, snakemake.input.borrowed)}
    copied = copied_rows(owners, snakemake.params.borrowed, snakemake.wildcards.method)
    parts = [part for part in [*parts, copied] if len(part)]  # a part empty when all its points are copied
    merged = merge_parts(parts, read_table(snakemake.input.prompts, EVALUATION_PROMPTS),
                         read_table(snakemake.input.points, POINTS), snakemake.params.samples_per_prompt)
    # the table's replies were computed where the parts ran (a GPU node), not on this host
    current_provenance()["compute"] = (read_provenance(snakemake.input.parts[0]) or {}).get(
        "compute", current_provenance()["compute"])
    write_table(merged, snakemake.output[0], GENERATIONS)
    print(f"merged {len(parts)} part(s): {len(merged):,} generations")
