"""An Ansible callback for bench_fleet: the wall time of each task run (from its start to each
host's result; a task runs once per serial batch) and of the whole run, written as JSON to
$AGENTGW_TIMING_OUT when the playbook ends."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase  # type: ignore[import-not-found]

DOCUMENTATION = """
name: agentgw_timing
type: aggregate
short_description: per-task wall times for benchmarks/bench_fleet.py
description: "writes {total, runs [{task, hosts {host: seconds}}]} to $AGENTGW_TIMING_OUT"
"""


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "agentgw_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.began = time.perf_counter()
        self.started = self.began
        self.runs: list[dict[str, Any]] = []

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self.started = time.perf_counter()
        self.runs.append({"task": task.get_name(), "hosts": {}})

    def _done(self, result: Any, *_: Any, **__: Any) -> None:
        if self.runs:
            self.runs[-1]["hosts"][result._host.get_name()] = round(
                time.perf_counter() - self.started, 3)

    v2_runner_on_ok = v2_runner_on_failed = v2_runner_on_skipped = _done

    def v2_playbook_on_stats(self, stats: Any) -> None:
        out = os.environ.get("AGENTGW_TIMING_OUT")
        if out:
            with open(out, "w", encoding="utf-8") as f:
                json.dump({"total": round(time.perf_counter() - self.began, 3),
                           "runs": self.runs}, f)
