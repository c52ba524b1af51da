"""The per-prompt quantity behind each efficacy and interference row of a finished run, for sizing the next run.

Every such row is the mean of a paired difference ``y[seed, prompt]`` (e.g. an interference row: R_u(λ, λ) −
R_u(λ, 0), or that contrast of a method minus a baseline's). The rows are built by ``mva_core.effects`` itself,
with an estimator that keeps each row's ``y`` instead of judging it, so the planner sees exactly the quantity the
tables report. Rows are named by a spec, ``<kind>:key=value,...``:

- ``efficacy:method=mva,value=concise,lambda=1``: v's own reward at λ on its line minus SFT's;
- ``interference:method=mva,u=concise,v=positive,lambda=1``: how adding v's vector changes u's reward;
- ``interference:method=mva,baseline=soup,u=concise,v=positive,lambda=1``: that, minus the baseline's;
- the same with ``matched=yes``: against the baseline at matched efficacy of v (test prompts only).

``lambda`` may be left out (1). Each row's ``y`` covers the prompts its table row is reported on: every evaluation
prompt for efficacy and plain interference rows, the test prompts for matched-efficacy rows (their λ is chosen on the
selection prompts).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mva_core.contracts import LAMBDA_PREFIX, lam_columns
from mva_core.effects import EffectEstimator, efficacy_table, interference_table
from mva_core.rewards import SeededRewards

KINDS = ("efficacy", "interference")
_DIFFERENCE = re.compile(r"^(?P<method>.+?) − (?P<baseline>.+?)(?P<matched> @ λ_.+ \(matched efficacy\))?$")


class RowError(ValueError):
    """A row spec that names no row of the run; the message lists the rows there are."""


@dataclass(frozen=True)
class RowQuantity:
    """One table row: its spec, its label in the table, ``y[seed, prompt]``, and whether it is reported on the test
    prompts only (matched-efficacy rows) rather than on every evaluation prompt."""

    spec: str
    label: str
    y: np.ndarray
    test_prompts_only: bool


class _Recorder(EffectEstimator):
    """An effect estimator that appends the paired difference of every row it judges to ``recorded`` (shared by the
    estimators of one table, so that it follows the table's row order), and judges it as usual."""

    def __init__(self, reported: SeededRewards, selection: SeededRewards | None, recorded: list[np.ndarray]):
        super().__init__(reported, ci=0.95, selection=selection)
        self.recorded = recorded

    def row(self, diff: np.ndarray, *args, **kwargs) -> dict:
        self.recorded.append(np.asarray(diff, dtype=float))
        return super().row(diff, *args, **kwargs)


def spec_string(kind: str, fields: Mapping[str, str]) -> str:
    return f"{kind}:" + ",".join(f"{key}={value}" for key, value in fields.items())


def _number(text: str) -> str:
    return f"{float(text):g}"


def parse_spec(text: str) -> tuple[str, dict[str, str]]:
    """``kind:key=value,...`` as (kind, fields) with ``lambda`` normalised (default 1) and ``matched`` as yes/no."""
    kind, _, rest = text.partition(":")
    fields = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RowError(f"row {text!r}: {item!r} is not key=value")
        fields[key.strip()] = value.strip()
    try:
        fields["lambda"] = _number(fields.get("lambda", "1"))
    except ValueError:
        raise RowError(f"row {text!r}: lambda {fields['lambda']!r} is not a number") from None
    matched = fields.pop("matched", "no").lower()
    if matched in ("yes", "true", "1"):
        fields["matched"] = "yes"
    elif matched not in ("no", "false", "0"):
        raise RowError(f"row {text!r}: matched must be yes or no, got {matched!r}")
    return kind.strip(), fields


def _efficacy_specs(table: pd.DataFrame) -> list[tuple[str, bool]]:
    return [(spec_string("efficacy", {"method": r["method"], "value": r["value"], "lambda": _number(r["lambda"])}), False)
            for _, r in table.iterrows()]


def _interference_specs(table: pd.DataFrame) -> list[tuple[str, bool]]:
    specs = []
    for _, r in table.iterrows():
        fields = {"method": r.method}
        difference = _DIFFERENCE.match(r.method)
        if difference:
            fields = {"method": difference["method"], "baseline": difference["baseline"]}
        fields.update(u=r.value_u, v=r.value_v, **{"lambda": _number(r["lambda"])})
        matched = bool(difference and difference["matched"])
        if matched:
            fields["matched"] = "yes"
        specs.append((spec_string("interference", fields), matched))
    return specs


def row_quantities(rewards: SeededRewards, selection: SeededRewards, points: pd.DataFrame) -> list[RowQuantity]:
    """Every efficacy and interference row of the run (interference at every λ > 0 of the grids; each method against
    every other as baseline), with its ``y``, built as ``reporting.build_tables`` builds the tables: every evaluation
    prompt of ``rewards`` for efficacy and plain interference rows; matched-efficacy rows choose their λ on
    ``selection`` and are reported on the other (test) prompts."""
    values = [c[len(LAMBDA_PREFIX):] for c in lam_columns(points)]
    methods = list(rewards.keys.get_level_values("method").unique())
    lambdas = sorted({float(x) for x in points[lam_columns(points)].to_numpy().ravel() if x > 0})
    test = rewards.prompt_subset([p for p in rewards.prompts if p not in set(selection.prompts)])
    rows = []
    for build, specs in ((lambda e, _: efficacy_table(e, points, values), _efficacy_specs),
                         (lambda e, m: interference_table(e, points, values, methods, lambdas, m), _interference_specs)):
        recorded: list[np.ndarray] = []
        table = build(_Recorder(rewards, None, recorded), _Recorder(test, selection, recorded))
        if len(table) != len(recorded):
            raise RuntimeError(f"{len(table)} effect rows but {len(recorded)} recorded differences")
        rows += [RowQuantity(spec, str(label), y, matched)
                 for (spec, matched), label, y in zip(specs(table), table["method"], recorded)]
    return rows


def find_rows(rows: Sequence[RowQuantity], wanted: Sequence[str]) -> list[RowQuantity]:
    """The rows named by ``wanted`` specs; RowError listing every available row when one names none (or none
    is given)."""
    available = "\n".join(f"  {row.spec}" for row in rows)
    if not wanted:
        raise RowError(f"name at least one row with --row; the run has:\n{available}")
    parsed = [(parse_spec(row.spec), row) for row in rows]
    found = []
    for text in wanted:
        kind, fields = parse_spec(text)
        if kind not in KINDS:
            raise RowError(f"row {text!r}: kind {kind!r} is not one of {list(KINDS)}; the run has:\n{available}")
        match = next((row for spec, row in parsed if spec == (kind, fields)), None)
        if match is None:
            raise RowError(f"row {text!r} is not a row of this run; the run has:\n{available}")
        found.append(match)
    return found
