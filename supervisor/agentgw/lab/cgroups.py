"""Each lab in a cgroup of its own, and, in ``hybrid`` mode, with writable v1 controllers.

``systemd-nspawn --keep-unit`` puts the container in ``<caller's cgroup>/payload``: two labs
booted from the same cgroup would share it (and their units' cgroups). So before nspawn starts,
the process that becomes nspawn moves into ``<caller's cgroup>/agentgw-lab-<name>`` in every
hierarchy used, and the lab's teardown removes those groups.

The resource controllers: on these machines the host keeps cpu, memory and pids on cgroup v1
hierarchies, so a pure cgroup v2 lab has none of them and CPUQuota=/MemoryMax=/TasksMax= are
silently not enforced inside. In ``hybrid`` mode nspawn gives the container cgroup2 (for
systemd and the BPF firewall) *and* the v1 hierarchies, rooted at the lab's own group by the
cgroup namespace but mounted read-only; the container's PID 1 is then a shell that remounts
the delegated controllers read-write in its own mount namespace before it execs systemd, which
then uses them (measured: CPUQuota=20% holds a busy loop at 0.60 s CPU in 3 s; MemoryMax=50M
kills a 200 MiB allocation; TasksMax=10 refuses the 10th task; IPAddressDeny= still blocks).
The host's own mounts are never touched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# v1 controllers handed to a hybrid lab, read-write: what CPUQuota=, MemoryMax= and TasksMax=
# need (systemd 252 enables cpuacct with cpu).
DELEGATED = ("cpu", "cpuacct", "memory", "pids")
GROUP_PREFIX = "agentgw-lab-"
# Mount options of a v1 hierarchy that are not controllers.
NOT_CONTROLLERS = {"rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode",
                   "favordynmods"}


@dataclass(frozen=True)
class Hierarchy:
    """A mounted cgroup hierarchy: its key (``""`` for cgroup2, else its controllers or
    ``name=...``), where it is mounted, and the caller's cgroup in it."""

    key: str
    mount: Path
    path: str

    def group(self, lab: str) -> Path:
        return self.mount / self.path.lstrip("/") / f"{GROUP_PREFIX}{lab}"


def parse(proc_cgroup: str, mountinfo: str) -> list[Hierarchy]:
    """The hierarchies of ``/proc/self/cgroup`` with their mount points from mountinfo."""
    mounts: dict[str, Path] = {}
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or fields[3] != "/":
            continue  # only mounts of a hierarchy's root can hold groups for any caller path
        fstype, options = tail[0], tail[2].split(",")
        if fstype == "cgroup2":
            mounts.setdefault("", Path(fields[4]))
        elif fstype == "cgroup":
            names = [o for o in options
                     if o.startswith("name=") or ("=" not in o and o not in NOT_CONTROLLERS)]
            mounts.setdefault(",".join(sorted(names)), Path(fields[4]))
    found = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        key = ",".join(sorted(parts[1].split(","))) if parts[1] else ""
        if key in mounts:
            found.append(Hierarchy(key=key, mount=mounts[key], path=parts[2]))
    return found


def hierarchies() -> list[Hierarchy]:
    """This process's cgroup hierarchies, as the kernel shows them."""
    return parse(Path("/proc/self/cgroup").read_text(), Path("/proc/self/mountinfo").read_text())


def wanted(found: Sequence[Hierarchy], hybrid: bool) -> list[Hierarchy]:
    """The hierarchies a lab gets its own group in: cgroup2 and systemd's named one, plus the
    delegated controllers in hybrid mode."""
    keep = {"", "name=systemd"} | (set(DELEGATED) if hybrid else set())
    return [h for h in found if h.key in keep]


def missing_for_hybrid(found: Sequence[Hierarchy]) -> list[str]:
    """Delegated controllers this host does not mount as their own v1 hierarchy."""
    keys = {h.key for h in found}
    return [c for c in DELEGATED if c not in keys] + ([] if "" in keys else ["cgroup2"])


def create(groups: Iterable[Path]) -> list[Path]:
    """Make the groups (a leftover of a killed lab is reused); the list, in order."""
    made = []
    for group in groups:
        group.mkdir(exist_ok=True)
        made.append(group)
    return made


def enter_script() -> str:
    """sh: move this shell into every group named in ``$AGENTGW_LAB_CGROUPS``, then exec
    "$@" (nspawn), so nspawn and everything it starts begin inside them."""
    return ('for g in $AGENTGW_LAB_CGROUPS; do echo $$ > "$g/cgroup.procs" || exit 97; done; '
            'exec "$@"')


def init_script(controllers: Sequence[str], target: str) -> str:
    """sh, as the container's PID 1: remount the delegated controllers read-write (in the
    container's mount namespace) and exec systemd; exit (no boot) if a remount fails, rather
    than boot a lab whose limits silently do nothing."""
    mounts = " ".join(f"/sys/fs/cgroup/{c}" for c in controllers)
    return (f"for m in {mounts}; do mount -o remount,bind,rw \"$m\" || exit 1; done; "
            f"exec /lib/systemd/systemd systemd.unit={target}")


def remove(groups: Iterable[Path]) -> list[Path]:
    """Remove the groups and what systemd made inside them, deepest first; those left (still
    holding processes) are returned."""
    left = []
    for group in groups:
        if not group.is_dir():
            continue
        for dirpath, _dirnames, _files in sorted(os.walk(group), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if group.exists():
            left.append(group)
    return left
