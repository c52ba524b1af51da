"""mva-check-config: config files checked as the workflow checks them, naming the file, the line and the tag where
Snakemake's own reading of ``--configfile`` names nothing (issue 22, case 7), and alias bombs refused at once."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import run_cli, snakemake

from mva_core.check_config import main
from mva_core.config import check_config_files
from mva_core.config_errors import ConfigError
from mva_core.config_files import MAX_VALUES, load_config_file

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "config/smoke.yaml"


def alias_bomb(collection: str) -> str:
    """Nine lines of nested aliases that expand to 9⁹ ≈ 387 million values ("billion laughs")."""
    lines = []
    for level, name in enumerate("abcdefghi"):
        items = ['"lol"'] * 9 if level == 0 else [f"*{'abcdefghi'[level - 1]}"] * 9
        body = ", ".join(items) if collection == "list" else ", ".join(f"k{i}: {x}" for i, x in enumerate(items))
        lines.append(f"{name}: &{name} " + (f"[{body}]" if collection == "list" else f"{{{body}}}"))
    return "\n".join(lines) + "\n"


def check(capsys, *argv: str) -> tuple[int, str, str]:
    return run_cli(main, capsys, *argv)


def refused(status: int, err: str, *names: str) -> None:
    assert status == 2, err
    assert err.strip().count("\n") == 0, err
    for name in names:
        assert name in err, err


def test_a_python_tag_is_named_with_its_file_and_line_and_never_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tagged.yaml"
    path.write_text("run_name: smoke\nseed: !!python/object/apply:os.system ['touch pwned']\n")
    status, _, err = check(capsys, str(path))
    refused(status, err, str(path), "line 2", "'!!python/object/apply:os.system'")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("collection", ["list", "mapping"])
def test_an_alias_bomb_is_refused_within_a_second(tmp_path, capsys, collection):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(collection))
    start = time.perf_counter()
    status, _, err = check(capsys, str(path))
    assert time.perf_counter() - start < 1.0
    refused(status, err, str(path), "alias bomb", f"{MAX_VALUES:,}")


def test_aliases_and_merge_keys_of_a_normal_size_load(tmp_path):
    path = tmp_path / "aliases.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\nlist: [*b, *b]\n")
    assert load_config_file(path) == {"base": {"x": 1, "y": 2}, "other": {"x": 1, "y": 3},
                                      "list": [{"x": 1, "y": 2}, {"x": 1, "y": 2}]}
    path.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="line 1: an alias refers to the collection that contains it"):
        load_config_file(path)


@pytest.mark.parametrize("text, names", [
    (None, ["no such file"]),  # `snakemake --configfile` of a missing file: a traceback
    ("", ["is empty"]),
    ("dpo: {betta: 0.1}\n", [f"{SMOKE} + ", "config key 'dpo'", "betta"]),  # layered over the smoke config
    ("values: {a: 1}\nvalues: {b: 2}\n", ["key 'values' appears twice (lines 1 and 2)"]),
])
def test_a_missing_empty_or_wrong_file_is_named(tmp_path, capsys, text, names):
    path = tmp_path / "my.yaml"
    if text is not None:
        path.write_text(text)
    status, _, err = check(capsys, str(SMOKE), str(path))
    refused(status, err, str(path), *names)


def test_good_files_get_one_ok_line_each(tmp_path, capsys):
    (tmp_path / "seeds.yaml").write_text("seeds: [1, 2]\n")
    status, out, err = check(capsys, str(SMOKE), str(tmp_path / "seeds.yaml"), "--directory", str(tmp_path))
    assert status == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == f"{SMOKE}: OK"
    assert lines[1].startswith(f"{tmp_path / 'seeds.yaml'}: OK (run results/smoke: values helpful, harmless;")
    assert len(lines) == 2


def test_the_workflow_refuses_a_list_alias_bomb_at_start(tmp_path):
    """Snakemake itself reads a list bomb quickly, so the Snakefile's check of its config files refuses it (a
    mapping bomb hangs inside Snakemake before the Snakefile runs: only mva-check-config can name it)."""
    (tmp_path / "bomb.yaml").write_text(alias_bomb("list"))
    result = snakemake("-n", "--configfile", str(tmp_path / "bomb.yaml"), workdir=tmp_path, timeout=120)
    assert result.returncode != 0 and "alias bomb" in result.stdout + result.stderr
    check_config_files([SMOKE, REPO / "config.yaml"])  # the shipped configs pass


def test_an_output_folder_that_cannot_be_written_is_named(tmp_path, capsys):
    (tmp_path / "results").write_text("a file where the run directories go")
    status, _, err = check(capsys, str(SMOKE), "--directory", str(tmp_path))
    refused(status, err, "config key 'run_name'", str(tmp_path / "results"), "not a writable directory")
