"""The base image as a pure function of its inputs, and the checks that guard the kernel."""

from __future__ import annotations

import hashlib
import json
import stat
import struct
from pathlib import Path

import pytest

from agentgw.errors import AgentgwError
from agentgw.sandbox import guest, image
from agentgw.sandbox.cpio import parse
from agentgw.sandbox.image import BaseInputs, render_base_cpio


def inputs(busybox: bytes = b"\x7fELF busybox") -> BaseInputs:
    return BaseInputs(
        busybox=busybox,
        applets=("usr/bin/awk", "bin/sh", "sbin/insmod", "bin/busybox", "linuxrc", "bin/sh"),
        modules={m: f"module {m}".encode() for m in guest.MODULES},
    )


def test_same_inputs_same_bytes() -> None:
    """Reproducible: equal inputs (in any applet order) give a byte-identical base.cpio."""
    a = render_base_cpio(inputs())
    b = render_base_cpio(BaseInputs(b"\x7fELF busybox", tuple(reversed(inputs().applets)),
                                    inputs().modules))
    assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest()
    assert a != render_base_cpio(inputs(b"\x7fELF other busybox"))


def test_base_holds_init_busybox_applets_users_and_modules() -> None:
    """Everything the guest init needs is there, root-owned, with fixed times."""
    got = {e.name: e for e in parse(render_base_cpio(inputs()))}
    assert got["init"].data == guest.INIT.encode() and stat.S_IMODE(got["init"].mode) == 0o755
    assert got[guest.RUN_JOB].data == guest.RUN_JOB_SCRIPT.encode()
    assert got["bin/busybox"].data == b"\x7fELF busybox"
    for applet in ("usr/bin/awk", "bin/sh", "sbin/insmod"):
        assert got[applet].is_symlink and got[applet].data == b"/bin/busybox"
    assert "linuxrc" not in got  # outside the applet dirs
    assert f"{guest.USER}:x:{guest.UID}:" in got["etc/passwd"].data.decode()
    for m in guest.MODULES:
        assert got[f"lib/modules/{m}.ko"].data == f"module {m}".encode()
    assert got["dev/console"].rdev == (5, 1)
    assert (got[guest.WORK].uid, stat.S_IMODE(got[guest.CONTROL].mode)) == (guest.UID, 0o711)
    assert {e.mtime for e in got.values()} == {0}


def test_parse_depends_finds_the_versioned_kernel() -> None:
    """The meta package's dependency names the kernel to fetch."""
    text = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n"
    assert image.parse_depends(text) == "linux-image-6.1.0-56-cloud-amd64"
    with pytest.raises(AgentgwError):
        image.parse_depends("linux-image-cloud-amd64\n")


def test_lz4_payload_is_found_at_the_legacy_magic() -> None:
    """The bzImage is cut where the legacy LZ4 frame starts."""
    assert image.find_lz4_payload(b"MZ...setup" + image.LZ4_LEGACY_MAGIC + b"x") == 10
    with pytest.raises(AgentgwError):
        image.find_lz4_payload(b"no payload here")


def elf(*, note_name: bytes = b"Xen\0", note_type: int = 18, cut: int = 0) -> bytes:
    """A minimal ELF64 with one PT_NOTE segment holding one note."""
    note = struct.pack("<III", len(note_name), 4, note_type) + note_name + b"\0\0\0\1"
    phoff, phentsize = 64, 56
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 0x20, phoff)
    struct.pack_into("<HH", header, 0x36, phentsize, 1)
    phdr = struct.pack("<IIQQQQQQ", 4, 0, phoff + phentsize, 0, 0, len(note), len(note), 4)
    data = bytes(header) + phdr + note
    return data[: len(data) - cut]


def test_vmlinux_with_the_pvh_note_passes() -> None:
    """A complete ELF with the Xen PVH entry note is what QEMU can boot directly."""
    image.check_vmlinux(elf())


@pytest.mark.parametrize(
    "data", [elf(note_type=1), elf(note_name=b"GNU\0"), elf(cut=3), b"MZ not an elf" + bytes(64)]
)
def test_bad_vmlinux_is_refused(data: bytes) -> None:
    """No PVH note, a truncated segment, or not an ELF at all: the build stops."""
    with pytest.raises(AgentgwError):
        image.check_vmlinux(data)


def write_image(cache: Path, **manifest: object) -> Path:
    d = cache / "6.1.0-1-cloud-amd64"
    d.mkdir(parents=True)
    (d / "vmlinux").write_bytes(b"k")
    (d / "base.cpio").write_bytes(b"c")
    files = {"vmlinux": hashlib.sha256(b"k").hexdigest(),
             "base.cpio": hashlib.sha256(b"c").hexdigest()}
    data = {"kernel_version": d.name, "guest_sha256": image.guest_digest(), "files": files,
            **manifest}
    (d / "manifest.json").write_text(json.dumps(data))
    (cache / "current").symlink_to(d.name)
    return d


def test_load_reads_the_current_image_and_verifies_hashes(tmp_path: Path) -> None:
    """``current`` points at the build; verify re-hashes its files against the manifest."""
    d = write_image(tmp_path)
    loaded = image.load(tmp_path, verify=True)
    assert (loaded.dir, loaded.kernel_version) == (d, d.name)
    (d / "base.cpio").write_bytes(b"tampered")
    with pytest.raises(AgentgwError, match="does not match"):
        image.load(tmp_path, verify=True)


def test_load_refuses_an_image_of_another_guest_protocol(tmp_path: Path) -> None:
    """An image built by another agentgw version (other init) is stale, not silently used."""
    write_image(tmp_path, guest_sha256="0" * 64)
    with pytest.raises(AgentgwError, match="another version"):
        image.load(tmp_path)


def test_load_without_a_build_says_how_to_make_one(tmp_path: Path) -> None:
    """No image yet: the error names the command that builds it."""
    with pytest.raises(AgentgwError) as err:
        image.load(tmp_path)
    assert "agentgw sandbox build" in err.value.hint
