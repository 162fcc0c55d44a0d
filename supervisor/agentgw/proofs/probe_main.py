"""The probe program: tries what a compromised gateway would try, and reports what happened.

``verify`` runs it as ``python3 -I -S -c <this source> <spec>`` in a transient unit that has the
gateway's own user and sandbox properties, so every answer here is the kernel's answer to the
gateway. stdlib only (it runs under the gateway's ExecPaths, without the supervisor's venv);
it never judges, it only records: ``ok`` plus the errno name (or ``timeout``) of each attempt.
Prints one JSON line.

The spec (JSON) has optional lists: ``read`` ({path, op: listdir|read}), ``connect`` ({host,
port, udp_port}, tried in parallel for ``timeout`` seconds), ``tools`` ({tool, paths}),
``write`` (directories), ``devices`` (paths), ``unshare`` (namespace names), ``processes``
(pids). Each result repeats its spec entry.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import shutil
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

CLONE_FLAGS = {"mnt": 0x00020000, "user": 0x10000000, "net": 0x40000000, "pid": 0x20000000}
# PTRACE_SEIZE: the same permission check as PTRACE_ATTACH, without stopping the target.
PTRACE_SEIZE = 0x4206
TOOL_WAIT_S = 2.0
Result = dict[str, Any]


def errname(number: int | None) -> str:
    return errno.errorcode.get(number or 0, str(number))


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def try_read(path: str, op: str) -> Result:
    """List a directory or read a file's first byte (the content is never reported)."""
    try:
        if op == "listdir":
            return {"ok": True, "entries": len(os.listdir(path))}
        with open(path, "rb") as f:
            f.read(1)
        return {"ok": True}
    except OSError as exc:
        return {"ok": False, "errno": errname(exc.errno)}


def try_connects(targets: list[Result], timeout: float) -> list[Result]:
    """TCP connects to every target at once (a denied SYN is dropped: only a deadline ends it),
    plus one UDP datagram each (the cgroup firewall refuses a send with EPERM at once)."""
    results: list[Result] = []
    pending: dict[socket.socket, Result] = {}
    for target in targets:
        result: Result = dict(target)
        results.append(result)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setblocking(False)
        code = tcp.connect_ex((target["host"], int(target["port"])))
        if code == errno.EINPROGRESS:
            pending[tcp] = result
        else:
            result["tcp"] = "connected" if code == 0 else errname(code)
            tcp.close()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.sendto(b"agentgw-probe", (target["host"], int(target["udp_port"])))
            result["udp"] = "sent"
        except OSError as exc:
            result["udp"] = errname(exc.errno)
        finally:
            udp.close()
    deadline = time.monotonic() + timeout
    while pending and (left := deadline - time.monotonic()) > 0:
        _, writable, _ = select.select([], list(pending), [], left)
        for sock in writable:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            pending.pop(sock)["tcp"] = "connected" if code == 0 else errname(code)
            sock.close()
    for sock, result in pending.items():
        result["tcp"] = "timeout"
        sock.close()
    return results


def try_spawn(path: str) -> str:
    """Run ``path --version`` with no stdio; "ran (exit N)" or the exec errno."""
    devnull = os.POSIX_SPAWN_OPEN
    actions = [
        (devnull, 0, "/dev/null", os.O_RDONLY, 0),
        (devnull, 1, "/dev/null", os.O_WRONLY, 0),
        (devnull, 2, "/dev/null", os.O_WRONLY, 0),
    ]
    try:
        pid = os.posix_spawn(path, [path, "--version"], {}, file_actions=actions)
    except OSError as exc:
        return errname(exc.errno)
    deadline = time.monotonic() + TOOL_WAIT_S
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return f"ran (exit {os.waitstatus_to_exitcode(status)})"
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return "ran (killed after timeout)"


def try_tool(tool: str, paths: list[str]) -> Result:
    """Whether a denied tool can be found on PATH, opened or run."""
    found = shutil.which(tool) if "/" not in tool else None
    attempts = []
    for path in [*paths, *([found] if found and found not in paths else [])]:
        attempt: Result = {"path": path}
        try:
            attempt["stat"] = f"mode {os.stat(path).st_mode & 0o7777:04o}"
        except OSError as exc:
            attempt["stat"] = errname(exc.errno)
        try:
            os.close(os.open(path, os.O_RDONLY))
            attempt["open"] = "opened"
        except OSError as exc:
            attempt["open"] = errname(exc.errno)
        attempt["exec"] = try_spawn(path)
        attempts.append(attempt)
    return {"which": found, "attempts": attempts}


def try_write(directory: str) -> Result:
    """Create (and at once remove) a file in ``directory``."""
    path = os.path.join(directory, f".agentgw-probe-{os.getpid()}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return {"ok": False, "errno": errname(exc.errno)}
    os.close(fd)
    os.unlink(path)
    return {"ok": True}


def try_open_device(path: str) -> Result:
    try:
        os.close(os.open(path, os.O_RDWR))
    except OSError as exc:
        return {"ok": False, "errno": errname(exc.errno)}
    return {"ok": True}


def try_unshare(name: str) -> Result:
    """unshare(2) in a forked child, so a namespace that is granted never touches the probe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        libc = _libc()
        code = 0 if libc.unshare(CLONE_FLAGS[name]) == 0 else ctypes.get_errno()
        os.write(write_end, str(code).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        answer = f.read().decode() or "-1"
    os.waitpid(pid, 0)
    code = int(answer)
    return {"ok": code == 0, "errno": None if code == 0 else errname(code)}


def try_process(pid: int) -> Result:
    """Whether another process is visible, and its environ, memory or ptrace reachable."""
    proc = f"/proc/{pid}"
    result: Result = {"visible": os.path.exists(proc)}
    for name, path in (("environ", f"{proc}/environ"), ("mem", f"{proc}/mem")):
        try:
            with open(path, "rb") as f:
                f.read(1)
            result[name] = "read"
        except OSError as exc:
            result[name] = errname(exc.errno)
    libc = _libc()
    code = libc.ptrace(ctypes.c_long(PTRACE_SEIZE), ctypes.c_long(pid), None, None)
    result["ptrace"] = "attached" if code == 0 else errname(ctypes.get_errno())
    return result


def _guarded(fn: Callable[..., Result], *args: Any) -> Result:
    """A probe that crashes reports the crash instead of losing every other answer."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - any failure is an observation to report
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def run_probes(spec: Result) -> Result:
    out: Result = {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid()}
    out["read"] = [{**e, **_guarded(try_read, e["path"], e["op"])} for e in spec.get("read", [])]
    connects = spec.get("connect", [])
    out["connect"] = try_connects(connects, float(spec.get("timeout", 0.5))) if connects else []
    out["tools"] = [
        {**e, **_guarded(try_tool, e["tool"], e["paths"])} for e in spec.get("tools", [])
    ]
    out["write"] = [{"path": d, **_guarded(try_write, d)} for d in spec.get("write", [])]
    out["devices"] = [{"path": d, **_guarded(try_open_device, d)} for d in spec.get("devices", [])]
    out["unshare"] = [
        {"namespace": n, **_guarded(try_unshare, n)} for n in spec.get("unshare", [])
    ]
    out["processes"] = [
        {**e, **_guarded(try_process, int(e["pid"]))} for e in spec.get("processes", [])
    ]
    return out


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1]) if len(argv) > 1 else {}
    sys.stdout.write(json.dumps(run_probes(spec), sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
