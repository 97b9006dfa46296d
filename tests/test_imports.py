"""The house's arrows: which room may import which, read from the source (the README draws the same picture).

Rooms depend one way; `game` is the one place that calls both generating and training, and the toy world
reaches training only through it. A new import across rooms that is not drawn here fails this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# room -> the rooms it may import (its own is always allowed)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "data": {"core"},
    "score": {"core", "data"},
    "generate": {"core", "data", "score"},
    "train": {"core", "data"},
    "game": {"core", "data", "score", "generate", "train"},
    "toy": {"core", "data", "score", "generate", "game"},
}


def imported_rooms(path: Path) -> set[str]:
    """Every top-level package named by an import in `path`, at any depth (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(ALLOWED)


def test_rooms_import_one_way():
    wrong = []
    for room, allowed in ALLOWED.items():
        for path in sorted((REPO / room).rglob("*.py")):
            for other in sorted(imported_rooms(path) - allowed - {room}):
                wrong.append(f"{path.relative_to(REPO)} imports {other}")
    assert wrong == []


def test_only_the_game_reaches_both_generating_and_training():
    both = [room for room, allowed in ALLOWED.items() if {"generate", "train"} <= allowed]
    assert both == ["game"]


def test_every_room_is_drawn():
    rooms = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "bench"}
    assert rooms == set(ALLOWED)
