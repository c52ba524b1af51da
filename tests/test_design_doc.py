"""docs/design.md's stage table names every rule with the script it runs, and nothing else."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rules_and_scripts() -> set[tuple[str, str, str]]:
    found = set()
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        text = smk.read_text()
        for match in re.finditer(r"^(?:local)?rule (\w+):(.*?)(?=^(?:local)?rule |\Z)", text, re.S | re.M):
            script = re.search(r'script:\s*\n\s*"\.\./workflow_scripts/(\w+\.py)"', match.group(2))
            assert script, f"rule {match.group(1)} in {smk.name} runs no workflow script"
            found.add((match.group(1), smk.name, script.group(1)))
    return found


def documented_stages() -> set[tuple[str, str, str]]:
    text = (ROOT / "docs" / "design.md").read_text()
    return {(m[1], m[2], m[3]) for m in re.finditer(r"^\| `(\w+)` \| `([\w.]+\.smk)` \| `(\w+\.py)` \|", text, re.M)}


def test_stage_table_matches_the_rules():
    rules = rules_and_scripts()
    assert len(rules) >= 10
    assert documented_stages() == rules


def test_every_script_in_the_table_exists():
    for _, _, script in documented_stages():
        assert (ROOT / "workflow_scripts" / script).is_file(), script
