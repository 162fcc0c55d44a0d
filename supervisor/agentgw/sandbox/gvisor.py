"""The gVisor backend: each job in its own ``runsc`` sandbox (a user-space kernel, the Sentry,
that the job's system calls go to; the host kernel sees only the Sentry's narrow seccomp-filtered
set). gVisor is a security boundary without hardware virtualisation, unlike QEMU TCG.

Platform: Debian 12's runsc (0.0~20221219) has ``ptrace`` and ``kvm`` but no ``systrap``;
``ptrace`` is the one that works without /dev/kvm, so it is the default.

Each job gets a fresh OCI bundle in a private 0700 directory: an empty root with the host's
/usr read-only (for ``sh`` and coreutils), a tmpfs /tmp, and /work holding only the job's files,
owned by the job's uid (``job_uid``: one per job from a range no account uses). No network
(``--network=none``: loopback only). The bundle is planned here (``render_spec``) as data and
run by ``run_job``.
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
from typing import Any

from agentgw.errors import die
from agentgw.run import TimeoutExpired, popen_pipes, run
from agentgw.sandbox.job import TIMED_OUT_EXIT, JobRequest, JobResult, check_relative_path

RUNSC = "runsc"
PLATFORM = "ptrace"
JOB_UID_BASE = 0x7A000000  # 2046820352: a uid range no account or DynamicUser uses
JOB_UID_COUNT = 65536
WORK = "/work"
_uids = itertools.count()
_uid_lock = threading.Lock()


def runsc_path() -> str | None:
    return shutil.which(RUNSC)


def job_uid() -> int:
    """The next uid of the per-job range (wraps after JOB_UID_COUNT jobs; a uid is reused only
    once that many later jobs have started)."""
    with _uid_lock:
        return JOB_UID_BASE + next(_uids) % JOB_UID_COUNT


def render_spec(request: JobRequest, uid: int, work: Path, hostname: str) -> dict[str, Any]:
    """The OCI runtime spec of one job (pure: paths and numbers in, a dict out)."""
    ro = ["rbind", "ro", "nosuid", "nodev"]
    return {
        "ociVersion": "1.0.2",
        "hostname": hostname,
        "root": {"path": "rootfs", "readonly": True},
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
    for name in ("usr", "tmp", "proc", "dev", "work", "etc/alternatives"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for name in ("bin", "sbin", "lib", "lib64"):
        (root / name).symlink_to(f"usr/{name}")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")


def runsc_argv(state: Path, bundle: Path, name: str, *, platform: str = PLATFORM) -> list[str]:
    return [RUNSC, f"--root={state}", f"--platform={platform}", "--network=none",
            "--ignore-cgroups", "run", f"--bundle={bundle}", name]


def _write_files(work: Path, request: JobRequest, uid: int) -> None:
    os.chown(work, uid, uid)
    for path in sorted(request.files):
        target = work / check_relative_path(path)
        for parent in reversed(target.relative_to(work).parents[:-1]):
            d = work / parent
            if not d.exists():
                d.mkdir(mode=0o755)
                os.chown(d, uid, uid)
        target.write_bytes(request.files[path])
        os.chown(target, uid, uid)


def _read_capped(stream: Any, cap: int, out: list[bytes]) -> None:
    kept = bytearray()
    while chunk := stream.read(65536):
        if len(kept) <= cap:
            kept += chunk[: cap + 1 - len(kept)]
    out.append(bytes(kept))


def run_job(request: JobRequest, *, base: Path | None = None, platform: str = PLATFORM,
            warm: bool = False) -> JobResult:
    """Run one job in a fresh gVisor sandbox; the sandbox and its files are gone on return."""
    if runsc_path() is None:
        raise die("runsc is not installed", hint="apt-get install runsc (Debian: gVisor)")
    started = time.monotonic()
    uid = job_uid()
    with tempfile.TemporaryDirectory(prefix="agentgw-gvisor-", dir=base) as tmp:
        top = Path(tmp)
        os.chmod(top, 0o700)
        bundle, state, work = top / "bundle", top / "state", top / "work"
        bundle.mkdir()
        state.mkdir(mode=0o700)
        work.mkdir(mode=0o700)
        make_rootfs(bundle / "rootfs")
        _write_files(work, request, uid)
        name = f"agentgw-{top.name.rsplit('-', 1)[-1]}"
        spec = render_spec(request, uid, work, "sandbox")
        (bundle / "config.json").write_text(json.dumps(spec))
        proc = popen_pipes(runsc_argv(state, bundle, name, platform=platform))
        outs: list[bytes] = []
        errs: list[bytes] = []
        readers = [threading.Thread(target=_read_capped, args=(s, request.max_output, o))
                   for s, o in ((proc.stdout, outs), (proc.stderr, errs))]
        for t in readers:
            t.start()
        try:
            if proc.stdin is not None:
                proc.stdin.write(request.stdin)
                proc.stdin.close()
        except BrokenPipeError:
            pass
        timed_out = False
        try:
            code = proc.wait(timeout=request.timeout_s)
        except TimeoutExpired:
            timed_out = True
            run([RUNSC, f"--root={state}", "kill", "--all", name, "KILL"], timeout=10)
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
        run([RUNSC, f"--root={state}", "delete", "--force", name], timeout=10)
    out, err = (outs or [b""])[0], (errs or [b""])[0]
    cap = request.max_output
    return JobResult(
        exit_code=TIMED_OUT_EXIT if timed_out else (code if code >= 0 else 128 - code),
        stdout=out[:cap], stderr=err[:cap],
        stdout_truncated=len(out) > cap, stderr_truncated=len(err) > cap,
        timed_out=timed_out, backend="gvisor", warm=warm,
        duration_s=round(time.monotonic() - started, 4),
        detail="killed at the timeout" if timed_out else "",
    )
