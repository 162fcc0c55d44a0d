"""The CLI fork server (cli/forkserver.py) and its client (cli/entry.py), as real processes: a
command handed off gives the in-process command's output and status, the client's death or
signal reaches the command, and a server that is not this installation (or one that changed
since it started) declines, so the command runs in its own process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from agentgw.cli import entry
from agentgw.paths import Layout

PACKAGE = Path(entry.__file__).resolve().parents[1]
DECLINED = 99
CLIENT = ("import os, sys; from agentgw.cli import entry; sys.argv = ['agentgw', *sys.argv[2:]]; "
          "rc = entry.handoff(os.environ['T_SOCK']); "
          f"os._exit({DECLINED} if rc is None else rc)")
IN_PROCESS = ("import sys; sys.argv = ['agentgw', *sys.argv[1:]]; "
              "from agentgw.cli.main import run; run()")
SLEEPER = ("import sys, time; import agentgw.cli.main as m; s = float(sys.argv[2]); "
           "m.main = lambda argv=None: (print('sleeping', flush=True), time.sleep(s)); "
           "from agentgw.cli.forkserver import main; main([sys.argv[1]])")
# The command reports the process context it runs in.
CONTEXT = ("import json, os, sys; import agentgw.cli.main as m; "
           "m.main = lambda argv=None: print(json.dumps({'umask': os.umask(0), 'cwd': os.getcwd(), "
           "'x': os.environ.get('T_X'), 'argv': sys.argv, 'pid': os.getpid()})); "
           "from agentgw.cli.forkserver import main; main([sys.argv[1]])")


@dataclass
class Served:
    sock: Path
    proc: subprocess.Popen[bytes]
    pythonpath: str

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": self.pythonpath, "T_SOCK": str(self.sock), **extra}

    def client(self, *args: str, cwd: Path | None = None,
               **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", CLIENT, "x", *args], capture_output=True,
                              text=True, timeout=60, cwd=cwd, env=self.env(**env))

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children()


def copy_package(tmp: Path) -> str:
    """agentgw as an installation of its own (a file of it can change under the server)."""
    shutil.copytree(PACKAGE, tmp / "pkg" / "agentgw",
                    ignore=shutil.ignore_patterns("__pycache__"), symlinks=True)
    return str(tmp / "pkg")


def start(tmp: Path, *argv: str, pythonpath: str) -> Served:
    sock = tmp / "cli.sock"
    code = argv or ("-m", "agentgw.cli.forkserver", str(sock))
    proc = subprocess.Popen([sys.executable, *code], env={**os.environ, "PYTHONPATH": pythonpath},
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not sock.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    return Served(sock, proc, pythonpath)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("fork")
    server = start(tmp, pythonpath=copy_package(tmp))
    yield server
    server.proc.terminate()
    server.proc.wait(timeout=30)


def in_process(served: Served, *args: str, cwd: Path | None = None,
               **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", IN_PROCESS, *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, env=served.env(**env))


def test_a_handed_off_command_gives_the_in_process_output_and_status(
        served: Served, tmp_path: Path) -> None:
    """Exit codes 0-2, stdout and stderr byte for byte; --root relative to the caller's cwd
    and $AGENTGW_ROOT from the caller's environment (the child takes both)."""
    (tmp_path / "rel").mkdir()
    cases: list[tuple[tuple[str, ...], dict[str, str]]] = [
        (("--root", "rel", "history", "--json"), {}),
        (("history", "--json"), {"AGENTGW_ROOT": str(tmp_path / "rel")}),
        (("--root", "rel", "status", "--json"), {}),
        (("promote", "no such", "abc"), {}),
        (("history", "--no-such-option"), {}),
    ]
    codes = set()
    for args, env in cases:
        here = in_process(served, *args, cwd=tmp_path, **env)
        there = served.client(*args, cwd=tmp_path, **env)
        assert there.returncode != DECLINED, there.stderr
        assert (there.returncode, there.stdout, there.stderr) == \
            (here.returncode, here.stdout, here.stderr), args
        codes.add(here.returncode)
    assert {0, 2} <= codes


