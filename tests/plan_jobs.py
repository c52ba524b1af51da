"""Print every job of the workflow's DAG as one JSON line: rule, wildcards, output, log, benchmark, the params that
name a job's scratch directory (``*_dir``), as Snakemake resolves them for a config, and ``producers``: for each of
those paths, every (rule, wildcards) whose output pattern (wildcard constraints applied) matches it.

    python tests/plan_jobs.py WORKDIR CONFIG_JSON CONFIGFILE...

Run as a subprocess (``conftest.snakemake_env``): Snakemake's API changes the working directory and global logging.
The API's ``printdag`` builds the DAG the same way (``_prepare_dag``, ``_build_dag``); no command-line flag lists params.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.enums import Quietness
from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

REPO = Path(__file__).resolve().parents[1]


def main(workdir: str, config_json: str, *configfiles: str) -> None:
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[Path(f) for f in configfiles], config=json.loads(config_json)),
            snakefile=REPO / "Snakefile",
            workdir=Path(workdir),
        )
        workflow_api.dag(DAGSettings(forceall=True))
        workflow = workflow_api._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        for job in workflow.dag.jobs:
            record = {
                "rule": job.rule.name,
                "wildcards": dict(job.wildcards_dict),
                "output": [str(f) for f in job.output],
                "log": [str(f) for f in job.log],
                "benchmark": str(job.benchmark) if job.benchmark else None,
                "dirs": {k: str(v) for k, v in job.params.items() if k.endswith("_dir")},
            }
            paths = [*record["output"], *record["log"], *filter(None, [record["benchmark"]]), *record["dirs"].values()]
            record["producers"] = {path: [[rule.name, dict(rule.get_wildcards(path))]
                                          for rule in workflow.rules if rule.is_producer(path)] for path in paths}
            print(json.dumps(record))


if __name__ == "__main__":
    main(*sys.argv[1:])
