"""The CLI fork server (agentgw-cli.service, on agentgw-cli.socket): root's latency-bound
commands run in a child forked from a process that imported them once.

Start-up trick (STYLE.md), the only one with a process of its own (~46 MB resident). Benchmark
rows: bench_control's "promote overhead over bare restart + readiness" (through this server,
~40-80 ms) beside "promote overhead, in a process of its own (AGENTGW_CLI_FORK=0)" (~275-330
ms): a fresh Python spends ~150-250 ms on imports before a promote does anything. Pinned by
tests/unit/cli/test_forkserver.py (a command's output and exit status are the in-process
ones, a client's death kills its child, a changed installation is declined) and the lab's
tests/integration/control/test_cli_forkserver.py.

The client side is :mod:`agentgw.cli.entry`. Per connection, from root only (SO_PEERCRED; the
socket is 0600 root's as well): the header (argv, cwd, environment, umask, installation) and
the client's fds 0-2. The server declines (``no <why>``: the client runs the command itself)
when the client's installation is not this one or any file of it changed since this process
started (an upgrade: it then exits, and the socket starts a fresh one). Otherwise it forks,
answers ``started``, and once the child ended ``exit N`` or ``signal N``. The child is the
command: its fds 0-2 are the client's, its environment, cwd, umask and argv the client's; a
thread reads the connection, turning a byte into that signal and the client's end (EOF) into
SIGKILL.

SIGTERM (systemctl stop, an upgrade's restart): no new connection; the running commands end
first (the unit's KillMode=mixed kills them after TimeoutStopSec=, as a kill -9 would: the
next command repairs that).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from agentgw import unixsock
from agentgw.cli.entry import LENGTH, MAX_HEADER, SERVED, command_of, installation
from agentgw.errors import AgentgwError, usage
from agentgw.paths import Layout

PEERCRED = struct.Struct("3i")


def preload() -> None:
    """Import what the served commands run, and build their pydantic models."""
    from pydantic import BaseModel

    from agentgw import log
    from agentgw.cli import commands, main  # noqa: F401 - imported for their module load only

    for name in sorted(SERVED):
        commands.load(name)
    log.preload()
    # what the commands import where they use it (GatewayProbe.warm_up's list, and more)
    import agentgw.apply.history  # noqa: F401
    import agentgw.config.load  # noqa: F401
    import agentgw.model.history  # noqa: F401
    import agentgw.observe.health  # noqa: F401
    import agentgw.observe.startup  # noqa: F401
    import agentgw.observe.status  # noqa: F401

    stack: list[type[BaseModel]] = [BaseModel]
    while stack:
        for model in stack.pop().__subclasses__():
            stack.append(model)
            if model.__module__.startswith("agentgw.") and "[" not in model.__name__:
                with contextlib.suppress(Exception):  # one that cannot build fails when used
                    model.model_rebuild(force=True)


def stamp() -> dict[str, tuple[int, int]]:
    """Inode and mtime of every agentgw module loaded and of the site-packages dirs: an upgrade
    (dpkg, pip) writes new files, and adds or removes a dist-info."""
    paths = [m.__file__ for n, m in list(sys.modules.items())
             if n.startswith("agentgw") and getattr(m, "__file__", None)]
    paths += [p for p in sys.path if p.endswith("-packages")]
    out = {}
    for path in paths:
        with contextlib.suppress(OSError):
            st = os.stat(str(path))
            out[str(path)] = (st.st_ino, st.st_mtime_ns)
    return out


@dataclass
class Request:
    argv: list[str]
    cwd: str
    env: dict[str, str]
    umask: int
    fds: list[int]
    prefix: str
    package: str


def receive(conn: socket.socket) -> Request:
    """The client's header and fds (ValueError: not one)."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    try:
        if len(data) < LENGTH.size or len(fds) != 3:
            raise ValueError("no header with three fds")
        (size,) = LENGTH.unpack_from(data)
        if size > MAX_HEADER:
            raise ValueError("header too large")
        while len(data) < LENGTH.size + size:
            chunk = conn.recv(LENGTH.size + size - len(data))
            if not chunk:
                raise ValueError("header cut short")
            data += chunk
        doc = json.loads(data[LENGTH.size:])
        return Request(argv=[str(a) for a in doc["argv"]], cwd=str(doc["cwd"]),
                       env={str(k): str(v) for k, v in doc["env"].items()},
                       umask=int(doc["umask"]) & 0o777, fds=fds, prefix=str(doc["prefix"]),
                       package=str(doc["package"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        for fd in fds:
            os.close(fd)
        raise ValueError("not an agentgw client's header") from None


def _stream(fd: int, *, errors: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(open(fd, "wb" if fd else "rb", closefd=False),  # noqa: SIM115
                            encoding="utf-8", errors=errors,
                            line_buffering=os.isatty(fd), write_through=False)


def _watch(conn: socket.socket) -> None:
    """In the child: a byte from the client is a signal to take; its end, SIGKILL."""
    while True:
        try:
            data = conn.recv(64)
        except OSError:
            data = b""
        if not data:
            os.kill(os.getpid(), signal.SIGKILL)
        for signum in data:
            os.kill(os.getpid(), signum)


def become(request: Request, conn: socket.socket, inherited: list[int]) -> NoReturn:
    """In the child: take the client's process context, then run the command."""
    try:
        for fd in inherited:
            with contextlib.suppress(OSError):
                os.close(fd)
        for target, fd in enumerate(request.fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request.env)
        os.umask(request.umask)
        with contextlib.suppress(OSError):
            os.chdir(request.cwd)
        sys.argv = request.argv
        # sys.__stdout__ and the others keep their fd numbers, now the client's files
        sys.stdin = _stream(0, errors="strict")
        sys.stdout = _stream(1, errors="strict")
        sys.stderr = _stream(2, errors="backslashreplace")
        threading.Thread(target=_watch, args=(conn,), name="client", daemon=True).start()
        from agentgw.cli.main import run

        run()
    except BaseException:  # noqa: BLE001 - the child must never return to the server's loop
        # as Python ends a process on an uncaught exception: its traceback, status 1
        import traceback

        traceback.print_exc()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
    os._exit(1)  # run() itself always exits


@dataclass
class Server:
    listener: socket.socket
    started: dict[str, tuple[int, int]] = field(default_factory=dict)
    children: dict[int, tuple[int, socket.socket]] = field(default_factory=dict)  # pidfd ->
    stopping: bool = False
    private: list[int] = field(default_factory=list)  # the loop's own fds (not the child's)

    def decline(self, request: Request) -> str:
        if {"prefix": request.prefix, "package": request.package} != installation():
            return "another installation of agentgw"
        if stamp() != self.started:
            self.stopping = True  # an upgrade: a fresh server takes the next connection
            return "agentgw changed since this server started"
        return ""

    def accept(self, sel: selectors.BaseSelector) -> None:
        conn, _ = self.listener.accept()
        try:
            _pid, uid, _gid = PEERCRED.unpack(
                conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
            if uid != 0:
                conn.sendall(b"no root only\n")
                conn.close()
                return
            conn.settimeout(5)
            request = receive(conn)
        except (OSError, ValueError):
            conn.close()
            return
        why = self.decline(request)
        if why:
            for fd in request.fds:
                os.close(fd)
            with contextlib.suppress(OSError):
                conn.sendall(f"no {why}\n".encode())
            conn.close()
            return
        inherited = [self.listener.fileno(), *(f for pair in self.children.items()
                                                for f in (pair[0], pair[1][1].fileno()))]
        try:
            pid = os.fork()
        except OSError as exc:  # nothing ran: the client runs the command itself
            pid = -1
            with contextlib.suppress(OSError):
                conn.sendall(f"no fork: {exc.strerror}\n".encode())
        if pid == 0:
            conn.settimeout(None)
            become(request, conn, [*inherited, *self.private])
        for fd in request.fds:
            os.close(fd)
        if pid < 0:
            conn.close()
            return
        with contextlib.suppress(OSError):  # the journal's record of what ran here
            print(f"pid {pid}: agentgw {command_of(request.argv[1:])}", flush=True)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = (pid, conn)
        sel.register(pidfd, selectors.EVENT_READ)
        with contextlib.suppress(OSError):
            conn.sendall(b"started\n")

    def reap(self, sel: selectors.BaseSelector, pidfd: int) -> None:
        pid, conn = self.children.pop(pidfd)
        sel.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        line = (f"signal {os.WTERMSIG(status)}\n" if os.WIFSIGNALED(status)
                else f"exit {os.waitstatus_to_exitcode(status)}\n")
        with contextlib.suppress(OSError):
            conn.sendall(line.encode())
        conn.close()

    def loop(self) -> None:
        sel = selectors.DefaultSelector()
        wake, woken = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.private = [sel.fileno(), wake, woken]
        signal.set_wakeup_fd(woken)
        signal.signal(signal.SIGTERM, self.stop)
        sel.register(wake, selectors.EVENT_READ)
        sel.register(self.listener, selectors.EVENT_READ)
        while not self.stopping or self.children:
            if self.stopping and self.listener.fileno() >= 0:
                sel.unregister(self.listener)
                self.listener.close()
            for key, _ in sel.select():
                try:
                    if key.fd == wake:
                        with contextlib.suppress(OSError):
                            os.read(wake, 512)
                    elif key.fileobj is self.listener:
                        if not self.stopping:
                            self.accept(sel)
                    else:
                        self.reap(sel, key.fd)
                except Exception as exc:  # noqa: BLE001 - one connection's failure, not the server's
                    print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def stop(self, _signum: int, _frame: object) -> None:
        """SIGTERM: no new command; the loop ends once the running ones did."""
        self.stopping = True


def listener_socket(path: str | None) -> socket.socket:
    """systemd's socket (agentgw-cli.socket), else one made at ``path`` (tests, by hand)."""
    from agentgw.bus.daemon import listen_sockets

    passed = listen_sockets()
    if passed:
        return passed[0]
    target = Path(path) if path else Layout.from_env().cli_socket
    server = unixsock.Server(who="another fork server", unit="agentgw-cli", not_socket=usage,
                             not_socket_hint="remove it or pick another path",
                             fail_hint="run as root")
    return unixsock.listen(target, server, mode=0o600, dir_mode=0o755, backlog=64)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        listener = listener_socket(args[0] if args else None)
    except AgentgwError as exc:
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""),
              file=sys.stderr)
        sys.exit(int(exc.code))
    preload()
    Server(listener, started=stamp()).loop()


if __name__ == "__main__":
    main()