def test_the_command_runs_in_the_callers_context(tmp_path: Path) -> None:
    """umask, cwd, environment and argv are the caller's; the process is a new one each time."""
    server = start(tmp_path, "-c", CONTEXT, str(tmp_path / "cli.sock"),
                   pythonpath=str(PACKAGE.parent))
    try:
        pids = set()
        for umask, x in ((0o022, "one"), (0o077, "two")):
            code = f"import os; os.umask({umask}); " + CLIENT
            proc = subprocess.run([sys.executable, "-c", code, "x", "status", "--json"],
                                  capture_output=True, text=True, timeout=60, cwd=tmp_path,
                                  env=server.env(T_X=x))
            assert proc.returncode == 0, proc.stderr
            seen = json.loads(proc.stdout)
            assert (seen["umask"], seen["cwd"], seen["x"]) == (umask, str(tmp_path), x)
            assert seen["argv"][1:] == ["status", "--json"]
            pids.add(seen["pid"])
        assert len(pids) == 2 and server.proc.pid not in pids
    finally:
        server.proc.kill()
        server.proc.wait()


def test_another_installation_is_declined_and_runs_nothing(served: Served) -> None:
    proc = subprocess.run([sys.executable, "-c", CLIENT, "x", "history"], capture_output=True,
                          text=True, timeout=60,
                          env={**served.env(), "PYTHONPATH": str(PACKAGE.parent)})
    assert proc.returncode == DECLINED
    assert served.proc.poll() is None and served.children() == []


def test_non_root_cannot_connect(served: Served) -> None:
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-c", CLIENT, "x", "history"], capture_output=True,
                          text=True, timeout=60,
                          env={**served.env(), "PYTHONPATH": str(PACKAGE.parent)})
    assert proc.returncode == DECLINED, proc.stderr
    assert oct(served.sock.stat().st_mode & 0o777) == oct(0o600)


def test_a_changed_installation_is_declined_and_the_server_exits(tmp_path: Path) -> None:
    server = start(tmp_path, pythonpath=copy_package(tmp_path))
    try:
        assert server.client("history", "--no-such-option").returncode == 2
        module = Path(server.pythonpath) / "agentgw" / "cli" / "status.py"
        module.write_text(module.read_text())  # an upgrade rewrites the files
        assert server.client("history", "--no-such-option").returncode == DECLINED
        assert server.proc.wait(timeout=10) == 0
    finally:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[Served]:
    """A server whose commands sleep (argv[2] seconds): what a long promote looks like."""
    server = start(tmp_path, "-c", SLEEPER, str(tmp_path / "cli.sock"), "30",
                   pythonpath=str(PACKAGE.parent))
    yield server
    server.proc.kill()
    server.proc.wait()


def wait_for(predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.02)


def spawn_client(server: Served, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CLIENT, "x", *args], env=server.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_clients_sigkill_kills_the_command(sleeper: Served) -> None:
    with spawn_client(sleeper, "promote", "api", "abc") as client:
        assert client.stdout is not None and client.stdout.readline() == "sleeping\n"
        (child,) = sleeper.children()
        client.kill()
    child.wait(timeout=10)  # killed, and reaped by the server
    wait_for(lambda: sleeper.children() == [])
    assert sleeper.proc.poll() is None


def test_a_signal_to_the_client_is_the_commands(sleeper: Served) -> None:
    """SIGTERM is passed on; the command dies of it, and so does the client (as it would have
    in process)."""
    with spawn_client(sleeper, "promote", "api", "abc") as client:
        assert client.stdout is not None and client.stdout.readline() == "sleeping\n"
        client.send_signal(signal.SIGTERM)
        assert client.wait(timeout=10) == -signal.SIGTERM
    wait_for(lambda: sleeper.children() == [])


def test_sigterm_lets_the_running_command_finish(tmp_path: Path) -> None:
    server = start(tmp_path, "-c", SLEEPER, str(tmp_path / "cli.sock"), "1.5",
                   pythonpath=str(PACKAGE.parent))
    try:
        with spawn_client(server, "status") as client:
            assert client.stdout is not None and client.stdout.readline() == "sleeping\n"
            server.proc.terminate()
            time.sleep(0.3)
            assert server.proc.poll() is None  # waits for its command
            assert client.wait(timeout=10) == 0
        assert server.proc.wait(timeout=10) == 0
        with socket.socket(socket.AF_UNIX) as probe, pytest.raises(OSError):
            probe.connect(str(server.sock))
    finally:
        server.proc.kill()
        server.proc.wait()


