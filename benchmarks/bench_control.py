"""Control over D-Bus, in a lab with 100 running profiles (issue 5's figures).

- `agentgw status --json` over 100 profiles vs a shell loop of `systemctl show` (goal >= 8x);
- `agentgw promote` vs a bare `systemctl restart` + readiness of the same unit (goal: <= 300 ms
  more). The work runs inside the lab in benchmarks/control_inside.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from agentgw.lab.machine import booted
from agentgw.lab.spec import LabSpec
from benchmarks.rows import Row, rows_from_json, rows_to_json

REPO = Path(__file__).resolve().parents[1]


def run() -> list[Row]:
    spec = LabSpec(name=f"bench-ctl-{uuid.uuid4().hex[:6]}", binds=(REPO,))
    with booted(spec) as lab:
        out = lab.exec(["/opt/agentgw/venv/bin/python", "-m", "benchmarks.control_inside"],
                       cwd=REPO, timeout=900)
    rows = rows_from_json(out.stdout.strip().splitlines()[-1])
    return rows


if __name__ == "__main__":
    print(rows_to_json(run()))
