"""Built releases of the demo runtime, installed in a fake host, and running gateways to probe.

``scripts/build-releases`` builds the trees once per session; each test installs the ones it
needs under its tmp_path as ``agentgw release add`` + promote would (a release dir with a
manifest, the profile's current symlink, home and logs), and starts gateways the way the
launcher execs them, with a NOTIFY_SOCKET of the test's own to learn when they are ready.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
PYTHON = "/usr/bin/python3"
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Built:
    label: str
    sha: str
    tree: Path


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    """Every release scripts/build-releases makes (good and each variant), by label."""
    out = tmp_path_factory.mktemp("build")
    result = subprocess.run(
        [str(REPO / "scripts" / "build-releases"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    trees = {}
    for line in result.stdout.splitlines():
        label, sha, tree = line.split()
        trees[label] = Built(label, sha, Path(tree))
    return trees


@dataclass(frozen=True)
class Profile:
    """One profile of the fake host, promoted to one release."""

    name: str
    opt: Path
    release: Path
    sha: str
    port: int
    drain_s: float = 5.0

    @property
    def current(self) -> Path:
        return self.opt / "gateways" / self.name / "current"

    @property
    def home(self) -> Path:
        return self.opt / "gateways" / self.name / "home"

    def env(self, notify: str, **changes: str) -> dict[str, str]:
        """The profile's environment as the launcher passes it on (see agentgw.plan.envfile)."""
        env = {
            "AGENT_PROFILE": self.name,
            "AGENT_ROOT": str(self.current),
            "PYTHONPATH": str(self.current),
            "AGENT_HOME": str(self.home),
            "AGENT_LOGS": str(self.home.parent / "logs"),
            "AGENT_GATEWAY_MODE": "cli",
            "AGENT_LISTEN": f"127.0.0.1:{self.port}",
            "AGENT_HEALTH_PATH": "/v1/health",
            "AGENT_DRAIN_S": f"{self.drain_s:g}",
            "NOTIFY_SOCKET": notify,
        }
        env.update(changes)
        return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Notifications:
    """A NOTIFY_SOCKET like systemd's: a unix datagram socket, by path or abstract name."""

    sock: socket.socket
    address: str

    def next(self, timeout_s: float = TIMEOUT_S) -> str:
        self.sock.settimeout(timeout_s)
        return self.sock.recv(4096).decode()

    def ready(self) -> str:
        """The next READY=1 message, past others (a replaced instance's STOPPING=1)."""
        while not (message := self.next()).startswith("READY=1"):
            pass
        return message


@pytest.fixture
def notifications(tmp_path: Path) -> Iterator[Notifications]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    with sock:
        yield Notifications(sock, str(path))


@dataclass
class Gateway:
    """A running gateway process and what it said."""

    proc: subprocess.Popen[str]
    port: int
    ready: str = ""

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 - http to loopback
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> tuple[int, str]:
        """SIGTERM, then the exit code and stderr."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=TIMEOUT_S)
        return self.proc.returncode, err


class Host:
    """Installs built releases for profiles and starts their gateways; kills leftovers."""

    def __init__(self, tmp_path: Path, built: dict[str, Built]) -> None:
        self.opt = tmp_path / "opt" / "agent"
        self.built = built
        self.procs: list[subprocess.Popen[str]] = []

    def promote(self, name: str, label: str = "good", drain_s: float = 5.0) -> Profile:
        """Add the built release (tree + manifest, as release add); point name's current at it."""
        build = self.built[label]
        release = self.opt / "releases" / f"{build.sha}-{label}"
        if not release.exists():
            shutil.copytree(build.tree, release)
            manifest = {"sha": build.sha, "label": label, "version": 1, "files": []}
            (release / "manifest.json").write_text(json.dumps(manifest))
        pdir = self.opt / "gateways" / name
        for sub in ("home", "logs"):
            (pdir / sub).mkdir(parents=True, exist_ok=True)
        (pdir / "current").unlink(missing_ok=True)
        (pdir / "current").symlink_to(Path("../../releases") / release.name)
        return Profile(name, self.opt, release, build.sha, free_port(), drain_s)

    def spawn(self, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        return proc

    def start(
        self,
        profile: Profile,
        notify: Notifications,
        *args: str,
        argv: list[str] | None = None,
        wait_ready: bool = True,
        **env: str,
    ) -> Gateway:
        """Start the gateway as the launcher would exec it; by default wait for READY=1."""
        command = argv or [PYTHON, "-s", "-P", "-m", "agent_cli.main", "gateway", "run", *args]
        proc = self.spawn(command, profile.env(notify.address, **env), profile.home)
        gateway = Gateway(proc, profile.port)
        if wait_ready:
            gateway.ready = notify.ready()
        return gateway

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=TIMEOUT_S)


@pytest.fixture
def host(tmp_path: Path, built: dict[str, Built]) -> Iterator[Host]:
    fake = Host(tmp_path, built)
    try:
        yield fake
    finally:
        fake.kill_all()


def start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat, read independently of agent_cli's own code."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[19])


@pytest.fixture
def bystander(host: Host) -> subprocess.Popen[str]:
    """A live process that is not a gateway (stands in for a sibling's, or a reused pid)."""
    return host.spawn(["/bin/sleep", "60"], {}, Path("/"))


def alive(proc: subprocess.Popen[str]) -> bool:
    return proc.poll() is None and os.path.exists(f"/proc/{proc.pid}")
