"""Snakemake entry point: one table of rows read, dropped (by reason) and kept (by split) per value and source."""
import pandas as pd

from mva_core.artifacts import write_text
from mva_core.contracts import DATA_SUMMARY, read_table, write_table
from mva_core.markdown import to_markdown
from mva_core.workflow_io import logged_job

with logged_job(snakemake):
    summary = pd.concat([read_table(path, DATA_SUMMARY) for path in snakemake.input], ignore_index=True)
    write_table(summary, snakemake.output.table, DATA_SUMMARY)
    write_text("# Data summary\n\n" + to_markdown(summary) + "\n", snakemake.output.markdown)
