"""The launcher's JSON goes through CPython's private C halves of json (``_json``), to keep
json.decoder and re out of every gateway start (bench_launcher: 'launcher overhead, median
extra', goal <= 20 ms). This pins that they exist and agree with json on what the launcher
reads (manifests) and writes (launch.json)."""

from __future__ import annotations

import json
from types import ModuleType

import pytest

DOCUMENTS = [
    '{"sha": "3f9c2e1", "label": "r", "version": 3, "files": [{"path": "a", "mode": 420}]}',
    '  {"nested": {"deep": [1, 2.5, true, false, null, "\\u00e9\\n"]}}  ',
    "[]",
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_loads_agrees_with_json(launcher: ModuleType, text: str) -> None:
    """The C scanner gives json.loads's value for every kind of value a manifest holds."""
    assert launcher.loads(text) == json.loads(text)


def test_a_broken_document_raises_jsons_own_error(launcher: ModuleType) -> None:
    """Trailing garbage and bad syntax end in json's JSONDecodeError, as json.loads would."""
    for text in ('{"a": 1} x', '{"a": }'):
        with pytest.raises(json.JSONDecodeError):
            launcher.loads(text)


def test_dumps_agrees_with_json(launcher: ModuleType) -> None:
    """A flat launch record reads back as itself, its strings escaped as json.dumps escapes
    them (ASCII only)."""
    record = {"pid": 42, "runtime": "/opt/agent/r\u00e9l\n", "argv": ["python", "-m", "x y"]}
    text = launcher.dumps(record)
    assert json.loads(text) == record
    assert json.dumps(record["runtime"]) in text and text.isascii()
