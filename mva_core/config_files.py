"""Config files read as plain YAML data, with errors that name the file and the line.

One loader serves the Snakefile's check of its ``--configfile`` files, ``mva-check-config`` and the config a run
records. It refuses what a plain ``yaml.safe_load`` lets through or turns into a hang: a key written twice (YAML
keeps the second silently), a tag that is not plain data (``!!python/object/apply:...``; Snakemake only says "not
valid JSON or YAML"), and aliases that expand to more than ``MAX_VALUES`` values (an "alias bomb": nine lines of
nested aliases expand to 10⁹ values, and walking them hangs). It checks the composed YAML nodes, in which an alias is
one shared node, so the check takes time in proportion to the file, not to its expansion.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

import yaml

from mva_core.config_errors import ConfigError

MAX_VALUES = 1_000_000
"""Most values (scalars, lists and mappings) a config file may hold once its aliases are expanded."""
_YAML_TAG_PREFIX = "tag:yaml.org,2002:"
_MERGE_TAG = f"{_YAML_TAG_PREFIX}merge"


def load_config_file(path: str | os.PathLike) -> dict:
    """The mapping a config file holds; ConfigError naming the file (and the line) for a missing, unreadable, empty
    or invalid file, a key written twice, a tag that is not plain data, or an alias bomb."""
    try:
        with open(path, encoding="utf-8") as handle:
            loader = yaml.SafeLoader(handle)
            try:
                node = loader.get_single_node()
                if node is not None:
                    _check_nodes(node, path)
                config = None if node is None else loader.construct_document(node)
            finally:
                loader.dispose()
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path}: is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where}: not valid YAML: {exc.problem or exc.context}") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: nested too deeply to be a config") from None
    if config is None:
        raise ConfigError(f"config file {path}: is empty; a config file holds a mapping of config keys")
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path}: holds {type(config).__name__} {config!r:.60}, not a mapping of config "
                          "keys at the top level")
    return config


def load_config_files(paths: Iterable[str | os.PathLike]) -> dict:
    """Config files layered in order, as ``snakemake --configfile a b`` does: later files override nested keys."""
    from snakemake.utils import update_config

    config: dict = {}
    for path in paths:
        update_config(config, load_config_file(path))
    return config


def _check_nodes(root: yaml.Node, path: str | os.PathLike) -> None:
    """Refuse a key written twice in a mapping, a tag without a safe constructor, and more than MAX_VALUES values
    once aliases are expanded (an alias is the same node object as its anchor: each node is walked once and the
    size of its expansion remembered)."""
    expanded: dict[int, int] = {}
    open_nodes: set[int] = set()

    def fail(node: yaml.Node, message: str) -> ConfigError:
        return ConfigError(f"config file {path}, line {node.start_mark.line + 1}: {message}")

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in expanded:
            return expanded[key]
        if key in open_nodes:
            raise fail(node, "an alias refers to the collection that contains it; write the values out")
        if node.tag not in yaml.SafeLoader.yaml_constructors and node.tag != _MERGE_TAG:
            raise fail(node, f"tag {node.tag.replace(_YAML_TAG_PREFIX, '!!')!r} is not allowed; a config file holds "
                             "plain data (mappings, lists, text, numbers, true/false, null)")
        if isinstance(node, yaml.MappingNode):
            _check_unique_keys(node, path)
        open_nodes.add(key)
        total = 1
        for child in _children(node):
            total += size(child)
            if total > MAX_VALUES:
                raise fail(node, f"holds more than {MAX_VALUES:,} values, counting an alias's values each time it "
                                 "is used (an alias bomb?); write the values out or use fewer aliases")
        open_nodes.discard(key)
        expanded[key] = total
        return total

    size(root)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_unique_keys(node: yaml.MappingNode, path: str | os.PathLike) -> None:
    """Keys written in one mapping (``<<: *defaults`` merge keys aside, which later keys may override)."""
    first_line: dict[tuple[str, str], int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
            continue
        key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
        if key in first_line:
            raise ConfigError(f"config file {path}: key {key_node.value!r} appears twice (lines {first_line[key]} and "
                              f"{line}); YAML would silently keep only the second")
        first_line[key] = line
