"""The OCI bundle of one gVisor sandbox (:mod:`.gvisor`): its runtime spec planned as data
(:func:`render_spec`, pure: paths and numbers in, a dict out), the go line that starts a job in
its waiting wrapper (:func:`render_go`), and its root laid out (:func:`make_rootfs`).

This runsc (2022-12) answers statx(2) with EINVAL when the flags carry AT_NO_AUTOMOUNT, which
coreutils 9.1's ``ls``, ``stat`` and ``touch`` pass (``ls /``: "cannot access '/': Invalid
argument"). Those three are therefore bound to busybox (``STATX_APPLETS``), which uses
lstat/utimensat; busybox-static is a dependency of the microVM image anyway.

Standard library only: the job unit runs it (see :mod:`.jobunit`).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from agentgw.sandbox.jobspec import Prepare

WORK = "/work"
JOB_DIR = "/job"
MOUNT_POINTS = ("usr", "tmp", "proc", "dev", "work", "job", "etc/alternatives")
# The guest's process: fork the job's process now, which enters /work, opens the job's
# output files (stdout, stderr; stdin /dev/null) and waits for the go line on the control pipe
# (fd 3, a copy of stdin: a background list's stdin would be /dev/null), then execs its words;
# say ready; report the job's exit status as soon as it exits. 125: no go line (EOF), 126: no
# /work or output files. The opens are the gofer's round trips: made while the sandbox waits,
# they are off the job's path (measured: ~3 ms of a warm job's ~20).
WRAPPER = (
    'exec 3<&0; ( cd /work && exec </dev/null >/job/out 2>/job/err || exit 126; '
    'read -r go <&3 || exit 125; exec 3<&-; eval "exec $go" ) & '
    'echo ready; wait "$!"; echo "rc $?"'
)
# A longer argv (or one with a line break) goes in /job/run, run by sh: dash's read takes a byte
# per system call.
INLINE_MAX = 512
BUSYBOX = "/usr/bin/busybox"
STATX_APPLETS = ("ls", "stat", "touch")  # coreutils' statx flags get EINVAL from this runsc
LD_CACHE = Path("/etc/ld.so.cache")


def render_go(argv: tuple[str, ...], *, stdin: bool = False) -> tuple[bytes, bytes | None]:
    """(the go line, the /job/run script or None) that starts ``argv`` in the waiting wrapper:
    its words, quoted (the wrapper evaluates ``exec <words>``), reading /job/in if the job has
    a ``stdin`` (else the wrapper's /dev/null)."""
    words = shlex.join(argv)
    redirect = f" <{JOB_DIR}/in" if stdin else ""
    if len(words) > INLINE_MAX or "\n" in words or "\r" in words:
        return f"/bin/sh {JOB_DIR}/run{redirect}\n".encode(), f"exec {words}\n".encode()
    return f"{words}{redirect}\n".encode(), None


def render_spec(
    shape: Prepare, uid: int, dirs: tuple[Path, Path], hostname: str, *, busybox: bool = True,
    rootless: bool = False,
) -> dict[str, Any]:
    """The OCI runtime spec of one sandbox (pure: paths and numbers in, a dict out), with
    ``dirs`` (work, job) bound as /work and /job; ``busybox``:
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
            "args": ["/bin/sh", "-c", WRAPPER],
            "env": ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", f"HOME={WORK}",
                    "TMPDIR=/tmp", "LANG=C.UTF-8"],
            "cwd": WORK,
            "noNewPrivileges": True,
            "capabilities": {k: [] for k in
                             ("bounding", "effective", "inheritable", "permitted", "ambient")},
            "rlimits": [
                {"type": "RLIMIT_NPROC", "hard": shape.nproc, "soft": shape.nproc},
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
            *({"destination": where, "type": "bind", "source": str(source),
               "options": ["rbind", "rw", "nosuid", "nodev"]}
              for where, source in zip((WORK, JOB_DIR), dirs, strict=True)),
            *({"destination": f"/usr/bin/{name}", "type": "bind", "source": BUSYBOX,
               "options": ro} for name in (STATX_APPLETS if busybox else ())),
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "resources": {
                "memory": {"limit": shape.memory_mb * 1024 * 1024},
                "pids": {"limit": shape.nproc},
            },
        },
    }


def make_rootfs(root: Path, ld_cache: Path = LD_CACHE) -> None:
    """An empty root with merged-/usr symlinks, the mount points of ``render_spec`` and a copy
    of the host's ``ld_cache`` (if it has one): it lists the libraries of the /usr the guest
    sees, and without it the dynamic loader walks its search path through the gofer for every
    library of every exec (measured: ~2 ms of a warm job's exec)."""
    for name in MOUNT_POINTS:
        (root / name).mkdir(parents=True, exist_ok=True)
    for path in (root, root / "etc", *(root / name for name in MOUNT_POINTS)):
        os.chmod(path, 0o755)  # noqa: S103 - not the umask (the job unit has 0077): the guest walks them
    for name in ("bin", "sbin", "lib", "lib64"):
        (root / name).symlink_to(f"usr/{name}")
    for name, line in (("passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("group", "root:x:0:\n")):
        (root / "etc" / name).write_text(line)
        os.chmod(root / "etc" / name, 0o644)
    try:
        (root / "etc" / "ld.so.cache").write_bytes(ld_cache.read_bytes())
        os.chmod(root / "etc" / "ld.so.cache", 0o644)
    except FileNotFoundError:
        pass  # the loader searches its default paths
