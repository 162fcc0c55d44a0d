"""A rolling promote through Ansible across 3 lab hosts (serial 1) beside the sum of three
direct ``agentgw promote`` calls, in the same run (issue 17).

Set-up (untimed): three labs reachable over ssh (tests/unit/fleet/harness.py), releases signed
once off-host, bootstrap, then release A and B staged and promoted by the playbook, so both are
present everywhere and B runs. Timed: three direct ``agentgw promote api A`` (one per host,
through nsenter: no ssh), then the playbook promoting B (staging is a no-op; three promotes over
ssh, one host at a time). Also timed: the same playbook when nothing moves, and the fixed
Ansible start-up: ansible-playbook running a play that only connects to the three hosts
(benchmarks/ansible_plugins/connect.yml). Each playbook run reports its per-task wall times
(benchmarks/ansible_plugins/agentgw_timing.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.unit.fleet.harness import (
    AGENTGW,
    PROFILE,
    Fleet,
    build_releases,
    fleet,
    sign_off_host,
    signing_vars,
)

PLUGINS = Path(__file__).resolve().parent / "ansible_plugins"


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-3000:] + result.stderr[-2000:])


def timed(f: Fleet, out: Path, *args: str) -> dict[str, Any]:
    """A playbook run with the agentgw_timing callback: its total and per-task wall times."""
    _ok(f.playbook(*args, env_extra={
        "ANSIBLE_CALLBACK_PLUGINS": os.fspath(PLUGINS),
        "ANSIBLE_CALLBACKS_ENABLED": "agentgw_timing",
        "AGENTGW_TIMING_OUT": os.fspath(out)}))
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def per_task(doc: dict[str, Any]) -> str:
    """Wall seconds per task (each run until its last host answered, summed over the serial
    batches), the slowest first; the rest is ansible-playbook's own start and play changes."""
    sums: dict[str, float] = {}
    for run in doc["runs"]:
        if run["hosts"]:
            sums[run["task"]] = sums.get(run["task"], 0.0) + max(run["hosts"].values())
    rest = doc["total"] - sum(sums.values())
    tasks = sorted(sums.items(), key=lambda x: -x[1])
    return ", ".join(f"{t} {s:.2f}" for t, s in [*tasks, ("other", rest)])


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        releases = build_releases(work)
        sign_off_host(work, releases)
        a, b = releases["good"], releases["good2"]
        with fleet(work) as f:
            _ok(f.playbook("bootstrap.yml", *signing_vars(work)))
            _ok(f.playbook("rolling-promote.yml", *a.extra_vars()))
            _ok(f.playbook("rolling-promote.yml", *b.extra_vars()))

            t0 = time.perf_counter()
            for lab in f.labs:
                lab.exec([AGENTGW, "promote", PROFILE, a.sha, "--allow-downgrade", "--json"],
                         timeout=300)
            direct = time.perf_counter() - t0

            t0 = time.perf_counter()
            moved = timed(f, work / "rolling.json", "rolling-promote.yml", *b.extra_vars())
            rolling = time.perf_counter() - t0

            t0 = time.perf_counter()
            still = timed(f, work / "noop.json", "rolling-promote.yml", *b.extra_vars())
            noop = time.perf_counter() - t0

            t0 = time.perf_counter()
            _ok(f.playbook(os.fspath(PLUGINS / "connect.yml")))
            startup = time.perf_counter() - t0

            # What agentgw's own CLI costs on a host, for reading the per-task times.
            lab = f.labs[0]
            cli: dict[str, float] = {}
            for name, argv in (("status", ["status", PROFILE, "--json"]),
                               ("release list", ["release", "list", "--json"]),
                               ("promote --unless-current",
                                ["promote", PROFILE, b.sha, "--unless-current", "--json"])):
                t0 = time.perf_counter()
                lab.exec([AGENTGW, *argv], timeout=120)
                cli[name] = time.perf_counter() - t0
    budget = 1.5 * direct + startup
    return [
        {"name": "3 direct agentgw promote (sum)", "value": round(direct, 2), "unit": "s"},
        {"name": "rolling promote, 3 hosts, serial 1", "value": round(rolling, 2), "unit": "s",
         "baseline": round(direct, 2), "ratio": round(rolling / direct, 2),
         "goal": f"<= 1.5x direct + start-up ({budget:.1f} s)", "ok": rolling <= budget},
        {"name": "rolling promote, wall s per task", "value": per_task(moved)},
        {"name": "rolling promote, nothing moves", "value": round(noop, 2), "unit": "s"},
        *({"name": f"agentgw {n} on a host, direct", "value": round(v, 2), "unit": "s"}
          for n, v in cli.items()),
        {"name": "nothing moves, wall s per task", "value": per_task(still)},
        {"name": "Ansible start-up: ansible-playbook + connect 3 hosts", "value": round(startup, 2),
         "unit": "s"},
    ]


if __name__ == "__main__":
    json.dump(run(), sys.stdout, indent=2)
