"""The one YAML reader for user files (experiment configs, category files): a mapping or a one-line error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.errors import SparringError


def load_mapping(
    path: str | Path, what: str, expected: str, shape: str, error: type[SparringError]
) -> dict[str, Any]:
    """Read `path` as a YAML mapping (an empty file is `{}`); every problem is one `error` line naming the file.

    `what` names the file's role in messages ("config file"), `expected` what should be there when it is
    missing, `shape` the mapping it must hold ("a mapping of sections").
    """
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} '{path}' does not exist; expected {expected}")
    if p.stat().st_size > MAX_BYTES:
        raise error(f"{what} '{path}' has {p.stat().st_size} bytes; expected at most {MAX_BYTES}")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{what} '{path}' is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise error(f"{what} '{path}' must hold {shape}, got {type(loaded).__name__}")
    check_expansion(loaded, f"{what} '{path}'", error)
    return loaded


MAX_BYTES = 1 << 20  # a config or category file is a page or two; a megabyte is a mistake or an attack
MAX_NODES = 100_000  # values once YAML aliases are expanded (json, dataclasses and the card all expand them)


def check_expansion(value: Any, what: str, error: type[SparringError]) -> None:
    """Refuse a document whose aliases expand past `MAX_NODES` values ("billion laughs"): PyYAML shares aliased
    nodes, so loading is cheap, but every copy made later (config JSON in the store, the card) is not."""
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        key = id(node)
        if key not in sizes:
            sizes[key] = 0  # a node that contains itself counts once
            children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
            sizes[key] = 1 + sum(size(child) for child in children)
            if sizes[key] > MAX_NODES:
                raise error(
                    f"{what} expands to more than {MAX_NODES} values (YAML aliases); expected a plain config"
                )
        return sizes[key]

    size(value)
