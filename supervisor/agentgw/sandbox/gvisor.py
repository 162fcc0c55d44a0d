"""The gVisor backend: each job in its own ``runsc`` sandbox (a user-space kernel, the Sentry,
that the job's system calls go to; the host kernel sees only the Sentry's narrow seccomp-filtered
set). gVisor is a security boundary without hardware virtualisation, unlike QEMU TCG.

Platform: Debian 12's runsc (0.0~20221219) has ``ptrace`` and ``kvm`` but no ``systrap``;
``ptrace`` is the one that works without /dev/kvm, so it is the default.

Each job gets a fresh OCI bundle in a private 0700 directory: an empty root with the host's
/usr read-only (for ``sh`` and coreutils), a tmpfs /tmp, and /work holding only the job's files.
No network (``--network=none``: loopback only). The bundle is planned here (``render_spec``) as
data and run by ``run_job``.

Two ways to run it. As root (``agentgw exec --direct``, the self-test): the job's guest uid is
one per job from a range no account uses (``job_uid``) and /work is chowned to it. As any other
user (the broker's job units, agentgw-job@.service: a DynamicUser per job) runsc runs
``--rootless``: it maps that user, and only it, to root in a user namespace of its own. The
guest then runs as uid 0 of that namespace without any capability: the one uid whose files the
gofer can create (any other is unmapped: EINVAL). On the host that is the job's dynamic uid.

This runsc (2022-12) answers statx(2) with EINVAL when the flags carry AT_NO_AUTOMOUNT, which
coreutils 9.1's ``ls``, ``stat`` and ``touch`` pass (``ls /``: "cannot access '/': Invalid
argument"). Those three are therefore bound to busybox (``STATX_APPLETS``), which uses
lstat/utimensat; busybox-static is a dependency of the microVM image anyway.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentgw.errors import die
from agentgw.run import TimeoutExpired, popen_pipes, run
from agentgw.sandbox.jobspec import TIMED_OUT_EXIT, Job, Outcome, check_relative_path

if TYPE_CHECKING:
    from agentgw.sandbox.job import JobRequest, JobResult

RUNSC = "runsc"
PLATFORM = "ptrace"
JOB_UID_BASE = 0x7A000000  # 2046820352: a uid range no account or DynamicUser uses
JOB_UID_COUNT = 65536
WORK = "/work"
MOUNT_POINTS = ("usr", "tmp", "proc", "dev", "work", "etc/alternatives")
BUSYBOX = "/usr/bin/busybox"
STATX_APPLETS = ("ls", "stat", "touch")  # coreutils' statx flags get EINVAL from this runsc
_uids = itertools.count()
_uid_lock = threading.Lock()


def runsc_path() -> str | None:
    return shutil.which(RUNSC)


def job_uid() -> int:
    """The next uid of the per-job range (wraps after JOB_UID_COUNT jobs; a uid is reused only
    once that many later jobs have started)."""
    with _uid_lock:
        return JOB_UID_BASE + next(_uids) % JOB_UID_COUNT


def render_spec(
    request: Job, uid: int, work: Path, hostname: str, *, busybox: bool = True,
    rootless: bool = False,
) -> dict[str, Any]:
    """The OCI runtime spec of one job (pure: paths and numbers in, a dict out); ``busybox``:
    bind busybox over ``STATX_APPLETS``. ``rootless``: the root is not remounted read-only
    (in a user namespace that remount must keep the locked nosuid/nodev of a /tmp such as the
    lab's, and runsc's does not: EPERM); it is the job's own empty directory, owned by the
    namespace's root, which the guest's uid is not."""
    ro = ["rbind", "ro", "nosuid", "nodev"]
    return {
        "ociVersion": "1.0.2",
        "hostname": hostname,
        "root": {"path": "rootfs", "readonly": not rootless},
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": uid, "additionalGids": []},
            "args": ["/bin/sh", "-c", 'cd /work || exit 126; exec "$@"', "job", *request.argv],
            "env": ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", f"HOME={WORK}",
                    "TMPDIR=/tmp", "LANG=C.UTF-8"],
            "cwd": WORK,
            "noNewPrivileges": True,
            "capabilities": {k: [] for k in
                             ("bounding", "effective", "inheritable", "permitted", "ambient")},
            "rlimits": [
                {"type": "RLIMIT_NPROC", "hard": request.nproc, "soft": request.nproc},
                {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
            ],
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "mode=755"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",  # noqa: S108 - own tmpfs
             "options": ["nosuid", "nodev", "mode=1777", "size=64m"]},
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ro},
            {"destination": "/etc/alternatives", "type": "bind", "source": "/etc/alternatives",
             "options": ro},
            {"destination": WORK, "type": "bind", "source": str(work),
             "options": ["rbind", "rw", "nosuid", "nodev"]},
            *({"destination": f"/usr/bin/{name}", "type": "bind", "source": BUSYBOX,
               "options": ro} for name in (STATX_APPLETS if busybox else ())),
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "resources": {
                "memory": {"limit": request.memory_mb * 1024 * 1024},
                "pids": {"limit": request.nproc},
            },
        },
    }


def make_rootfs(root: Path) -> None:
    """An empty root with merged-/usr symlinks and the mount points of ``render_spec``."""
    for name in MOUNT_POINTS:
        (root / name).mkdir(parents=True, exist_ok=True)
    for path in (root, root / "etc", *(root / name for name in MOUNT_POINTS)):
        os.chmod(path, 0o755)  # noqa: S103 - not the umask (the job unit has 0077): the guest walks them
    for name in ("bin", "sbin", "lib", "lib64"):
        (root / name).symlink_to(f"usr/{name}")
    for name, line in (("passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("group", "root:x:0:\n")):
        (root / "etc" / name).write_text(line)
        os.chmod(root / "etc" / name, 0o644)


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


def _write_files(work: Path, request: Job, uid: int | None) -> None:
    _give(work, uid, 0o755)
    for path in sorted(request.files):
        target = work / check_relative_path(path)
        for parent in reversed(target.relative_to(work).parents[:-1]):
            d = work / parent
            if not d.exists():
                d.mkdir(mode=0o755)
                _give(d, uid, 0o755)
        target.write_bytes(request.files[path])
        _give(target, uid, 0o644)


def _read_capped(stream: Any, cap: int, out: list[bytes]) -> None:
    kept = bytearray()
    while chunk := stream.read(65536):
        if len(kept) <= cap:
            kept += chunk[: cap + 1 - len(kept)]
    out.append(bytes(kept))


def run_plain(job: Job, *, base: Path | None = None, platform: str = PLATFORM) -> Outcome:
    """Run one job in a fresh gVisor sandbox; the sandbox and its files are gone on return."""
    if runsc_path() is None:
        raise die("runsc is not installed", hint="apt-get install runsc (Debian: gVisor)")
    started = time.monotonic()
    rootless = os.geteuid() != 0
    uid = 0 if rootless else job_uid()
    with tempfile.TemporaryDirectory(prefix="agentgw-gvisor-", dir=base) as tmp:
        top = Path(tmp)
        os.chmod(top, 0o700)
        bundle, state, work = top / "bundle", top / "state", top / "work"
        bundle.mkdir()
        state.mkdir(mode=0o700)
        work.mkdir(mode=0o700)
        make_rootfs(bundle / "rootfs")
        _write_files(work, job, None if rootless else uid)
        name = f"agentgw-{top.name.rsplit('-', 1)[-1]}"
        spec = render_spec(job, uid, work, "sandbox", busybox=os.path.exists(BUSYBOX),
                           rootless=rootless)
        (bundle / "config.json").write_text(json.dumps(spec))
        flags = runsc_flags(state, platform=platform, rootless=rootless)
        code, timed_out, out, err = _supervise(job, flags, bundle, name)
    cap = job.max_output
    return Outcome(
        exit_code=TIMED_OUT_EXIT if timed_out else (code if code >= 0 else 128 - code),
        stdout=out[:cap], stderr=err[:cap],
        stdout_truncated=len(out) > cap, stderr_truncated=len(err) > cap,
        timed_out=timed_out, duration_s=round(time.monotonic() - started, 4),
        detail="killed at the timeout" if timed_out else "",
    )


def _supervise(job: Job, flags: list[str], bundle: Path, name: str
               ) -> tuple[int, bool, bytes, bytes]:
    """``runsc run`` with the job's stdin, capped output and timeout; then the sandbox deleted.
    (exit status, timed out, stdout, stderr)."""
    proc = popen_pipes([*flags, "run", f"--bundle={bundle}", name])
    outs: list[bytes] = []
    errs: list[bytes] = []
    readers = [threading.Thread(target=_read_capped, args=(s, job.max_output, o))
               for s, o in ((proc.stdout, outs), (proc.stderr, errs))]
    for t in readers:
        t.start()
    try:
        if proc.stdin is not None:
            proc.stdin.write(job.stdin)
            proc.stdin.close()
    except BrokenPipeError:
        pass
    timed_out = False
    try:
        code = proc.wait(timeout=job.timeout_s)
    except TimeoutExpired:
        timed_out = True
        run([*flags, "kill", "--all", name, "KILL"], timeout=10)
        try:
            code = proc.wait(timeout=5)
        except TimeoutExpired:
            proc.kill()
            code = proc.wait()
    for t in readers:
        t.join(5)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    if timed_out or not 0 <= code < 128:
        # `runsc run` destroys its container when the job exits on its own; a killed or failed
        # one may have left it. (Skipping the delete saved ~50 ms of a ~0.3 s cold run.)
        run([*flags, "delete", "--force", name], timeout=10, check=False)
    return code, timed_out, (outs or [b""])[0], (errs or [b""])[0]


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
