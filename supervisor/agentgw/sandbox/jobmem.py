"""Each gVisor job's memory as its request asks: the job unit's ``MemoryMax=``, set at runtime.

runsc runs with ``--ignore-cgroups`` in its job unit (agentgw-job@.service), and systemd does
not delegate the v1 memory controller to a unit (``Delegate=`` hands over name=systemd only),
so nothing inside the unit can hold a job to its ``memory_mb``: the template's ``MemoryMax=``
(768M) would be the only bound for every job. So the broker sets each job unit's limit, as
``systemctl set-property --runtime`` does (SetUnitProperties over D-Bus), once the unit said
ready -- before its job is sent: for a prepared unit when it is prepared, off the request path
--: the request's ``memory_mb`` plus :data:`OVERHEAD_MB` for what runs beside the job in the
unit, and never above the unit's own ``MemoryMax=`` (the template's, which an administrator
raises with a drop-in). The broker is not root: a polkit rule lets its user do exactly this
(data/polkit/50-agentgw.rules: ``set-property`` on ``agentgw-job@*.service``, nothing else).

The unit names itself in its ready line (read from /proc/self/cgroup before any job code ran
in it); a name that is not a job unit's is refused. A limit is reported only as the kernel
holds it: read back from the unit's cgroup (``memory.max`` on cgroup2, ``memory.limit_in_bytes``
on v1). Where that cgroup has no memory controller (a cgroup2 host whose memory controller
stayed on v1) the result and the exec record say so (:class:`agentgw.sandbox.job.MemoryLimit`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

from agentgw.bus import SERVICE, Systemd, set_properties
from agentgw.bus.facts import as_int, as_str
from agentgw.errors import AgentgwError, die
from agentgw.log import get_logger
from agentgw.sandbox.job import MemoryLimit

log = get_logger(__name__)

MiB = 1024 * 1024
# What runs in a gVisor job's unit beside the job: runsc, the Sentry, the gofer and the job
# unit's Python. Measured in the hybrid lab (tests/integration/limits/test_job_memory.py prints
# it): a unit whose job is `sleep` peaks at 31 MiB (36 MiB with python3 as the job); twice
# that leaves room for the Sentry's own growth with a busier job.
OVERHEAD_MB = 64
JOB_UNIT = re.compile(r"agentgw-job@[0-9]+-[0-9]+-[0-9]+\.service")
UNLIMITED = 2**64 - 1  # systemd's "infinity"


def memory_max(memory_mb: int, ceiling: int) -> int:
    """The job unit's MemoryMax= for a job of ``memory_mb``: with the overhead, at most the
    unit's own (``ceiling``)."""
    return min((memory_mb + OVERHEAD_MB) * MiB, ceiling)


def check_job_unit(name: str) -> str:
    if JOB_UNIT.fullmatch(name) is None:
        raise die(f"the job unit named itself {name[:120]!r}, not agentgw-job@<n>-<pid>-<uid>"
                  ".service", hint="see: journalctl -u 'agentgw-job@*'")
    return name


def limit_files(root: Path, cgroup: str) -> tuple[Path, Path]:
    """Where the kernel keeps a cgroup's memory limit: cgroup2, then v1 (hybrid hosts)."""
    rel = cgroup.lstrip("/")
    return (root / "sys/fs/cgroup" / rel / "memory.max",
            root / "sys/fs/cgroup/memory" / rel / "memory.limit_in_bytes")


def read_limit(root: Path, cgroup: str) -> int | None:
    """The memory limit the kernel holds for ``cgroup``; None where it has no memory controller."""
    for path in limit_files(root, cgroup):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        return UNLIMITED if text == "max" else int(text)
    return None


def verdict(want: int, held: int | None) -> MemoryLimit:
    """What to report of a limit set to ``want`` that the kernel holds as ``held``."""
    if held is None:
        return MemoryLimit(max_bytes=want, enforced=False,
                           note="not enforced: the job unit's cgroup has no memory controller")
    if held > want:
        return MemoryLimit(max_bytes=want, enforced=False,
                           note=f"not enforced: the unit's cgroup holds {held} bytes")
    return MemoryLimit(max_bytes=want, enforced=True)


class Limiter:
    """Sets job units' memory limits over one system-bus connection (shared by the broker's
    threads under a lock; reopened after a failure)."""

    def __init__(self, root: Path = Path("/"),
                 connect: Callable[[], Systemd] = lambda: Systemd(private=False)) -> None:
        self.root, self._connect = root, connect
        self._lock = threading.Lock()
        self._sd: Systemd | None = None

    def _set(self, unit: str, memory_mb: int) -> tuple[int, str]:
        if self._sd is None:
            self._sd = self._connect().open()
        props = self._sd.unit_properties(unit, SERVICE, ["MemoryMax", "ControlGroup"])
        want = memory_max(memory_mb, as_int(props["MemoryMax"]))
        set_properties(self._sd, unit, {"MemoryMax": want})
        return want, as_str(props["ControlGroup"])

    def apply(self, unit: str, memory_mb: int) -> MemoryLimit:
        """Limit ``unit`` for a job of ``memory_mb``; what the kernel holds. A bus failure (no
        polkit rule, ...) is reported in the result, not raised: the job keeps the unit's
        own limit."""
        check_job_unit(unit)
        with self._lock:
            try:
                want, cgroup = self._set(unit, memory_mb)
            except AgentgwError as exc:
                self.close()
                log.warning("sandbox_memory_limit_failed", unit=unit, error=exc.message)
                return MemoryLimit(max_bytes=0, enforced=False, note=f"not set: {exc.message}")
        return verdict(want, read_limit(self.root, cgroup) if cgroup else None)

    def close(self) -> None:
        if self._sd is not None:
            self._sd.close()
            self._sd = None
