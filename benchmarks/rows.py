"""The one row type of the benchmark table, and its JSON form (rows measured inside a lab come
back as the last line of the command's stdout)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Row:
    """One figure: ``value`` in ``unit`` against ``baseline`` (``ratio`` = the comparison the
    goal is about), and whether it met ``goal`` (None: no goal)."""

    name: str
    value: float | None = None
    unit: str = ""
    baseline: float | None = None
    ratio: float | None = None
    goal: str = ""
    ok: bool | None = None
    bench: str = ""

    def of(self, bench: str) -> Row:
        return replace(self, bench=bench)


def rows_to_json(rows: list[Row]) -> str:
    return json.dumps([asdict(r) for r in rows])


def rows_from_json(line: str) -> list[Row]:
    return [Row(**r) for r in json.loads(line)]
