"""The one Markdown table writer."""
import pandas as pd

from mva_core.markdown import to_markdown


def test_to_markdown_pipe_table():
    df = pd.DataFrame({"method": ["a|b", "c"], "hv": [1.23456, 2.0], "ids": [["p1", "p2"], []]})
    lines = to_markdown(df).splitlines()
    assert lines[0] == "| method | hv | ids |"
    assert lines[1] == "|---|---|---|"
    assert lines[2] == "| a\\|b | 1.235 | p1, p2 |"
    assert len(lines) == 4


def test_to_markdown_writes_a_named_index_and_an_empty_table():
    df = pd.DataFrame({"x": [0.5]}, index=pd.Index(["r\n1"], name="row"))
    assert to_markdown(df).splitlines() == ["| row | x |", "|---|---|", "| r 1 | 0.5 |"]
    assert to_markdown(pd.DataFrame(columns=["a", "b"])) == "| a | b |\n|---|---|\n"
