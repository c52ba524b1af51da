"""Snakemake entry point: the run's figures (PNG + PDF) and summary.md."""
import glob
from pathlib import Path

from mva_core.workflow_io import logged_job

with logged_job(snakemake) as log:
    import pandas as pd

    from mva_core.artifacts import current_provenance, read_provenance, write_parquet, write_text
    from mva_core.contracts import POINTS, read_table
    from mva_core.provenance import provenance_markdown
    from mva_core.reporting import (
        EvaluationTables,
        read_accuracies,
        read_decorrelation,
        sensitivity_table,
        total_wall_seconds,
        write_figures,
    )
    from mva_core.summary import summary_markdown

    inp, params = snakemake.input, snakemake.params
    tables = EvaluationTables(**{name: pd.read_parquet(inp[name]) for name in snakemake.params.tables})
    points = pd.concat([read_table(p, POINTS) for p in inp.points], ignore_index=True)
    logs = {label: pd.read_parquet(f"{p}/training_log.parquet") for label, p in zip(params.log_labels, inp.training_logs)}
    decorrelation = read_decorrelation(inp.decorrelation, params.decorrelation_sets)
    sensitivity = sensitivity_table(params.method_settings, tables.frontiers, decorrelation)
    write_parquet(sensitivity, snakemake.output.sensitivity)
    figure_dir, run_dir = Path(snakemake.output.pngs[0]).parent, Path(snakemake.output.summary).parent
    written = write_figures(tables, points, logs, figure_dir, params.values, params.heatmap_methods,
                            sensitivity if params.sensitivity else None, params.interference)
    log.info("wrote %s", [str(p) for p in written])
    benchmarks = glob.glob(f"{run_dir}/benchmarks/**/*.tsv", recursive=True)
    text = summary_markdown(params.run_name, tables, read_accuracies(inp.accuracy), decorrelation,
                            total_wall_seconds(benchmarks) if benchmarks else None, params.target,
                            (read_provenance(inp.prompts) or {}).get("context_check"))
    text += "\n" + provenance_markdown(current_provenance(), [read_provenance(p) for p in [*inp.data_summaries, inp.prompts]])
    write_text(text, snakemake.output.summary)
