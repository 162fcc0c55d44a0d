"""The lab host of :mod:`agentgw.lab.host` for these tests, and what they read back from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentgw.lab.host import AGENTGW, ETC, KEY, OPT, PROFILES, Releases, agentgw
from agentgw.lab.host import setup_host as setup_lab_host

__all__ = ["AGENTGW", "ETC", "KEY", "OPT", "PATH_ONLY", "PROFILES", "REPO", "Releases",
           "agentgw", "all_promoted", "current", "main_pid", "paused_promote", "setup_host", "sh",
           "status_json"]

REPO = Path(__file__).resolve().parents[2]
# An environment of nothing but a system PATH (for commands that must not see the caller's).
PATH_ONLY = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def sh(*argv: str, check: bool = False, env: dict[str, str] | None = None,
       timeout: float | None = None, user: str | None = None
       ) -> subprocess.CompletedProcess[str]:
    """Run a command in the lab and capture its text output; as ``user`` (setpriv, with that
    user's groups) when given; CalledProcessError on a non-zero exit only with ``check``."""
    if user is not None:
        argv = ("setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv)
    return subprocess.run(argv, capture_output=True, text=True, check=check, env=env,
                          timeout=timeout)


def setup_host(build: Path) -> Releases:
    """:func:`agentgw.lab.host.setup_host` with this checkout's gateways and releases."""
    return setup_lab_host(REPO, build)


def main_pid(profile: str) -> tuple[int, str]:
    """MainPID and its start time (ExecMainStartTimestampMonotonic) of a profile's unit."""
    out = subprocess.run(
        ["systemctl", "show", "-P", "MainPID", f"agent-gateway@{profile}.service"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    pid = int(out)
    started = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[19] if pid else ""
    return pid, started


def current(profile: str) -> str:
    return (OPT / "gateways" / profile / "current").resolve().name


def status_json(profile: str) -> dict[str, object]:
    doc = json.loads(agentgw("status", profile, "--json", check=False).stdout)
    row = doc["profiles"][0]
    assert isinstance(row, dict)
    return row


@contextmanager
def all_promoted(build: Path) -> Iterator[Releases]:
    """The host of ``setup_host`` with all three profiles running release A.

    The lab is shared by the session: a profile that had no release promoted before is
    stopped, disabled and unpromoted again afterwards, as later modules expect to find it.
    """
    unpromoted = [p for p in PROFILES if not (OPT / "gateways" / p / "current").is_symlink()]
    releases = setup_host(build)
    for p in PROFILES:
        agentgw("promote", p, releases.a, "--allow-downgrade")
    try:
        yield releases
    finally:
        for p in unpromoted:
            unit = f"agent-gateway@{p}.service"
            for verb in ("stop", "disable", "reset-failed"):
                subprocess.run(["systemctl", verb, unit], capture_output=True, check=False)
            for link in ("current", "previous"):
                (OPT / "gateways" / p / link).unlink(missing_ok=True)


@contextmanager
def paused_promote(profile: str, target: str, phase: str) -> Iterator[subprocess.Popen[str]]:
    """``agentgw promote`` held at the fault point ``phase`` (AGENTGW_FAULT_PAUSE): yielded
    once it says so, SIGKILLed when the block ends."""
    env = dict(os.environ, AGENTGW_FAULT_PAUSE=phase)
    proc = subprocess.Popen([AGENTGW, "promote", profile, target, "--allow-downgrade"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        deadline = time.monotonic() + 60
        for line in proc.stderr:
            if line.startswith(f"agentgw: paused at {phase}"):
                break
            assert time.monotonic() < deadline
        yield proc
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
