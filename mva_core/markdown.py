"""Markdown pipe tables: the one writer of every table in ``tables/*.md``, ``summary.md`` and ``data/summary.md``."""
from __future__ import annotations

import numpy as np
import pandas as pd


def _cell(x: object, floatfmt: str) -> str:
    if isinstance(x, (float, np.floating)):
        text = format(x, floatfmt)
    elif isinstance(x, (list, tuple, np.ndarray)):
        text = ", ".join(str(i) for i in x)
    else:
        text = str(x)
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """GitHub pipe table of ``df`` (a non-default index is written as leading columns)."""
    if not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index()
    header = [str(c) for c in df.columns]
    body = [[_cell(x, floatfmt) for x in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"
