"""Snakemake entry point: load, clean and split one value's preference data."""
from mva_core.workflow_io import logged_job

with logged_job(snakemake) as log:
    from mva_core.artifacts import current_provenance
    from mva_core.contracts import DATA_SUMMARY, PAIRS, write_table
    from mva_core.data import SourceSpec, prepare_value_data
    from mva_core.provenance import source_hashes

    value = snakemake.wildcards.value
    prepared = prepare_value_data(
        value,
        [SourceSpec(**source) for source in snakemake.params.sources],
        fractions=snakemake.params.split,
        max_pairs=snakemake.params.max_pairs,
        roots=snakemake.params.roots,
        on_bad_row=snakemake.params.on_bad_row,
        salt=snakemake.params.salt,
    )
    current_provenance()["data_sources"] = source_hashes([s["path"] for s in snakemake.params.sources],
                                                         snakemake.params.roots)
    for path in snakemake.output.splits:
        split = path.rsplit("/", 1)[-1].removesuffix(".parquet")
        write_table(prepared.splits[split], path, PAIRS)
        log.info("%s/%s: %d pairs", value, split, len(prepared.splits[split]))
    write_table(prepared.summary, snakemake.output.summary, DATA_SUMMARY)
