"""A rolling promote through Ansible across 3 lab hosts (serial 1) beside the sum of three
direct ``agentgw promote`` calls, in the same run (issue 17).

Set-up (untimed): three labs reachable over ssh (agentgw.lab.fleet), releases signed once
off-host, bootstrap, then release A and B staged and promoted by the playbook, so both are
present everywhere and B runs. Timed: three direct ``agentgw promote api A`` (one per host,
through nsenter: no ssh), then the playbook promoting B (staging is a no-op; three promotes over
ssh, one host at a time). Also timed: the same playbook when nothing moves, and the fixed
Ansible start-up: ansible-playbook running a play that only connects to the three hosts
(benchmarks/ansible_plugins/connect.yml). Each playbook run reports its per-task wall times
(benchmarks/ansible_plugins/agentgw_timing.py), and agentgw's own CLI calls are timed on a host.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from agentgw.lab.fleet import (
    AGENTGW,
    PROFILE,
    Fleet,
    build_releases,
    fleet,
    sign_off_host,
    signing_vars,
)
from agentgw.run import Completed
from benchmarks.rows import Row, rows_to_json

REPO = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "ansible_plugins"


def _ok(result: Completed) -> None:
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


def per_task(doc: dict[str, Any], what: str) -> list[Row]:
    """Wall seconds per task (each run until its last host answered, summed over the serial
    batches), the slowest first; "other" is ansible-playbook's own start and play changes."""
    sums: dict[str, float] = {}
    for run in doc["runs"]:
        if run["hosts"]:
            sums[run["task"]] = sums.get(run["task"], 0.0) + max(run["hosts"].values())
    rest = doc["total"] - sum(sums.values())
    tasks = sorted(sums.items(), key=lambda x: -x[1])
    return [Row(name=f"  {what}: {task}", value=round(s, 2), unit="s")
            for task, s in [*tasks, ("other", rest)]]


def cli_costs(f: Fleet, sha: str) -> list[Row]:
    """What agentgw's own CLI costs on a host, for reading the per-task times."""
    lab, rows = f.labs[0], []
    for name, argv in (("status", ["status", PROFILE, "--json"]),
                       ("release list", ["release", "list", "--json"]),
                       ("promote --unless-current",
                        ["promote", PROFILE, sha, "--unless-current", "--json"])):
        t0 = time.perf_counter()
        lab.exec([AGENTGW, *argv], timeout=120)
        rows.append(Row(name=f"agentgw {name} on a host, direct",
                        value=round(time.perf_counter() - t0, 2), unit="s"))
    return rows


def run() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        releases = build_releases(REPO, work)
        sign_off_host(work, releases)
        a, b = releases["good"], releases["good2"]
        with fleet(REPO, work) as f:
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
            cli = cli_costs(f, b.sha)
    budget = 1.5 * direct + startup
    return [
        Row(name="3 direct agentgw promote (sum)", value=round(direct, 2), unit="s"),
        Row(name="Ansible start-up: ansible-playbook + connect 3 hosts",
            value=round(startup, 2), unit="s"),
        Row(
            name="rolling promote, 3 hosts, serial 1",
            value=round(rolling, 2),
            unit="s",
            baseline=round(direct, 2),
            ratio=round(rolling / direct, 2),
            goal=f"<= 1.5x direct + start-up ({budget:.1f} s)",
            ok=rolling <= budget,
        ),
        *per_task(moved, "rolling"),
        Row(name="rolling promote, nothing moves", value=round(noop, 2), unit="s"),
        *per_task(still, "nothing moves"),
        *cli,
    ]


if __name__ == "__main__":
    print(rows_to_json(run()))
