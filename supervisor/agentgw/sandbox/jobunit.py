"""One sandbox job as a unit of its own: ``python -m agentgw.sandbox.jobunit``, the ExecStart of
agentgw-job@.service, with the broker's connection as stdin and stdout (see :mod:`.jobclient`).

A prepare line in (:class:`~.jobspec.Prepare`: the backend and the sandbox's shape), the sandbox
prepared (:func:`prepare`), a ready line out; then one job line in, the job run, one answer line
out. gVisor (:mod:`.gvisor`, ``runsc --rootless``) stays on the standard library (with
:mod:`.jobspec`): this process starts once per job, and pydantic would double its cost. A
microVM (``kvm``/``tcg``, :mod:`.vmunit`) imports its module only when asked for.
"""

from __future__ import annotations

import os
import sys
import time
from typing import BinaryIO, Protocol

from agentgw.errors import AgentgwError
from agentgw.sandbox import gvisor
from agentgw.sandbox.jobspec import (
    Job,
    Outcome,
    Prepare,
    parse_job,
    parse_prepare,
    render_failure,
    render_outcome,
    render_ready,
)


class Prepared(Protocol):
    """A sandbox that waits for its one job."""

    def run(self, job: Job) -> Outcome: ...

    def close(self) -> None: ...


class _GvisorCold:
    """gVisor prepares nothing ahead yet: runsc starts with the job."""

    def run(self, job: Job) -> Outcome:
        return gvisor.run_plain(job)

    def close(self) -> None:
        return None


def prepare(spec: Prepare) -> Prepared:
    """The sandbox for ``spec.backend``; ValueError for a backend this unit does not know."""
    if spec.backend == "gvisor":
        return _GvisorCold()
    if spec.backend in ("kvm", "tcg"):
        from agentgw.sandbox import vmunit  # pydantic only on the VM path

        return vmunit.prepare(spec)
    raise ValueError(f"prepare.backend: unknown backend {spec.backend!r}")


def _answer(stdout: BinaryIO, line: bytes) -> None:
    stdout.write(line)
    stdout.flush()


def serve_one(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Prepare, read one request line, run it, write one answer line; the exit status says
    which step failed."""
    started = time.monotonic()
    try:
        spec = parse_prepare(stdin.readline())
        sandbox = prepare(spec)
    except ValueError as exc:
        _answer(stdout, render_failure("bad_request", f"the job unit could not prepare: {exc}"))
        return 2
    except AgentgwError as exc:
        _answer(stdout, render_failure("failed", exc.message, exc.hint))
        return 1
    try:
        _answer(stdout, render_ready(spec.backend, time.monotonic() - started))
        try:
            job = parse_job(stdin.readline())
        except ValueError as exc:
            _answer(stdout, render_failure("bad_request", f"the job unit could not read the "
                                                          f"request: {exc}"))
            return 2
        try:
            outcome = sandbox.run(job)
        except (AgentgwError, ValueError) as exc:
            message = exc.message if isinstance(exc, AgentgwError) else str(exc)
            _answer(stdout, render_failure("failed", message,
                                           exc.hint if isinstance(exc, AgentgwError) else ""))
            return 1
    finally:
        sandbox.close()
    _answer(stdout, render_outcome(outcome, job, backend=spec.backend))
    return 0


def main() -> int:
    os.umask(0o077)
    return serve_one(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
