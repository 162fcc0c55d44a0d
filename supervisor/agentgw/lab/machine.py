"""Boot, enter and tear down a lab machine.

State lives in ``<base>/<name>/``: ``state.json`` (pids and their start times), ``console.log``,
the tmpfs ``ovl/`` (overlay upper + work) and the overlay ``root/``. ``down`` removes every mount
and process it recorded, and also repairs a half-finished ``up`` (mounts without state, a dead
nspawn) so a kill -9 at any step is recovered by the next ``down``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict
from pathlib import Path
from typing import Unpack

import psutil

from agentgw import run
from agentgw.errors import AgentgwError, Exit, usage
from agentgw.fsio import write_atomic
from agentgw.lab import cgroups, link
from agentgw.lab.spec import (
    CGROUP_MODES,
    DEFAULT_BASE,
    DEFAULT_NAME,
    IN_LAB_ENV,
    NAME_RE,
    LabSpec,
    LabState,
    check_available,
    check_name,
)
from agentgw.log import get_logger

log = get_logger(__name__)

TARGET = "agentgw-lab.target"

# nspawn processes this process started: kept so they are reaped, not dropped while running.
_CHILDREN: dict[int, run.Popen] = {}

# The boot target: only basic.target and D-Bus, so the host's enabled services never start.
TARGET_UNIT = """\
[Unit]
Description=agentgw lab
Requires=basic.target dbus.socket
After=basic.target dbus.socket
AllowIsolate=yes
"""

# Variables passed from the caller into commands run inside; the rest of the env is not.
PASSED_ENV = ("TERM", "LANG", "LC_ALL", "PYTHONDONTWRITEBYTECODE", "HYPOTHESIS_PROFILE")


def _mounted(path: Path) -> bool:
    target = os.fspath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(line.split()[4] == target for line in f)


def _same_process(pid: int, started: float) -> bool:
    """True when ``pid`` is still the process we started (not a reused pid)."""
    try:
        return abs(psutil.Process(pid).create_time() - started) < 0.01
    except psutil.Error:
        return False


class Lab:
    """A booted lab machine. Create with :meth:`up`, find again with :meth:`find`."""

    def __init__(self, state: LabState) -> None:
        self.state = state

    # -- discovery -------------------------------------------------------------------------
    @staticmethod
    def state_path(base: Path, name: str) -> Path:
        return base / name / "state.json"

    @classmethod
    def find(cls, name: str = DEFAULT_NAME, base: Path = DEFAULT_BASE) -> Lab | None:
        path = cls.state_path(base, check_name(name))
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return cls(LabState(**data))

    @classmethod
    def names(cls, base: Path = DEFAULT_BASE) -> list[str]:
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and NAME_RE.fullmatch(p.name))

    @property
    def dir(self) -> Path:
        return Path(self.state.dir)

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def name(self) -> str:
        return self.state.name

    def alive(self) -> bool:
        spawned = _same_process(self.state.nspawn_pid, self.state.nspawn_started)
        return spawned and psutil.pid_exists(self.state.leader_pid)

    # -- boot ------------------------------------------------------------------------------
    @classmethod
    def up(cls, spec: LabSpec) -> Lab:
        """Boot a lab and wait until its systemd reports ``running``. Cleans up on any failure."""
        check_available()
        check_name(spec.name)
        if spec.cgroups not in CGROUP_MODES:
            raise usage(f"unknown cgroup mode {spec.cgroups!r}",
                        hint="--cgroups unified (default) or hybrid")
        existing = cls.find(spec.name, spec.base)
        if existing is not None and existing.alive():
            raise AgentgwError(
                f"lab {spec.name!r} is already up (nspawn pid {existing.state.nspawn_pid})",
                hint=f"use it, or run 'agentgw lab down --name {spec.name}' first",
                code=Exit.USAGE,
            )
        # A leftover of a killed up/down: repair before booting again.
        cls.teardown(spec.name, spec.base)
        lab_dir = spec.base / spec.name
        state = LabState(
            name=spec.name,
            dir=os.fspath(lab_dir),
            bpf=spec.bpf,
            binds=[os.fspath(b) for b in spec.binds],
            cgroups=spec.cgroups,
            link_netns=spec.link.netns if spec.link else "",
        )
        lab = cls(state)
        t0 = time.monotonic()
        try:
            lab._mount()
            lab._write_state()
            lab._boot(spec)
            lab._wait_running(spec.boot_timeout)
            if spec.link is not None:
                lab._start_sshd(spec.link)
        except BaseException:
            cls.teardown(spec.name, spec.base)
            raise
        state.boot_seconds = round(time.monotonic() - t0, 3)
        lab._write_state()
        log.info("lab_up", name=spec.name, seconds=state.boot_seconds)
        return lab

    def _start_sshd(self, spec: link.LinkSpec) -> None:
        sshd = link.find_sshd()
        link.write_config(self.root, self.name, spec)
        result = self.exec(["sh", "-c", link.setup_script(self.name, sshd)], check=False,
                           timeout=30)
        if result.returncode != 0:
            raise AgentgwError(
                f"the lab's sshd did not start: {result.stderr.strip()[-400:]}",
                hint=f"see {self.dir / 'console.log'}",
            )
        self.state.address = link.addresses(self.name)[0]
        self.state.host_key = link.host_key(self.root)

    def _mount(self) -> None:
        ovl, root = self.dir / "ovl", self.root
        ovl.mkdir(parents=True, exist_ok=True)
        root.mkdir(exist_ok=True)
        run.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", ovl])
        (ovl / "upper").mkdir()
        (ovl / "work").mkdir()
        options = f"lowerdir=/,upperdir={ovl / 'upper'},workdir={ovl / 'work'}"
        run.run(["mount", "-t", "overlay", "overlay", "-o", options, root])
        units = root / "etc/systemd/system"
        (units / TARGET).write_text(TARGET_UNIT)

    def _boot(self, spec: LabSpec) -> None:
        argv: list[str | os.PathLike[str]] = [
            "systemd-nspawn",
            "--quiet",
            "-D",
            self.root,
            "-M",
            spec.name,
            "--register=no",
            "--keep-unit",
        ]
        if spec.link is not None:
            # A private network whose only link is the lab end of the pair.
            own = link.create_pair(spec.name, spec.link.netns)
            argv.append(f"--network-namespace-path={os.fspath(own)}")
        elif spec.private_network:
            # Its own loopback: gateways in two labs (or a lab and the host) never collide
            # on 127.77.0.N:port, and nothing inside reaches the network.
            argv.append("--private-network")
        if spec.bpf:
            argv.append("--system-call-filter=bpf")
        if spec.kvm and Path("/dev/kvm").exists():
            argv.append("--bind=/dev/kvm")
        for bind in spec.binds:
            argv.append(f"--bind={os.fspath(bind)}:{os.fspath(bind)}")
        env = dict(os.environ)
        found = cgroups.hierarchies()
        if spec.cgroups == "hybrid":
            missing = cgroups.missing_for_hybrid(found)
            if missing:
                raise usage(
                    "a hybrid lab needs the host's v1 hierarchies of "
                    f"{', '.join(cgroups.DELEGATED)} and a cgroup2 mount; missing: "
                    + ", ".join(missing),
                    hint="boot with --cgroups unified (the resource limits then are not "
                    "enforced inside)",
                )
            # nspawn picks hybrid from the host when not told otherwise; PID 1 is the shell
            # that makes the delegated controllers writable, then execs systemd.
            env.pop("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", None)
            argv += ["--kill-signal=SIGRTMIN+3", "--", "/bin/sh", "-c",
                     cgroups.init_script(cgroups.DELEGATED, TARGET)]
        else:
            # cgroup v2 inside: without it IPAddressDeny= is silently not enforced (LAB.md).
            env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
            argv += ["--boot", "--", f"systemd.unit={TARGET}"]
        groups = [h.group(spec.name) for h in cgroups.wanted(found, spec.cgroups == "hybrid")]
        self.state.groups = [os.fspath(g) for g in groups]
        self._write_state()
        cgroups.create(groups)
        env["AGENTGW_LAB_CGROUPS"] = " ".join(self.state.groups)
        wrapped = ["/bin/sh", "-c", cgroups.enter_script(), "sh", *argv]
        proc = run.spawn(wrapped, log_path=self.dir / "console.log", env=env)
        _CHILDREN[proc.pid] = proc
        self.state.nspawn_pid = proc.pid
        self.state.nspawn_started = psutil.Process(proc.pid).create_time()
        self._write_state()

    def _wait_running(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not _same_process(self.state.nspawn_pid, self.state.nspawn_started):
                raise AgentgwError(
                    "the lab's systemd-nspawn exited during boot",
                    hint=f"see {self.dir / 'console.log'}",
                )
            if not self.state.leader_pid or not psutil.pid_exists(self.state.leader_pid):
                self.state.leader_pid = self._find_init()
                if self.state.leader_pid:
                    self._write_state()
            if self.state.leader_pid:
                result = self.exec(["systemctl", "is-system-running"], check=False, timeout=10)
                last = result.stdout.strip()
                if last in ("running", "degraded"):
                    if last == "degraded":
                        failed = self.exec(["systemctl", "--failed", "--no-legend"], check=False)
                        log.warning("lab_degraded", failed=failed.stdout.strip())
                    return
            time.sleep(0.05)
        raise AgentgwError(
            f"the lab did not reach 'running' within {timeout:.0f}s (last state: {last or '?'})"
            f"; console: {self._console_tail()}",
            hint=f"see {self.dir / 'console.log'}",
        )

    def _console_tail(self) -> str:
        """The end of the boot log, for errors: the lab's directory is gone after teardown."""
        try:
            return (self.dir / "console.log").read_text(errors="replace")[-600:].strip()
        except OSError:
            return "(no console.log)"

    def _find_init(self) -> int:
        """The container's PID 1: the child of nspawn running systemd. nspawn's first child can
        be its short-lived intermediate process, so match on what runs, not on order."""
        with suppress(psutil.Error):
            for child in psutil.Process(self.state.nspawn_pid).children():
                with suppress(psutil.Error):
                    if Path(child.exe()).name == "systemd" or child.name() == "systemd":
                        return int(child.pid)
        return 0

    def _write_state(self) -> None:
        path = self.dir / "state.json"
        write_atomic(path, json.dumps(asdict(self.state), indent=2), tmp=path.with_suffix(".tmp"))

    # -- use -------------------------------------------------------------------------------
    def nsenter_argv(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> list[str]:
        """The host command that runs ``argv`` inside the lab as root, with a clean env."""
        if not self.state.leader_pid:
            raise AgentgwError(f"lab {self.name!r} has no running init", hint="agentgw lab up")
        wd = os.fspath(cwd) if cwd is not None else "/"
        base_env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            IN_LAB_ENV: "1",
            "AGENTGW_LAB_NAME": self.name,
        }
        for key in PASSED_ENV:
            if key in os.environ:
                base_env[key] = os.environ[key]
        base_env.update(env or {})
        pairs = [f"{k}={v}" for k, v in sorted(base_env.items())]
        return [
            "nsenter",
            "-t",
            str(self.state.leader_pid),
            "-a",
            # env --chdir, not nsenter --wd: --wd opens the directory on the host side, and a
            # bind-mounted checkout then has no reachable path inside (getcwd fails).
            "env",
            "-i",
            f"--chdir={wd}",
            *pairs,
            *argv,
        ]

    def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        **options: Unpack[run.RunOptions],
    ) -> run.Completed:
        """Run a command inside the lab and return its result."""
        return run.run(self.nsenter_argv(argv, env=env, cwd=cwd), **options)

    # -- tear down -------------------------------------------------------------------------
    def down(self) -> None:
        self.teardown(self.name, Path(self.state.dir).parent)

    @classmethod
    def teardown(cls, name: str, base: Path = DEFAULT_BASE) -> bool:
        """Power off and remove every process and mount of lab ``name``. True if anything was."""
        lab_dir = base / check_name(name)
        if not lab_dir.exists():
            return False
        lab = cls.find(name, base)
        if lab is not None:
            lab._stop()
        if lab is not None and lab.state.link_netns:
            link.remove_pair(name, lab.state.link_netns)
        for mount in (lab_dir / "root", lab_dir / "ovl"):
            cls._umount(mount)
        if lab is not None:
            left = cgroups.remove(Path(g) for g in lab.state.groups)
            if left:
                log.warning("lab_cgroups_left", name=name, groups=[os.fspath(g) for g in left])
        shutil.rmtree(lab_dir, ignore_errors=True)
        if lab_dir.exists():
            raise AgentgwError(
                f"could not remove {lab_dir}", hint="check 'findmnt' for leftover lab mounts"
            )
        log.info("lab_down", name=name)
        return True

    def _stop(self) -> None:
        pid, started = self.state.nspawn_pid, self.state.nspawn_started
        if not pid or not _same_process(pid, started):
            return
        if self.state.leader_pid and psutil.pid_exists(self.state.leader_pid):
            # Ask systemd to power off; nspawn exits when its init does.
            self.exec(["systemctl", "--no-block", "poweroff"], check=False, timeout=10)
        if self._wait_exit(pid, started, 15.0):
            return
        # Only the nspawn we started and recorded (pid + start time) is ever signalled.
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if self._wait_exit(pid, started, 5.0):
            return
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._wait_exit(pid, started, 5.0)

    @staticmethod
    def _wait_exit(pid: int, started: float, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            child = _CHILDREN.get(pid)
            if child is not None and child.poll() is not None:
                del _CHILDREN[pid]
                return True
            if child is None:
                with suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            if not _same_process(pid, started):
                return True
            time.sleep(0.05)
        return False

    @staticmethod
    def _umount(path: Path) -> None:
        for _ in range(50):
            if not _mounted(path):
                return
            if run.run(["umount", path], check=False).returncode != 0:
                time.sleep(0.1)
        if _mounted(path):
            run.run(["umount", "--lazy", path], check=False)


@contextmanager
def booted(spec: LabSpec) -> Iterator[Lab]:
    """A lab for the duration of a ``with`` block (tests, ``lab run``); always torn down.

    SIGTERM and SIGHUP are turned into an exception so the ``finally`` runs on them too.
    """

    def _raise(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, _raise) for s in (signal.SIGTERM, signal.SIGHUP)}
    lab: Lab | None = None
    try:
        lab = Lab.up(spec)
        yield lab
    finally:
        try:
            if lab is not None:
                lab.down()
            else:
                Lab.teardown(spec.name, spec.base)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
