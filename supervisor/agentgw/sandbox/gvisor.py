"""The gVisor backend: each job in its own ``runsc`` sandbox (a user-space kernel, the Sentry,
that the job's system calls go to; the host kernel sees only the Sentry's narrow seccomp-filtered
set). gVisor is a security boundary without hardware virtualisation, unlike QEMU TCG.

Platform: Debian 12's runsc (0.0~20221219) has ``ptrace`` and ``kvm`` but no ``systrap``;
``ptrace`` is the one that works without /dev/kvm, so it is the default.

Each job gets a fresh OCI bundle in a private 0700 directory: an empty root with the host's
/usr read-only (for ``sh`` and coreutils), a tmpfs /tmp, /work holding only the job's files and
/job (its stdin, stdout and stderr files). No network (``--network=none``: loopback only). The
bundle is planned and laid out by :mod:`.bundle`.

A sandbox is started before its job (:func:`prepare`, :class:`Sandbox`): its process is a
small shell (``WRAPPER``) that forks the job's process ahead of time and waits on its stdin, a
pipe from us, the control pipe. The job's files go into /work and /job (the gofer shows the
guest files written after the start), then a ``go`` line -- the job's command, or ``. /job/run``
-- starts it: ``exec argv`` with /job/out and /job/err as its stdout and stderr, which it opened
while it waited (and /job/in as its stdin, if it has one). The wrapper writes ``rc <status>``
on its stdout as soon as the job's process exits, so the answer never waits for a child it left
in the background (or for a stdout closed early); the output files are read up to the cap, and
the sandbox (and anything left in it) is destroyed after the answer. At the timeout it is
killed. A cold job is the same: prepare, then the job at once (:func:`run_plain`).

CPUs: the sandbox is pinned to the job's ``cpus`` CPUs (:mod:`.cpus` says why).

Two ways to run it. As root (``agentgw exec --direct``, the self-test): the job's guest uid is
one per job from a range no account uses (``job_uid``) and /work is chowned to it. As any other
user (the broker's job units, agentgw-job@.service: a DynamicUser per job) runsc runs
``--rootless``: it maps that user, and only it, to root in a user namespace of its own. The
guest then runs as uid 0 of that namespace without any capability: the one uid whose files the
gofer can create (any other is unmapped: EINVAL). On the host that is the job's dynamic uid.

"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import select
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agentgw.errors import die
from agentgw.run import TimeoutExpired, popen_pipes, run
from agentgw.sandbox.bundle import BUSYBOX, make_rootfs, render_go, render_spec
from agentgw.sandbox.cpus import choose_cpus, current_cpu, pinned
from agentgw.sandbox.jobspec import (
    TIMED_OUT_EXIT,
    Job,
    NotStarted,
    Outcome,
    Prepare,
    check_relative_path,
    fits,
)

if TYPE_CHECKING:
    from agentgw.sandbox.job import JobRequest, JobResult

RUNSC = "runsc"
PLATFORM = "ptrace"
JOB_UID_BASE = 0x7A000000  # 2046820352: a uid range no account or DynamicUser uses
JOB_UID_COUNT = 65536
READY_S = 30.0
IO_ENV = "AGENTGW_JOB_IO"  # where the job's stdin/stdout/stderr files go (default: beside /work)
_uids = itertools.count()
_uid_lock = threading.Lock()


def runsc_path() -> str | None:
    return shutil.which(RUNSC)


def job_uid() -> int:
    """The next uid of the per-job range (wraps after JOB_UID_COUNT jobs; a uid is reused only
    once that many later jobs have started)."""
    with _uid_lock:
        return JOB_UID_BASE + next(_uids) % JOB_UID_COUNT


def runsc_flags(state: Path, *, platform: str = PLATFORM, rootless: bool = False) -> list[str]:
    return [RUNSC, f"--root={state}", f"--platform={platform}", "--network=none",
            "--ignore-cgroups", *(["--rootless"] if rootless else [])]


def runsc_argv(state: Path, bundle: Path, name: str, *, platform: str = PLATFORM,
               rootless: bool = False) -> list[str]:
    return [*runsc_flags(state, platform=platform, rootless=rootless), "run",
            f"--bundle={bundle}", name]


def _give(path: Path, uid: int | None, mode: int) -> None:
    """To the guest's uid (as root); rootless (``uid`` None), the files are this process's
    already, which is the guest's uid 0."""
    if uid is None:
        os.chmod(path, mode)
    else:
        os.chown(path, uid, uid)
        os.chmod(path, mode)


def _write_files(work: Path, request: Job, uid: int | None) -> None:
    for path in sorted(request.files):
        target = work / check_relative_path(path)
        for parent in reversed(target.relative_to(work).parents[:-1]):
            d = work / parent
            if not d.exists():
                d.mkdir(mode=0o755)
                _give(d, uid, 0o755)
        target.write_bytes(request.files[path])
        _give(target, uid, 0o644)


