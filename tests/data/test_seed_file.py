"""Seed files are JSON Lines read as the format says: `\\n` ends a line, a BOM is fine, and what cannot be a
prompt is a one-line error naming the line."""

from __future__ import annotations

import json

import pytest

from core.errors import InputError
from data.prompts import load_seed_file


def write(tmp_path, data: bytes):
    path = tmp_path / "seeds.jsonl"
    path.write_bytes(data)
    return path


def test_a_line_separator_inside_a_json_string_is_text(tmp_path):
    row = json.dumps({"text": "first part\u2028second part", "category": "c"}, ensure_ascii=False)
    seeds = load_seed_file(write(tmp_path, (row + "\n").encode()))
    assert len(seeds) == 1 and seeds[0].text == "first part second part"


def test_a_byte_order_mark_is_tolerated(tmp_path):
    seeds = load_seed_file(write(tmp_path, b"\xef\xbb\xbf" + b'{"text": "hello there", "category": "c"}\n'))
    assert [s.text for s in seeds] == ["hello there"]


def test_a_text_with_no_words_is_rejected_with_its_line(tmp_path):
    data = b'{"text": "a real prompt", "category": "c"}\n{"text": "?!?", "category": "c"}\n'
    with pytest.raises(InputError) as err:
        load_seed_file(write(tmp_path, data))
    assert "line 2 has text '?!?' with no letters or digits" in str(err.value)


def test_a_category_must_be_a_string(tmp_path):
    with pytest.raises(InputError, match=r"line 1 has category=7; expected a string"):
        load_seed_file(write(tmp_path, b'{"text": "hello there", "category": 7}\n'))
    assert load_seed_file(write(tmp_path, b'{"text": "hello there"}\n'))[0].category == "uncategorised"
