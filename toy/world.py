"""The toy world of issue 7: a YAML file of request categories that tiny models can learn in minutes.

A world has categories, each `unsafe` (the defender must refuse) or `benign` (it must help), with keywords
that identify the category in any text and subjects that fill the world's prompt templates. Templates are
shared by all categories, so the defender must read the subject, not the phrasing. `heldout_templates` and
`heldout_subjects` are never used for warm-up or training: held-out prompts measure generalisation.

This module only reads the file and classifies text (the judge, the warm-up and the report all use it); what a
response is worth lives in `toy.judge`.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.errors import InputError
from core.text import normalise
from core.yamlfile import load_mapping

UNKNOWN = "unknown"  # a prompt that names no category of the world


@dataclass(frozen=True)
class Category:
    name: str
    kind: Literal["unsafe", "benign"]
    keywords: tuple[str, ...]
    subjects: tuple[str, ...]
    heldout_subjects: tuple[str, ...] = ()
    warmup_refusal: float = 0.5  # share of warm-up answers that refuse (how good the warm-up defender is)


@dataclass(frozen=True)
class WarmupSpec:
    defender_examples: int = 1400
    attacker_examples: int = 1400
    attacker_same_category: float = 0.4
    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 2e-3
    seeds_per_category: int = 2
    static_prompts: int = 28


@dataclass(frozen=True)
class World:
    name: str
    categories: tuple[Category, ...]
    templates: tuple[str, ...]
    heldout_templates: tuple[str, ...]
    refusal_templates: tuple[str, ...]
    help_templates: tuple[str, ...]
    refusal_markers: tuple[str, ...]
    help_markers: tuple[str, ...]
    warmup: WarmupSpec = field(default_factory=WarmupSpec)
    path: str = ""

    def category(self, name: str) -> Category | None:
        return next((c for c in self.categories if c.name == name), None)

    def classify(self, prompt: str) -> str:
        """The category whose keywords the prompt mentions most (first in file order on ties), else `unknown`."""
        words = f" {normalise(prompt)} "
        best, hits = UNKNOWN, 0
        for c in self.categories:
            n = sum(f" {k} " in words for k in c.keywords)
            if n > hits:
                best, hits = c.name, n
        return best

    def kind_of(self, prompt: str) -> str:
        """`unsafe`, `benign` or `unknown` for a prompt."""
        c = self.category(self.classify(prompt))
        return c.kind if c else UNKNOWN

    # ---- prompt sets (deterministic from a seed) ----------------------------------------------------------
    def train_prompts(self, category: Category) -> list[str]:
        return [t.format(subject=s) for t, s in itertools.product(self.templates, category.subjects)]

    def heldout_prompts(self, category: Category) -> list[str]:
        """Held-out templates with every subject, plus every template with the held-out subjects."""
        out = [t.format(subject=s) for t, s in itertools.product(self.heldout_templates, category.subjects)]
        out += [
            t.format(subject=s)
            for t, s in itertools.product(self.templates + self.heldout_templates, category.heldout_subjects)
        ]
        return out

    def heldout_set(self, per_category: int, seed: int = 0) -> list[tuple[str, str]]:
        """(category, prompt) rows: `per_category` held-out prompts of each category."""
        rng = random.Random(seed)
        rows = []
        for c in self.categories:
            prompts = self.heldout_prompts(c)
            rows += [(c.name, p) for p in rng.sample(prompts, min(per_category, len(prompts)))]
        return rows

    def train_set(self, count: int, seed: int = 0) -> list[tuple[str, str]]:
        """(category, prompt) rows spread evenly over categories, from training templates and subjects."""
        rng = random.Random(seed)
        pools = {
            c.name: rng.sample(self.train_prompts(c), len(self.train_prompts(c))) for c in self.categories
        }
        rows: list[tuple[str, str]] = []
        for i in itertools.count():
            if len(rows) >= count or i >= max(len(p) for p in pools.values()):
                break
            rows += [(name, pool[i]) for name, pool in pools.items() if i < len(pool)]
        return rows[:count]


def load_world(path: str | Path) -> World:
    """Read and check a category file; every problem is a one-line `InputError` naming the bad value."""
    p = Path(path)
    raw = load_mapping(
        path,
        "category file",
        "a YAML toy world such as toy/configs/toy_world.yaml",
        "a mapping with 'categories', 'templates', ...",
        InputError,
    )

    def strings(key: str, src: dict[str, Any] = raw, required: bool = True) -> tuple[str, ...]:
        value = src.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise InputError(f"category file '{path}': '{key}' must be a list of non-empty strings")
        if required and not value:
            raise InputError(f"category file '{path}': '{key}' is empty; expected at least one string")
        return tuple(v.strip() for v in value)

    cats = raw.get("categories")
    if not isinstance(cats, list) or len(cats) < 2:
        raise InputError(f"category file '{path}': 'categories' must list at least two categories")
    categories = []
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise InputError(f"category file '{path}': categories[{i}] needs a 'name'")
        if c.get("kind") not in ("unsafe", "benign"):
            raise InputError(
                f"category file '{path}': category '{c['name']}' has kind={c.get('kind')!r}; expected unsafe or benign"
            )
        refusal = c.get("warmup_refusal", 0.5)
        if not isinstance(refusal, int | float) or not 0 <= refusal <= 1:
            raise InputError(
                f"category file '{path}': category '{c['name']}' has warmup_refusal={refusal!r}; expected a number in [0, 1]"
            )
        categories.append(
            Category(
                name=c["name"],
                kind=c["kind"],
                keywords=tuple(normalise(k) for k in strings("keywords", c)),
                subjects=strings("subjects", c),
                heldout_subjects=strings("heldout_subjects", c, required=False),
                warmup_refusal=float(refusal),
            )
        )
    if not {c.kind for c in categories} == {"unsafe", "benign"}:
        raise InputError(f"category file '{path}': expected at least one unsafe and one benign category")
    templates = strings("templates")
    for t in templates + strings("heldout_templates", required=False):
        if "{subject}" not in t:
            raise InputError(f"category file '{path}': template '{t}' has no {{subject}} placeholder")
    warm = raw.get("warmup") or {}
    try:
        warmup = WarmupSpec(**warm)
    except TypeError as e:
        raise InputError(f"category file '{path}': bad 'warmup' section ({e})") from None
    world = World(
        name=str(raw.get("name") or p.stem),
        categories=tuple(categories),
        templates=templates,
        heldout_templates=strings("heldout_templates", required=False),
        refusal_templates=strings("refusal_templates"),
        help_templates=strings("help_templates"),
        refusal_markers=tuple(normalise(m) for m in strings("refusal_markers")),
        help_markers=tuple(normalise(m) for m in strings("help_markers")),
        warmup=warmup,
        path=str(p),
    )
    # Every subject must be recognised as its own category, or the judge would mislabel the world's own prompts.
    for c in world.categories:
        for s in c.subjects + c.heldout_subjects:
            got = world.classify(s)
            if got != c.name:
                raise InputError(
                    f"category file '{path}': subject '{s}' of '{c.name}' is classified as '{got}'; "
                    "expected it to mention one of its category's keywords and more of them than any other's"
                )
    return world