def read_capped(path: Path, cap: int) -> tuple[bytes, bool]:
    """Up to ``cap`` bytes of a file the job wrote, and whether it held more."""
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError:
        return b"", False
    return data[:cap], len(data) > cap


def parse_status(line: bytes) -> int | None:
    """The wrapper's ``rc N`` line -> N (None for anything else)."""
    word, _, value = line.strip().partition(b" ")
    return int(value) if word == b"rc" and value.isdigit() else None


class Sandbox:
    """One gVisor sandbox waiting for one job: ``run`` it, then ``close`` (see the module doc).
    ``close`` may come from another thread (the caller went away): it kills the sandbox."""

    def __init__(self, shape: Prepare, *, base: Path | None = None,
                 platform: str = PLATFORM) -> None:
        if runsc_path() is None:
            raise die("runsc is not installed", hint="apt-get install runsc (Debian: gVisor)")
        self.shape, self.started = shape, time.monotonic()
        self.rootless = os.geteuid() != 0
        self.uid = 0 if self.rootless else job_uid()
        self._tmp = tempfile.TemporaryDirectory(prefix="agentgw-gvisor-", dir=base)
        self.top = Path(self._tmp.name)
        # The job's stdin and output files apart from /work when the unit gives a place
        # (agentgw-job@.service: a tmpfs of their own), so a job that fills /work still has
        # its "No space left" on stderr.
        self._io = tempfile.TemporaryDirectory(prefix="agentgw-gvisor-io-",
                                               dir=os.environ.get(IO_ENV) or self.top)
        self.work, self.jobdir = self.top / "work", Path(self._io.name) / "job"
        os.chmod(self.top, 0o700)
        os.chmod(self._io.name, 0o700)
        bundle, state = self.top / "bundle", self.top / "state"
        bundle.mkdir()
        state.mkdir(mode=0o700)
        for d in (self.work, self.jobdir):
            d.mkdir(mode=0o700)
            _give(d, self._owner, 0o755)
        make_rootfs(bundle / "rootfs")
        spec = render_spec(shape, self.uid, (self.work, self.jobdir), "sandbox",
                           busybox=os.path.exists(BUSYBOX), rootless=self.rootless)
        (bundle / "config.json").write_text(json.dumps(spec))
        self.name = f"agentgw-{self.top.name.rsplit('-', 1)[-1]}"
        self.flags = runsc_flags(state, platform=platform, rootless=self.rootless)
        self._lock, self._teardown = threading.Lock(), threading.Lock()
        self._closed = self._used = self._done = False
        self._buf = b""
        # runsc, the Sentry, the gofer and the guest's stubs on the job's CPUs (see the doc)
        self.cpus = choose_cpus(os.sched_getaffinity(0), shape.cpus, current_cpu())
        with pinned(self.cpus):
            self._proc = popen_pipes([*self.flags, "run", f"--bundle={bundle}", self.name])
        self._errors = bytearray()
        self._drain = threading.Thread(target=self._keep_errors, daemon=True)
        self._drain.start()

    @property
    def _owner(self) -> int | None:
        return None if self.rootless else self.uid

    def _keep_errors(self) -> None:
        """runsc's stderr (and the wrapper's), the last 4 KiB, for a failure's message."""
        fd = self._proc.stderr.fileno() if self._proc.stderr is not None else -1
        while chunk := os.read(fd, 65536):
            self._errors = (self._errors + chunk)[-4096:]

    def _line(self, deadline: float) -> bytes | None:
        """The next line the wrapper writes; b'' at EOF, None at the deadline."""
        fd = self._proc.stdout.fileno() if self._proc.stdout is not None else -1
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return b""
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line + b"\n"

    def wait_ready(self, timeout: float = READY_S) -> float:
        """Block until the wrapper says ready; seconds since the start. Raises (and closes)
        when the sandbox failed to start."""
        line = self._line(time.monotonic() + timeout)
        if line != b"ready\n":
            self.close()
            why = "did not start in time" if line is None else "failed to start"
            tail = bytes(self._errors).decode(errors="replace").strip().splitlines()[-3:]
            raise die(f"the gVisor sandbox {why}: {' / '.join(tail) or 'no detail'}",
                      hint="see: journalctl -u 'agentgw-job@*'")
        return time.monotonic() - self.started

    def _stage(self, job: Job) -> bytes:
        """The job's files, stdin and output files where the guest reads them; the go line."""
        _write_files(self.work, job, self._owner)
        go, script = render_go(job.argv, stdin=bool(job.stdin))
        # /job/in always (the job's staged mark; the guest reads it only if not empty); out
        # and err: the wrapper opened them, its guest's files.
        for name, data in (("in", job.stdin), ("run", script)):
            if data is not None:
                (self.jobdir / name).write_bytes(data)
                _give(self.jobdir / name, self._owner, 0o644)
        return go

    def run(self, job: Job) -> Outcome:
        """Start the job, wait for its status (at most its timeout), read its output."""
        if self._used or not fits(self.shape, job):
            raise die("this gVisor sandbox was prepared for another job (one job, same shape)")
        self._used = True
        go = self._stage(job)
        started = time.monotonic()
        stdin = self._proc.stdin
        try:
            assert stdin is not None  # noqa: S101 - popen_pipes
            stdin.write(go)
            stdin.flush()
        except (OSError, ValueError):
            raise NotStarted("the gVisor sandbox ended before the job started") from None
        line = self._line(started + job.timeout_s)
        self._done = line is not None
        status = parse_status(line) if line else None
        detail = ""
        if line is None:
            self.kill()
            detail = "killed at the timeout"
        elif status is None:
            detail = f"the sandbox ended without the job's status (runsc exit {self._exit()})"
        cap, jobdir = job.max_output, self.jobdir
        (out, out_cut), (err, err_cut) = (read_capped(jobdir / n, cap) for n in ("out", "err"))
        code = TIMED_OUT_EXIT if line is None else (status if status is not None else 137)
        return Outcome(exit_code=code, stdout=out, stderr=err, stdout_truncated=out_cut,
                       stderr_truncated=err_cut, timed_out=line is None,
                       duration_s=round(time.monotonic() - started, 4), detail=detail)

    def _exit(self) -> int:
        try:
            return self._proc.wait(timeout=5)
        except TimeoutExpired:
            return -1

    def kill(self) -> None:
        """Kill everything in the sandbox (the timeout, the caller gone)."""
        with self._lock:
            if self._closed or self._proc.poll() is not None:
                return
        run([*self.flags, "kill", "--all", self.name, "KILL"], timeout=10, check=False)

    def close(self) -> None:
        """Tear down: end the wrapper (EOF on the control pipe), wait for runsc, force if it
        lingers, remove the files. Idempotent; safe from another thread (a second call waits
        for the first one's teardown). A job still running is killed first."""
        with self._teardown:
            if self._used and not self._done:
                self.kill()
            with self._lock:
                if self._closed:
                    return
                self._closed = True
            self._close()

    def _close(self) -> None:
        proc = self._proc
        for stream in (proc.stdin,):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            code = proc.wait(timeout=2)
        except TimeoutExpired:
            code = -9
            run([*self.flags, "kill", "--all", self.name, "KILL"], timeout=10, check=False)
            try:
                proc.wait(timeout=5)
            except TimeoutExpired:
                proc.kill()
                proc.wait()
        if not 0 <= code < 128:
            # `runsc run` destroys its container when the wrapper exits on its own; a killed
            # or failed one may have left it.
            run([*self.flags, "delete", "--force", self.name], timeout=10, check=False)
        self._drain.join(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        self._io.cleanup()
        self._tmp.cleanup()


def prepare(spec: Prepare, *, base: Path | None = None, platform: str = PLATFORM) -> Sandbox:
    """A gVisor sandbox of ``spec``'s shape, started and waiting for its job."""
    sandbox = Sandbox(spec, base=base, platform=platform)
    sandbox.wait_ready()
    return sandbox


def run_plain(job: Job, *, base: Path | None = None, platform: str = PLATFORM) -> Outcome:
    """One job in a fresh gVisor sandbox (prepared, then run at once); gone on return."""
    started = time.monotonic()
    shape = Prepare("gvisor", memory_mb=job.memory_mb, cpus=job.cpus, nproc=job.nproc)
    sandbox = prepare(shape, base=base, platform=platform)
    try:
        outcome = sandbox.run(job)
    finally:
        sandbox.close()
    return dataclasses.replace(outcome, duration_s=round(time.monotonic() - started, 4))


def job_of(request: JobRequest) -> Job:
    return Job(argv=request.argv, stdin=request.stdin, files=request.files,
               timeout_s=request.timeout_s, memory_mb=request.memory_mb, cpus=request.cpus,
               max_output=request.max_output, nproc=request.nproc)


def run_job(request: JobRequest, *, base: Path | None = None, platform: str = PLATFORM,
            warm: bool = False) -> JobResult:
    """:func:`run_plain` for a validated request, as a JobResult (the other backends' type)."""
    from agentgw.sandbox.job import JobResult  # not at import: see jobspec (the job unit)

    outcome = run_plain(job_of(request), base=base, platform=platform)
    return JobResult(
        exit_code=outcome.exit_code, stdout=outcome.stdout, stderr=outcome.stderr,
        stdout_truncated=outcome.stdout_truncated, stderr_truncated=outcome.stderr_truncated,
        timed_out=outcome.timed_out, backend="gvisor", warm=warm,
        duration_s=outcome.duration_s, detail=outcome.detail,
    )