@pytest.mark.parametrize(("args", "expected"), [
    (["promote", "api", "abc"], "promote"),
    (["--debug", "--root", "/x", "status"], "status"),
    (["--root=/x", "history", "--json"], "history"),
    (["--help"], None),
    (["--version"], None),
    (["apply"], "apply"),
    ([], None),
])
def test_the_command_after_the_global_options(args: list[str], expected: str | None) -> None:
    assert entry.command_of(args) == expected


def test_who_is_handed_off() -> None:
    assert entry.eligible(["promote", "api", "x"], {}, 0)
    assert not entry.eligible(["promote", "api", "x"], {}, 1000)  # through sudo, then root
    assert not entry.eligible(["apply"], {}, 0)
    assert not entry.eligible(["promote"], {entry.OFF_ENV: "0"}, 0)
    assert entry.eligible(["promote"], {entry.OFF_ENV: "1"}, 0)


def test_the_clients_socket_is_the_layouts() -> None:
    assert entry.SOCKET == str(Layout(Path("/")).cli_socket)


def test_status_lines() -> None:
    assert entry.decode_status(b"exit 3\n") == ("exit", 3)
    assert entry.decode_status(b"signal 9\n") == ("signal", 9)
    assert entry.decode_status(b"") is None
    assert entry.decode_status(b"exit x\n") is None


def test_the_client_imports_no_library() -> None:
    """What makes a handed-off command cheap: the console script's module loads the standard
    library alone (and agentgw's package, which imports os)."""
    code = ("import sys, agentgw.cli.entry; print(sorted({m.split('.')[0] for m in sys.modules} "
            "& {'click', 'pydantic', 'yaml', 'psutil', 'pystemd', 'structlog', 'agentgw.cli.main'}"
            "), sorted(m for m in sys.modules if m.startswith('agentgw')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split("] ")
    assert out[0] == "["
    assert out[1].strip() == "['agentgw', 'agentgw.cli', 'agentgw.cli.entry']"


def test_a_bad_client_is_dropped_and_the_server_goes_on(served: Served) -> None:
    for junk in (b"", b"garbage", entry.LENGTH.pack(10**9)):
        with socket.socket(socket.AF_UNIX) as bad:
            bad.connect(str(served.sock))
            bad.sendall(junk)
            bad.shutdown(socket.SHUT_WR)
            assert bad.recv(64) in (b"", b"no ")  # dropped, nothing started
    assert served.client("history", "--no-such-option").returncode == 2
    assert served.proc.poll() is None and served.children() == []


RAISER = ("import sys; import agentgw.cli.main as m; "
          "m.main = lambda argv=None: (_ for _ in ()).throw(RuntimeError('boom')); ")


def test_an_uncaught_error_ends_the_command_as_python_would(tmp_path: Path) -> None:
    """Its traceback on the caller's stderr and status 1, as in a process of its own."""
    server = start(tmp_path, "-c", RAISER + "from agentgw.cli.forkserver import main; "
                   "main([sys.argv[1]])", str(tmp_path / "cli.sock"),
                   pythonpath=str(PACKAGE.parent))
    try:
        there = server.client("status")
        here = subprocess.run([sys.executable, "-c", RAISER + "m.run()"], capture_output=True,
                              text=True, timeout=60, env=server.env())
        assert there.returncode == here.returncode == 1
        assert there.stderr.splitlines()[-1] == here.stderr.splitlines()[-1] == \
            "RuntimeError: boom"
        assert server.proc.poll() is None
    finally:
        server.proc.kill()
        server.proc.wait()


def test_started_and_the_status_in_one_read_run_the_command_once(tmp_path: Path) -> None:
    """A slow client may find both of the server's lines at once: that is still the command's
    status, not a refusal (which would run the command a second time, here)."""
    path = tmp_path / "one.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)
        client = subprocess.Popen([sys.executable, "-c", CLIENT, "x", "history"],
                                  env={**os.environ, "T_SOCK": str(path),
                                       "PYTHONPATH": str(PACKAGE.parent)})
        conn, _ = server.accept()
        with conn:
            _data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
            for fd in fds:
                os.close(fd)
            conn.sendall(b"started\nexit 3\n")
            assert client.wait(timeout=30) == 3


def test_a_second_server_leaves_a_live_socket_alone(served: Served) -> None:
    proc = subprocess.run([sys.executable, "-m", "agentgw.cli.forkserver", str(served.sock)],
                          capture_output=True, text=True, timeout=60, env=served.env())
    assert proc.returncode == 1 and "is serving on it" in proc.stderr, proc.stderr
    assert served.client("history", "--no-such-option").returncode == 2
