"""Control over D-Bus, in a lab with 100 running profiles (issue 5's figures).

- `agentgw status --json` over 100 profiles vs a shell loop of `systemctl show` (goal >= 8x);
- `agentgw promote` vs a bare `systemctl restart` + readiness of the same unit (goal: <= 300 ms
  more). The work runs inside the lab in benchmarks/control_inside.py.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

from agentgw.lab.machine import booted
from agentgw.lab.spec import LabSpec

REPO = Path(__file__).resolve().parents[1]


def run() -> list[dict[str, Any]]:
    spec = LabSpec(name=f"bench-ctl-{uuid.uuid4().hex[:6]}", binds=(REPO,))
    with booted(spec) as lab:
        out = lab.exec(["/opt/agentgw/venv/bin/python", str(REPO / "benchmarks/control_inside.py")],
                       cwd=REPO, timeout=900)
    rows: list[dict[str, Any]] = json.loads(out.stdout.strip().splitlines()[-1])
    return rows


if __name__ == "__main__":
    json.dump(run(), sys.stdout, indent=2)
