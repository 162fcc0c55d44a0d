"""One sandbox job as a unit of its own: ``python -m agentgw.sandbox.jobunit``, the ExecStart of
agentgw-job@.service, with the broker's connection as stdin and stdout (see :mod:`.jobclient`).

The exchange (:mod:`.jobspec`): a *prepare* line in -- the backend and the sandbox's shape --;
the sandbox is built and started (:func:`prepare`), then a *ready* line out. Then one *job* line
in, the job runs in that sandbox, one *answer* line out, and the connection is shut for writing
before the sandbox is torn down, so the broker has the answer without waiting for teardown. A
unit serves exactly one job; a broker that goes away (EOF) before or during the job ends it.

Standard library only (with :mod:`.jobspec` and the backends' unit sides): this process starts
once per job, and pydantic would double its cost. The broker may connect long before it sends
the prepare line (a *spare* unit, :mod:`.units`): the unit's start and its imports are then off
the job's path.
"""

from __future__ import annotations

import dataclasses
import io
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, Protocol

from agentgw.errors import AgentgwError
from agentgw.sandbox import gvisor, unitns  # before the prepare line: a spare unit waits for it
from agentgw.sandbox.jobspec import (
    OOM_DETAIL,
    Job,
    NotStarted,
    Outcome,
    Prepare,
    cgroup_paths,
    fits,
    oom_kills,
    parse_job,
    parse_prepare,
    render_failure,
    render_outcome,
    render_ready,
    unit_of_cgroup,
)


class Prepared(Protocol):
    """A sandbox built ahead of its job: runs exactly one job, then is closed (any thread)."""

    def run(self, job: Job) -> Outcome: ...

    def close(self) -> None: ...


def prepare(spec: Prepare) -> Prepared:
    """The sandbox ``spec`` asks for, started and waiting for its job."""
    if spec.backend == "gvisor":
        return gvisor.prepare(spec)
    if spec.backend in ("kvm", "tcg"):
        from agentgw.sandbox import vmunit  # pydantic and QEMU's path: only for a microVM

        return vmunit.prepare(spec)
    raise AgentgwError(f"unknown sandbox backend {spec.backend!r}")


def _watch(conn: BinaryIO, prepared: Prepared) -> None:
    """Close the sandbox when the broker goes away during the job (EOF on the connection)."""
    try:
        sock = socket.socket(fileno=os.dup(conn.fileno()))
    except (OSError, ValueError, io.UnsupportedOperation):
        return  # not a socket (tests): nothing to watch
    with sock:
        try:
            while True:
                data = sock.recv(4096, socket.MSG_PEEK)
                if not data:
                    break
                sock.recv(len(data))  # nothing more is expected: drop it
        except OSError:
            pass
    prepared.close()


def _send(out: BinaryIO, line: bytes) -> bool:
    try:
        out.write(line)
        out.flush()
    except OSError:
        return False  # the broker went away
    return True


def _finish(out: BinaryIO) -> None:
    """The answer is out: tell the broker so (EOF) before the teardown."""
    try:
        sock = socket.socket(fileno=os.dup(out.fileno()))
    except (OSError, ValueError, io.UnsupportedOperation):
        return
    with sock:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _lost(paths: list[str], when: str, then: str) -> str:
    """The journal's line for this unit's own mounts undone (said on stderr too)."""
    why = (f"this job unit's mounts changed {when} ({', '.join(paths)}: removed or replaced on "
           f"the host){then}")
    print(f"agentgw-job: {why}", file=sys.stderr, flush=True)
    return why


def _refused(guard: Mapping[str, int] | None, out: BinaryIO) -> bool:
    """Refuse (journal line, 'unavailable' answer) if this unit's own mounts changed."""
    if not (paths := unitns.undone(guard, unitns.read()) if guard else []):
        return False
    why = _lost(paths, "since it started", ", so it runs no job")
    _send(out, render_failure("unavailable", why, "the broker runs it in a new unit"))
    return True


class _Idle:
    """Whether this unit still waits (no job started): only then may the mount watch end it."""

    def __init__(self) -> None:
        self.lock, self.waiting = threading.Lock(), True

    def end_waiting(self) -> None:
        with self.lock:
            self.waiting = False


