"""``mva-check-config FILE...``: config files checked as the workflow checks them at start, with the project's
own messages.

Snakemake reads ``--configfile`` files before the Snakefile runs, so some faults never reach the workflow's checks:
a tag such as ``!!python/object/apply`` gets "Config file is not valid JSON or YAML" (no file, no tag), a missing
file a traceback, and a YAML alias bomb of mappings hangs. This command reads the files with the project's loader
(``config_files``: file, line and tag named, alias bombs refused at once), layers them as ``--configfile a b``
does, then runs the workflow's start checks: schema and cross-field checks (``config.validate_config``) and the
paths the config names (``config_paths``). Exit status 0 with one ``OK`` line per file, else 2 and one line.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mva_core.config import validate_config
from mva_core.config_errors import ConfigError
from mva_core.config_files import load_config_files
from mva_core.methods import value_order


def workflow_config(paths: Sequence[str | Path], workdir: str | Path = ".") -> dict:
    """The validated config of ``paths`` (layered in order) for a workflow run in ``workdir``; ConfigError naming
    the file (and line) or the key at the first fault."""
    from mva_core.config_paths import check_config_paths, check_output_dir

    raw = load_config_files(paths)
    try:
        config = validate_config(raw)
        check_config_paths(config, workdir)
        check_output_dir(Path(workdir) / "results" / config["run_name"])
    except ConfigError as exc:
        raise ConfigError(f"{' + '.join(map(str, paths))}: {exc}") from None
    return config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mva-check-config", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="config files, layered in order as with `snakemake --configfile FILE...`")
    parser.add_argument("--directory", default=".", metavar="DIR",
                        help="working directory the workflow will run in (data paths are relative to it; default: .)")
    args = parser.parse_args(argv)
    try:
        config = workflow_config(args.files, args.directory)
    except ConfigError as exc:
        print(f"mva-check-config: {exc}", file=sys.stderr)
        return 2
    for path in args.files[:-1]:
        print(f"{path}: OK")
    print(f"{args.files[-1]}: OK (run results/{config['run_name']}: values {', '.join(value_order(config))}; "
          f"methods {', '.join(config['methods'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
