"""``mva-status RUN_DIR``: what a run still lacks, stage by stage, and the command that makes it.

Snakemake owns ``--report``, which on an unfinished run prints a "Missing metadata" line per output and fails.
This command asks Snakemake itself (``snakemake --summary``: every output of the run's jobs, whether it exists and
whether it would be rebuilt) with the config the run recorded (``run_config``) or the given ``--configfile``
files, and prints the outputs still to make per rule, the command that makes them, and, once there are none, the
report command. Outputs are written atomically, so a killed job's outputs count as missing, never as made.
Exit status 0: complete; 1: outputs to make; 2: bad arguments, or Snakemake could not plan the run.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mva_core.config_errors import ConfigError
from mva_core.run_config import read_run_config

SNAKEFILE = Path(__file__).resolve().parents[1] / "Snakefile"
SUMMARY_HEADER = "output_file\tdate\trule\tlog-file(s)\tstatus\tplan"
SHOWN_PER_RULE = 3
"""Outputs listed per rule (``--all``: every one)."""


@dataclass(frozen=True)
class Output:
    """One output of the run's jobs, as ``snakemake --summary`` reports it."""

    path: str
    rule: str
    status: str
    """``ok``, ``missing``, or why Snakemake would rebuild it (``params changed``, ``updated input files`` ...)."""
    pending: bool
    """The job that makes it would run."""


def parse_summary(text: str) -> list[Output]:
    """The rows of ``snakemake --summary`` output (other lines, such as log messages, are skipped)."""
    lines = text.splitlines()
    if SUMMARY_HEADER not in lines:
        raise ValueError("no summary table in Snakemake's output")
    rows = [line.split("\t") for line in lines[lines.index(SUMMARY_HEADER) + 1:]]
    return [Output(row[0], row[2], row[4], row[5] == "update pending") for row in rows if len(row) == 6]


def rule_order(snakefile: Path = SNAKEFILE) -> list[str]:
    """Rule names in the order the workflow defines them (its included files in order): the stage order."""
    names: list[str] = []
    for line in snakefile.read_text().splitlines():
        include = re.match(r'include:\s*"(.+)"', line)
        if include:
            names += re.findall(r"^(?:local)?rule (\w+):", (snakefile.parent / include[1]).read_text(), re.M)
    return names


def describe(run_dir: str, outputs: Sequence[Output], make: str, report: str, show_all: bool = False) -> str:
    """The status text: outputs to make per rule (stage order), then the command to run."""
    pending = [o for o in outputs if o.pending]
    if not pending:
        return (f"{run_dir} is complete: all {len(outputs)} outputs are up to date.\n"
                f"Build the report with:\n  {report}\n")
    order = {rule: i for i, rule in enumerate(rule_order())}
    rules = sorted({o.rule for o in pending}, key=lambda rule: (order.get(rule, len(order)), rule))
    lines = [f"{run_dir} is not complete: {len(pending)} of {len(outputs)} outputs to make, by stage (rule):"]
    for rule in rules:
        own = [o for o in pending if o.rule == rule]
        reasons = Counter(o.status for o in own)
        lines.append(f"  {rule}: " + ", ".join(f"{n} {_reason(status)}" for status, n in reasons.items()))
        shown = own if show_all else own[:SHOWN_PER_RULE]
        lines += [f"      {o.path}" for o in shown]
        if len(own) > len(shown):
            lines.append(f"      ... and {len(own) - len(shown)} more (--all lists them)")
    lines += ["Make them with:", f"  {make}",
              "then build the report (Snakemake's --report fails with 'Missing metadata' until the run is complete):",
              f"  {report}"]
    return "\n".join(lines) + "\n"


def _reason(status: str) -> str:
    return {"missing": "missing", "ok": "made again (another output of its job is missing)"}.get(status,
                                                                                                f"outdated ({status})")


def snakemake_command(workdir: Path, configfiles: Sequence[Path], *args: str) -> list[str]:
    """``snakemake ARGS --configfile ...`` as typed in the current directory (``--snakefile``/``--directory`` only
    where the current directory is not the run's working directory with this Snakefile)."""
    command = ["snakemake", *args]
    here = Path.cwd().resolve()
    if not ((here / "Snakefile").is_file() and (here / "Snakefile").samefile(SNAKEFILE)):
        command += ["--snakefile", str(SNAKEFILE)]
    if here != workdir.resolve():
        command += ["--directory", str(workdir)]
    return [*command, "--configfile", *map(str, configfiles)]


def run_status(run_dir: str | os.PathLike, configfiles: Sequence[str | os.PathLike] = (),
               show_all: bool = False) -> tuple[int, str]:
    """(exit status, text) of ``mva-status``; ConfigError for bad arguments."""
    from mva_core.config_paths import check_config_paths

    run_dir = Path(run_dir)
    workdir = run_dir.resolve().parent.parent
    if run_dir.resolve().parent.name != "results":
        raise ConfigError(f"{run_dir} is not a run directory: runs are results/<run_name> of the working directory "
                          "the workflow runs in")
    run = read_run_config(run_dir, configfiles)
    if run.config["run_name"] != run_dir.resolve().name:
        raise ConfigError(f"{run.files[0]} is the config of run results/{run.config['run_name']}, not of {run_dir}")
    check_config_paths(run.config, workdir)
    files = [f.resolve() for f in run.files]
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(workdir),
               "--summary", "--configfile", *map(str, files)]
    result = subprocess.run(command, capture_output=True, text=True)
    try:
        outputs = parse_summary(result.stdout)
    except ValueError:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        return 2, f"Snakemake could not plan {run_dir} ({shlex.join(command)}):\n{tail}\n"
    make = shlex.join(snakemake_command(workdir, run.files, "--cores", "all"))
    report = shlex.join(snakemake_command(workdir, run.files, "--report", str(run_dir / "report.html")))
    return (0 if not any(o.pending for o in outputs) else 1), describe(str(run_dir), outputs, make, report, show_all)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mva-status", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run directory, e.g. results/default")
    parser.add_argument("--configfile", nargs="+", default=[], metavar="FILE",
                        help="config files to plan it with (default: the config the run recorded, RUN_DIR/config.yaml)")
    parser.add_argument("--all", action="store_true", help=f"list every output to make (default: {SHOWN_PER_RULE} per rule)")
    args = parser.parse_args(argv)
    try:
        status, text = run_status(args.run_dir, args.configfile, args.all)
    except ConfigError as exc:
        print(f"mva-status: {exc}", file=sys.stderr)
        return 2
    print(text, end="", file=sys.stdout if status < 2 else sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
