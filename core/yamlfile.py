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
    return loaded
