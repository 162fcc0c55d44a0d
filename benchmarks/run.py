"""Run every benchmark in benchmarks/ and print one table: figure, baseline, ratio, goal.

Each ``bench_*.py`` module exposes ``run() -> list[Row]`` measured in this same process run, so
figures and their baselines come from the same machine at the same time.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.rows import Row  # noqa: E402 - needs the repository on sys.path


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return "" if value is None else str(value)


def main(argv: list[str]) -> int:
    from agentgw.log import configure

    configure(debug=False)
    only = set(argv)
    rows: list[Row] = []
    failed = False
    for path in sorted(HERE.glob("bench_*.py")):
        if only and path.stem not in only:
            continue
        print(f"running {path.stem} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"benchmarks.{path.stem}")
            rows += [r.of(path.stem) for r in module.run()]
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            rows.append(Row(name="ERROR", ok=False, bench=path.stem))
            failed = True
    header = ["bench", "name", "value", "unit", "baseline", "ratio", "goal", "ok"]
    table = [[fmt(getattr(r, h)) for h in header] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h)
              for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)))
    missed = [r for r in rows if r.ok is False]
    if missed:
        print(f"\n{len(missed)} figure(s) missed their goal", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
