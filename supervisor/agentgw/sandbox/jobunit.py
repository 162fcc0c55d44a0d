"""One gVisor job as a unit of its own: ``python -m agentgw.sandbox.jobunit``, the ExecStart of
agentgw-job@.service, with the broker's connection as stdin and stdout (see :mod:`.jobclient`).

One request line in, ``runsc --rootless`` (:mod:`.gvisor`), one answer line out. Standard
library only (with :mod:`.jobspec`): this process starts once per job, and pydantic would double
its cost.
"""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

from agentgw.errors import AgentgwError
from agentgw.sandbox import gvisor
from agentgw.sandbox.jobspec import parse_job, render_failure, render_outcome


def serve_one(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Read one request line, run it, write one answer line; the exit status says which."""
    try:
        job = parse_job(stdin.readline())
    except ValueError as exc:
        stdout.write(render_failure("bad_request", f"the job unit could not read the request: "
                                                   f"{exc}"))
        return 2
    try:
        outcome = gvisor.run_plain(job)
    except AgentgwError as exc:
        stdout.write(render_failure("failed", exc.message, exc.hint))
        return 1
    stdout.write(render_outcome(outcome, job, backend="gvisor"))
    stdout.flush()
    return 0


def main() -> int:
    os.umask(0o077)
    return serve_one(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
