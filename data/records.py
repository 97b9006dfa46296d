"""Typed records the stages produce, and their conversion to Arrow for one vectorised insert per stage."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class PromptRecord:
    prompt_id: str
    round: int
    idx: int
    text: str
    category: str | None
    parent_id: str | None
    mode: str
    instruction: str | None = None
    attacker_model: str | None = None
    gen_params: str | None = None


@dataclass(frozen=True)
class ResponseRecord:
    response_id: str
    prompt_id: str
    round: int
    sample_index: int
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    defender_model: str
    gen_params: str | None = None
    sample_pass: int = 0  # 0: the respond stage's N answers; k > 0: the resample stage's k-th extra pass


@dataclass(frozen=True)
class ScoreRecord:
    response_id: str
    scorer: str
    round: int
    value: float


_ARROW_TYPES = {int: pa.int64(), str: pa.string(), float: pa.float64(), "int": pa.int64(), "str": pa.string()}


def to_arrow(records: Sequence[object], cls: type) -> pa.Table:
    """Columns from a list of records of dataclass `cls` (an empty list still has the right columns)."""
    fields = dataclasses.fields(cls)
    columns = {f.name: [getattr(r, f.name) for r in records] for f in fields}
    schema = pa.schema([(f.name, _arrow_type(f.type)) for f in fields])
    return pa.table(columns, schema=schema)


def _arrow_type(annotation: object) -> pa.DataType:
    text = str(annotation)
    if text.startswith("int"):
        return pa.int64()
    if text.startswith("float"):
        return pa.float64()
    return pa.string()
