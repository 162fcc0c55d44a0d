"""The only place agentgw starts processes. Commands are argv lists, never shell strings."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

from agentgw.errors import AgentgwError, Exit
from agentgw.log import get_logger

log = get_logger(__name__)

Argv = Sequence[str | os.PathLike[str]]


@dataclass(frozen=True)
class Completed:
    """What a finished command left: argv, exit code and captured output (text)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def _argv(argv: Argv) -> list[str]:
    return [os.fspath(a) for a in argv]


class RunOptions(TypedDict, total=False):
    """How :func:`run` runs a command: ``check`` (default True) turns a non-zero exit into an
    AgentgwError naming the command and its stderr; ``input`` is its stdin; ``capture``
    (default True) collects stdout and stderr instead of passing them through."""

    check: bool
    input: str | bytes | None
    timeout: float | None
    capture: bool


def run(
    argv: Argv,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    **options: Unpack[RunOptions],
) -> Completed:
    """Run a command to completion and return its output as text (see :class:`RunOptions`)."""
    check, capture = options.get("check", True), options.get("capture", True)
    input, timeout = options.get("input"), options.get("timeout")
    args = _argv(argv)
    log.debug("run", argv=args)
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.run(  # noqa: S603 - argv list, never a shell
            args,
            input=data,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            timeout=timeout,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            check=False,
        )
    except FileNotFoundError as exc:
        raise AgentgwError(
            f"command not found: {args[0]}",
            hint="install the package that provides it (make setup does)",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise AgentgwError(f"command timed out after {timeout}s: {' '.join(args)}") from exc
    out = (proc.stdout or b"").decode(errors="replace")
    err = (proc.stderr or b"").decode(errors="replace")
    if check and proc.returncode != 0:
        detail = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
        raise AgentgwError(
            f"{args[0]} failed (exit {proc.returncode}): {detail}",
            hint="rerun with --debug for the full command and output",
            code=Exit.FAILED,
        )
    return Completed(tuple(args), proc.returncode, out, err)


def spawn(
    argv: Argv,
    *,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    new_session: bool = True,
    stdin_devnull: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a long-running process in the background (own session), output to ``log_path``."""
    args = _argv(argv)
    log.debug("spawn", argv=args)
    out = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(  # noqa: S603 - argv list, never a shell
            args,
            stdin=subprocess.DEVNULL if stdin_devnull else None,
            stdout=out,
            stderr=subprocess.STDOUT if log_path is not None else subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=new_session,
        )
    finally:
        if log_path is not None and not isinstance(out, int):
            out.close()


def popen_pipes(
    argv: Argv, *, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a process with stdin/stdout/stderr pipes (for request/response helpers)."""
    args = _argv(argv)
    log.debug("popen", argv=args)
    return subprocess.Popen(  # noqa: S603 - argv list, never a shell
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
    )


def exec_replace(argv: Argv, env: Mapping[str, str] | None = None) -> None:
    """Replace this process (used by ``lab exec`` so signals and exit codes pass through)."""
    args = _argv(argv)
    if env is None:
        os.execvp(args[0], args)  # noqa: S606
    os.execvpe(args[0], args, dict(env))  # noqa: S606


TimeoutExpired = subprocess.TimeoutExpired
Popen = subprocess.Popen[bytes]
