"""Every interval README prints (``x [lo, hi]``) is in a committed table under docs/, at the printed precision.

A README number may flip the sign of its table row ("6.0 [0.9, 11.7] fewer words" for −6.0 [−11.7, −0.9]).
Candidates are three consecutive numbers of a row of a Markdown table under docs/, or an ``x [lo, hi]`` written in
such a file (summary.md).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

NUMBER = r"[+\-−]?\d+(?:\.\d+)?"
INTERVAL = re.compile(rf"({NUMBER})\*{{0,2}}(?:\s+[A-Za-z]+)?\s*\[({NUMBER}),\s*({NUMBER})\]")


def _float(text: str) -> float:
    return float(text.replace("−", "-"))


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def readme_intervals(text: str) -> list[tuple[str, str, str]]:
    """The ``(x, lo, hi)`` texts of README outside fenced code blocks."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return INTERVAL.findall(prose)


def _numbers(cell: str) -> float | None:
    try:
        return float(cell.strip().replace("−", "-"))
    except ValueError:
        return None


def docs_triples(docs: Path) -> list[tuple[float, float, float]]:
    triples = []
    for path in sorted(docs.rglob("*.md")):
        for line in path.read_text(encoding="utf-8").splitlines():
            triples += [tuple(_float(x) for x in match) for match in INTERVAL.findall(line)]
            if line.startswith("|"):
                cells = [_numbers(c) for c in line.strip("|").split("|")]
                triples += [(a, b, c) for a, b, c in zip(cells, cells[1:], cells[2:])
                            if None not in (a, b, c)]
    return triples


def printed_as(printed: tuple[str, str, str], triple: tuple[float, float, float]) -> bool:
    """Whether ``triple`` rounds to the printed texts (as it is, or with every sign flipped)."""
    def close(text: str, value: float) -> bool:
        step = 10.0 ** -_decimals(text)
        return abs(_float(text) - value) <= step / 2 + 1e-4 * abs(value) + 1e-12

    x, lo, hi = printed
    a, b, c = triple
    return (close(x, a) and close(lo, b) and close(hi, c)) or (close(x, -a) and close(lo, -c) and close(hi, -b))


def test_every_readme_interval_is_in_a_committed_docs_table():
    intervals = readme_intervals((REPO / "README.md").read_text(encoding="utf-8"))
    assert intervals, "README prints no interval: the test would check nothing"
    triples = docs_triples(REPO / "docs")
    missing = [f"{x} [{lo}, {hi}]" for x, lo, hi in intervals
               if not any(printed_as((x, lo, hi), t) for t in triples)]
    assert not missing, f"README intervals found in no table under docs/: {missing}"


@pytest.mark.parametrize("printed, triple, found", [
    (("-6.0", "-11.7", "-0.9"), (-6.02, -11.68, -0.912), True),
    (("6.0", "0.9", "11.7"), (-6.02, -11.68, -0.912), True),   # the sign flipped in prose
    (("6.0", "0.9", "11.7"), (-6.02, -11.68, -0.812), False),  # one bound differs at the printed precision
    (("+0.18", "+0.07", "+0.28"), (0.1804, 0.0712, 0.2795), True),
])
def test_intervals_match_at_the_printed_precision(printed, triple, found):
    assert printed_as(printed, triple) is found


def test_readme_intervals_are_parsed_with_units_and_bold():
    text = "soup **−19.6 words [−25.6, −13.4]**, λ = 1: **36.0 [30.3, 41.8]**\n```\nx 1.0 [0.0, 2.0]\n```"
    assert readme_intervals(text) == [("−19.6", "−25.6", "−13.4"), ("36.0", "30.3", "41.8")]
