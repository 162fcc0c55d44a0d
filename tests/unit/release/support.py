"""Helpers of the release tests: source trees, hand-made tarballs, keys, snapshots, the CLI."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from agentgw.paths import Layout
from agentgw.signing import generate_keypair

SHA = "3f9c2e1"
OTHER_SHA = "0a1b2c3d4e5f"


def write_tree(root: Path) -> Path:
    """A small runtime: a package, an executable, an empty dir and an in-tree symlink."""
    (root / "agent_cli" / "data").mkdir(parents=True)
    (root / "agent_cli" / "__init__.py").write_text("")
    (root / "agent_cli" / "main.py").write_text("print('gateway')\n")
    (root / "bin").mkdir()
    (root / "bin" / "agent").write_text("#!/bin/sh\nexec python3 -m agent_cli.main\n")
    (root / "bin" / "agent").chmod(0o750)
    (root / "bin" / "main.py").symlink_to("../agent_cli/main.py")
    return root


@dataclass(frozen=True)
class Member:
    """One tar member to write as given, unchecked (that is the point of the tests)."""

    name: str
    kind: str = "file"
    data: bytes = b"data\n"
    link: str = ""
    mode: int = 0o644


TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def make_tar(path: Path, members: list[Member]) -> Path:
    with tarfile.open(path, "w") as archive:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = TAR_TYPES[member.kind]
            info.mode = member.mode
            info.linkname = member.link
            if member.kind == "file":
                info.size = len(member.data)
                archive.addfile(info, io.BytesIO(member.data))
            else:
                archive.addfile(info)
    return path


def snapshot(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every path under ``root``: kind, mode, and content hash or link target."""
    found: dict[str, tuple[str, int, str]] = {}
    if not root.exists():
        return found
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(here) / name
            info = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("symlink", 0o777, os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", stat.S_IMODE(info.st_mode), "")
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[rel] = ("file", stat.S_IMODE(info.st_mode), digest)
    return found


def work_in_progress(layout: Layout) -> list[str]:
    """Temp and trash names under releases/: there must be none once an operation returns."""
    if not layout.releases.is_dir():
        return []
    return sorted(n for n in os.listdir(layout.releases) if n.startswith((".tmp-", ".trash-")))


@dataclass(frozen=True)
class Keys:
    trusted: Path
    other: Path

    @property
    def trusted_pub(self) -> Path:
        return self.trusted.with_name(self.trusted.name + ".pub")


def make_keys(directory: Path) -> Keys:
    directory.mkdir(parents=True, exist_ok=True)
    keys = Keys(trusted=directory / "trusted", other=directory / "other")
    generate_keypair(keys.trusted)
    generate_keypair(keys.other)
    return keys


def point(layout: Layout, profile: str, slot: str, release: str) -> None:
    """Make a profile's current/previous symlink point at a release, as promote does."""
    layout.profile_dir(profile).mkdir(parents=True, exist_ok=True)
    (layout.profile_dir(profile) / slot).symlink_to(f"../../releases/{release}")