def _watch_mounts(guard: Mapping[str, int], idle: _Idle) -> None:
    """End this unit (exit 0: the broker sees its connection close and drops it) as soon as
    one of its own mounts is undone while it waits; a job already started is left be (it was
    checked before it started)."""
    lost = unitns.wait_undone(guard)
    if not lost:
        return
    with idle.lock:
        if not idle.waiting:
            return
        _lost(lost, "while it waited", "; it ends")
        os._exit(0)  # the unit's stop takes its sandbox or VM with it


def _run(spec: Prepare, prepared: Prepared, conn: BinaryIO, out: BinaryIO,
         guard: Mapping[str, int] | None, idle: _Idle | None = None) -> int:
    line = conn.readline()
    if not line:
        return 0  # the broker closed a prepared connection it did not need
    try:
        job = parse_job(line)
    except ValueError as exc:
        _send(out, render_failure("bad_request", f"the job unit could not read the request: "
                                                 f"{exc}"))
        return 2
    if not fits(spec, job):
        _send(out, render_failure("bad_request", "the job's memory, cpus or nproc differ from "
                                                 "the prepared sandbox's"))
        return 2
    if _refused(guard, out):
        return 1
    if idle is not None:
        idle.end_waiting()
    threading.Thread(target=_watch, args=(conn, prepared), daemon=True).start()
    try:
        outcome = prepared.run(job)
    except AgentgwError as exc:
        kind = "unavailable" if isinstance(exc, NotStarted) else "failed"
        _send(out, render_failure(kind, exc.message, exc.hint))
        return 1
    if own_oom_kills():  # the Sentry (or the job in it) was killed by the unit's memory limit
        outcome = dataclasses.replace(outcome, detail=OOM_DETAIL)
    sent = _send(out, render_outcome(outcome, job, backend=spec.backend))
    _finish(out)
    return 0 if sent else 1


def own_cgroup() -> str:
    """This process's ``/proc/self/cgroup`` ('' if unreadable)."""
    try:
        return Path("/proc/self/cgroup").read_text()
    except OSError:
        return ""


def own_unit() -> str:
    """This process's unit, read before any job code runs (the broker limits it by name)."""
    return unit_of_cgroup(own_cgroup())


def own_oom_kills() -> int:
    """The OOM kills in this unit's cgroup so far (cgroup2's count, else v1's memory one)."""
    paths = cgroup_paths(own_cgroup())
    for path in (f"/sys/fs/cgroup{paths.get('', '')}/memory.events",
                 f"/sys/fs/cgroup/memory{paths.get('memory', '')}/memory.oom_control"):
        try:
            return oom_kills(Path(path).read_text())
        except OSError:
            continue
    return 0


def serve_one(conn: BinaryIO, out: BinaryIO, guard: Mapping[str, int] | None = None,
              idle: _Idle | None = None) -> int:
    """Prepare, say ready, run one job, answer; the exit status says how it went. ``guard``:
    the unit's own mounts as it started (:mod:`.unitns`), checked before the sandbox is
    prepared and again before the job; ``idle``: what the mount watch (:func:`main`) may end
    the unit during, marked done once the job starts."""
    line = conn.readline()
    if not line:
        return 0  # the broker closed a spare connection it did not need
    try:
        spec = parse_prepare(line)
    except ValueError as exc:
        _send(out, render_failure("bad_request", f"the job unit could not read the prepare "
                                                 f"line: {exc}"))
        return 2
    if _refused(guard, out):  # a spare unit held across a change: no sandbox, no VM started
        return 1
    started = time.monotonic()
    try:
        prepared = prepare(spec)
    except AgentgwError as exc:
        _send(out, render_failure("unavailable", exc.message, exc.hint))
        return 1
    try:
        if not _send(out, render_ready(spec.backend, time.monotonic() - started, own_unit())):
            return 0
        return _run(spec, prepared, conn, out, guard, idle)
    finally:
        prepared.close()


def main() -> int:
    os.umask(0o077)
    guard = unitns.snapshot(unitns.read())  # before any wait: the namespace systemd built
    idle = _Idle()
    threading.Thread(target=_watch_mounts, args=(guard, idle), daemon=True).start()
    return serve_one(sys.stdin.buffer, sys.stdout.buffer, guard, idle)


if __name__ == "__main__":
    sys.exit(main())
