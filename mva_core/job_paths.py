"""Where a job keeps its log, benchmark, scratch checkpoints and tracking files: ``<run>/<kind>/<rule>/<part>/.../<part>``.

One directory level per wildcard, so two jobs' paths differ whenever their wildcards do, whatever the names: value,
method and chain names match ``^[A-Za-z][A-Za-z0-9_]*$`` (config/config.schema.yaml), seeds and weighting indices
are integers, so no wildcard value holds a ``/``. Values ``harmless`` and ``dw_harmless`` with methods ``mva`` and
``mva_dw`` give ``score/seed1/mva_dw/harmless`` and ``score/seed1/mva/dw_harmless`` (joined with ``_`` both were
``seed1_mva_dw_harmless``). All jobs of a rule sit at the same depth, so no job's directory lies inside another's
(a job deletes its checkpoint directory when it finishes). The one wildcard that does hold ``/``, a data file's
path (rule ``fetch_data``), is its rule's only part, so its paths stay distinct too.
"""
from __future__ import annotations

SUFFIXES = {"logs": ".log", "benchmarks": ".tsv", "checkpoints": "", "tracking": ""}


def job_path(run: str, kind: str, rule: str, *parts: str) -> str:
    """``<run>/<kind>/<rule>/<parts...>`` (``main`` for a rule with one job) plus the kind's suffix.

    ``kind`` is one of ``SUFFIXES``; ``rule`` and each part are one path component: a name, a wildcard pattern
    (``{value}``) or a labelled one (``seed{seed}``).
    """
    if kind not in SUFFIXES:
        raise ValueError(f"kind {kind!r} is not one of {sorted(SUFFIXES)}")
    for part in (rule, *parts):
        if part in ("", ".", "..") or "/" in part:
            raise ValueError(f"{kind} path part {part!r} of rule {rule!r} is not one path component")
    return "/".join([run, kind, rule, *(parts or ("main",))]) + SUFFIXES[kind]
