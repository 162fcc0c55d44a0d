"""Adversarial releases: each hostile source, altered release or policy breach is refused with
a clear error, and nothing is left behind (the host tree is unchanged, no temp dirs)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentgw.apply.release import add_release
from agentgw.errors import AgentgwError, Exit
from agentgw.model.release import Manifest, ReleasePolicy
from agentgw.paths import Layout
from agentgw.plan.release import render_manifest
from agentgw.store.release import check_promotable, read_manifest
from tests.unit.release.support import (
    OTHER_SHA,
    SHA,
    Keys,
    Member,
    make_keys,
    make_tar,
    snapshot,
    work_in_progress,
    write_tree,
)


@dataclass(frozen=True)
class World:
    layout: Layout
    src: Path
    scratch: Path
    keys: Keys

    @property
    def strict(self) -> ReleasePolicy:
        """The host policy of a production host: signatures required, one trusted key."""
        return ReleasePolicy(require_signature=True, trusted_keys=(str(self.keys.trusted_pub),))

    @property
    def release(self) -> Path:
        return self.layout.release(SHA, "release")

    def add_tar(self, *members: Member) -> None:
        add_release(self.layout, make_tar(self.scratch / "evil.tar", list(members)), SHA)

    def add_signed(self, sha: str = SHA) -> Manifest:
        return add_release(
            self.layout, self.src, sha, sign_key=self.keys.trusted, policy=self.strict
        ).manifest

    def promote(self, current: Manifest | None = None, allow_downgrade: bool = False) -> None:
        """What promote checks before flipping: the release on disk, under the host policy."""
        check_promotable(
            self.layout, read_manifest(self.release), self.strict, current, allow_downgrade
        )


def rewrite(path: Path, data: bytes) -> None:
    """Change a read-only file of a release the way an attacker with write access would."""
    mode = path.stat().st_mode
    path.chmod(0o644)
    path.write_bytes(data)
    path.chmod(mode)


def tamper_file(world: World) -> None:
    world.add_signed()
    rewrite(world.release / "agent_cli" / "main.py", b"import os; os.system('id')\n")


def tamper_file_and_manifest(world: World) -> None:
    """The attacker also updates manifest.json's sha256; only the signature can tell."""
    manifest = world.add_signed()
    data = b"import os; os.system('id')\n"
    rewrite(world.release / "agent_cli" / "main.py", data)
    files = tuple(
        e.model_copy(update={"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
        if e.path == "agent_cli/main.py"
        else e
        for e in manifest.files
    )
    forged = manifest.model_copy(update={"files": files})
    rewrite(world.release / "manifest.json", render_manifest(forged).encode())


def plant_file(world: World) -> None:
    world.add_signed()
    world.release.chmod(0o755)
    (world.release / "sitecustomize.py").write_text("import evil\n")
    world.release.chmod(0o555)


def corrupt_signature(world: World) -> None:
    world.add_signed()
    sig_path = world.release / "manifest.sig"
    record = json.loads(sig_path.read_text())
    raw = bytearray(base64.b64decode(record["signature"]))
    raw[0] ^= 0xFF
    record["signature"] = base64.b64encode(bytes(raw)).decode()
    rewrite(sig_path, json.dumps(record).encode())


def garbage_signature(world: World) -> None:
    world.add_signed()
    rewrite(world.release / "manifest.sig", b"not a signature\n")


def sign_with_untrusted_key(world: World) -> None:
    add_release(world.layout, world.src, SHA, sign_key=world.keys.other)


def add_unsigned(world: World) -> None:
    add_release(world.layout, world.src, SHA)


def two_versions(world: World) -> None:
    world.add_signed(SHA)
    world.add_signed(OTHER_SHA)


def downgrade(world: World) -> None:
    world.promote(current=read_manifest(world.layout.release(OTHER_SHA, "release")))


def symlink_out_of_directory(world: World) -> None:
    (world.src / "agent_cli" / "etc").symlink_to("/etc")
    add_release(world.layout, world.src, SHA)


def fifo_in_directory(world: World) -> None:
    os.mkfifo(world.src / "pipe")
    add_release(world.layout, world.src, SHA)


@dataclass(frozen=True)
class Attack:
    run: Callable[[World], object]
    message: str
    code: Exit = Exit.USAGE
    prepare: Callable[[World], None] | None = None


def tar(*members: Member) -> Callable[[World], None]:
    return lambda world: world.add_tar(Member("agent_cli/__init__.py"), *members)


ATTACKS = {
    "path-traversal": Attack(
        tar(Member("../../etc/cron.d/evil")),
        "'../../etc/cron.d/evil': escapes the release tree ('..')",
    ),
    "path-traversal-nested": Attack(
        tar(Member("agent_cli/../../evil")), "'agent_cli/../../evil': escapes the release tree"
    ),
    "absolute-path": Attack(tar(Member("/etc/cron.d/evil")), "'/etc/cron.d/evil': absolute path"),
    "symlink-out-relative": Attack(
        tar(Member("lib/etc", "symlink", link="../../etc")),
        "lib/etc: symlink to '../../etc' points outside the release tree",
    ),
    "symlink-out-absolute": Attack(
        tar(Member("passwd", "symlink", link="/etc/passwd")),
        "passwd: absolute symlink to '/etc/passwd'",
    ),
    "symlink-depth-trick": Attack(
        tar(Member("s", "symlink", link="."), Member("t", "symlink", link="s/..")),
        "t: symlink to 's/..' has '..' after a name",
    ),
    "write-through-symlink": Attack(
        tar(Member("d", "symlink", link="."), Member("d/x")),
        "d/x: lies inside d, which is a symlink",
    ),
    "symlink-out-in-directory": Attack(
        symlink_out_of_directory, "agent_cli/etc: absolute symlink to '/etc'"
    ),
    "hardlink-out-absolute": Attack(
        tar(Member("shadow", "hardlink", link="/etc/shadow")),
        "shadow: hardlink to '/etc/shadow' points outside the release tree",
    ),
    "hardlink-out-relative": Attack(
        tar(Member("shadow", "hardlink", link="../../etc/shadow")),
        "shadow: hardlink to '../../etc/shadow' points outside the release tree",
    ),
    "device-node-char": Attack(
        tar(Member("dev/kmem", "chardev")), "'dev/kmem': device node (character device)"
    ),
    "device-node-block": Attack(
        tar(Member("sda", "blockdev")), "'sda': device node (block device)"
    ),
    "fifo": Attack(tar(Member("pipe", "fifo")), "'pipe': fifo (named pipe)"),
    "fifo-in-directory": Attack(fifo_in_directory, "'pipe': fifo (named pipe)"),
    "manifest-smuggled": Attack(
        tar(Member("manifest.json")), "manifest.json: reserved for the manifest agentgw writes"
    ),
    "unsigned-with-require-signature": Attack(
        lambda w: add_release(w.layout, w.src, SHA, policy=w.strict),
        "this host requires signed releases and no --sign-key or --signature was given",
    ),
    "untrusted-key-at-add": Attack(
        lambda w: add_release(w.layout, w.src, SHA, sign_key=w.keys.other, policy=w.strict),
        "is not one of this host's trusted keys",
    ),
    "file-tampered-after-add": Attack(
        World.promote,
        "changed: agent_cli/main.py: content differs from the manifest",
        Exit.VERIFY,
        tamper_file,
    ),
    "file-and-manifest-tampered": Attack(
        World.promote, "does not match the manifest", Exit.VERIFY, tamper_file_and_manifest
    ),
    "file-planted-after-add": Attack(
        World.promote, "extra: sitecustomize.py: not in the manifest", Exit.VERIFY, plant_file
    ),
    "bad-signature": Attack(
        World.promote, "does not match the manifest", Exit.VERIFY, corrupt_signature
    ),
    "garbage-signature": Attack(
        World.promote,
        "signature: manifest.sig: not a valid signature record",
        Exit.VERIFY,
        garbage_signature,
    ),
    "untrusted-key-at-promote": Attack(
        World.promote, "which is not a trusted key", Exit.VERIFY, sign_with_untrusted_key
    ),
    "unsigned-at-promote": Attack(
        World.promote,
        "unsigned: manifest.sig: not signed, and this host requires signed releases",
        Exit.VERIFY,
        add_unsigned,
    ),
    "downgrade": Attack(
        downgrade, "is version 1, older than the current", Exit.USAGE, two_versions
    ),
}


@pytest.fixture
def world(tmp_path: Path) -> World:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return World(
        layout=Layout(tmp_path / "root"),
        src=write_tree(tmp_path / "src"),
        scratch=scratch,
        keys=make_keys(tmp_path / "keys"),
    )


@pytest.mark.parametrize("name", list(ATTACKS))
def test_adversarial_release_is_refused_and_leaves_nothing(world: World, name: str) -> None:
    """The attack fails with one clear error line (message, hint, exit code), and the host
    tree is exactly as before: no new release, no temp or trash directory."""
    attack = ATTACKS[name]
    if attack.prepare is not None:
        attack.prepare(world)
    before = snapshot(world.layout.root)
    with pytest.raises(AgentgwError) as raised:
        attack.run(world)
    error = raised.value
    assert attack.message in error.message
    assert (error.code, "\n" in error.message, bool(error.hint)) == (attack.code, False, True)
    assert snapshot(world.layout.root) == before
    assert work_in_progress(world.layout) == []


def test_downgrade_passes_when_allowed(world: World) -> None:
    """The same downgrade goes through with allow_downgrade (--allow-downgrade)."""
    two_versions(world)
    current = read_manifest(world.layout.release(OTHER_SHA, "release"))
    world.promote(current=current, allow_downgrade=True)
