"""Snakemake entry point: held-out selection, point means, frontiers, paired comparisons and win rates."""
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    import pandas as pd

    from mva_core.artifacts import write_parquet, write_text
    from mva_core.contracts import EVALUATION_PROMPTS, POINTS, SCORES, read_table
    from mva_core.markdown import to_markdown
    from mva_core.reporting import build_tables

    inp, params, out = snakemake.input, snakemake.params, snakemake.output
    scores = pd.concat([read_table(p, SCORES) for p in inp.scores], ignore_index=True)
    points = pd.concat([read_table(p, POINTS) for p in inp.points], ignore_index=True)
    prompts = read_table(inp.prompts, EVALUATION_PROMPTS)
    try:
        tables = build_tables(scores, points, prompts, params.evaluation, params.values, params.seed, params.baselines,
                              params.references, params.planted)
    except MemoryError as err:
        raise MemoryError(f"{err or 'out of memory'} in the bootstrap: config key 'evaluation.bootstrap' asks for "
                          f"{params.evaluation['bootstrap']:,} resamples of up to {len(prompts):,} prompts; lower "
                          "it (or give the job more memory)") from err
    for name in params.tables:
        write_parquet(getattr(tables, name), out[name])
    for name in params.markdown:
        table = getattr(tables, name)
        write_text((to_markdown(table) if len(table) else "(one method: nothing to compare)") + "\n", out[f"{name}_md"])
