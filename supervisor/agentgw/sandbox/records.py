"""The exec records (``execs.jsonl``): rotated by size from the root side.

The broker cannot rotate them itself: /var/lib/agentgw is unreachable for its user, and systemd
hands it the live file as its stdout. So a root process (``agentgw rotate``, run before every
``agentgw verify`` by agentgw-verify.service) copies the live file to ``execs.jsonl.1`` and
truncates it in place under ``flock`` (:mod:`agentgw.logroll`); the broker's descriptor stays
valid, and its appends take the same lock, so no record is lost or split.
"""

from __future__ import annotations

from agentgw import logroll
from agentgw.observe.counts import exec_tally
from agentgw.paths import Layout


def rotate_records(layout: Layout, retention: logroll.Retention) -> bool:
    """Rotate execs.jsonl when over the bound (or finish an interrupted rotation)."""
    return logroll.rotate(layout.sandbox_execs, retention, exec_tally)
