"""The newc writer: what it writes the parser (and busybox) read back, byte for byte stable."""

from __future__ import annotations

import shutil
import stat
import subprocess

import pytest

from agentgw.sandbox.cpio import CpioError, Entry, Writer, parse


def sample() -> Writer:
    w = Writer()
    w.dir("etc")
    w.file("etc/passwd", b"root:x:0:0::/:/bin/sh\n", 0o644)
    w.file("etc/odd", b"abc", 0o600, uid=1000, gid=1001)  # a length that needs padding
    w.symlink("etc/sh", "/bin/busybox")
    w.chardev("console", 5, 1)
    w.file("empty", b"")
    return w


def test_round_trip_keeps_every_field() -> None:
    """Each member comes back with its name, type, mode, owner, data and device numbers."""
    got = {e.name: e for e in parse(sample().render())}
    assert sorted(got) == ["console", "empty", "etc", "etc/odd", "etc/passwd", "etc/sh"]
    assert got["etc"].is_dir
    assert got["etc/passwd"].data == b"root:x:0:0::/:/bin/sh\n"
    odd = got["etc/odd"]
    assert (stat.S_IMODE(odd.mode), odd.uid, odd.gid, odd.data) == (0o600, 1000, 1001, b"abc")
    assert got["etc/sh"].is_symlink and got["etc/sh"].data == b"/bin/busybox"
    assert stat.S_ISCHR(got["console"].mode) and got["console"].rdev == (5, 1)
    assert got["empty"].data == b""


def test_archive_is_aligned_and_ends_with_the_trailer() -> None:
    """newc pads headers and data to 4 bytes and closes with TRAILER!!! (what the kernel wants)."""
    data = sample().render()
    assert len(data) % 4 == 0
    assert b"TRAILER!!!\0" in data[-128:]


def test_same_entries_same_bytes() -> None:
    """Rendering is deterministic: no clock, no host uid, inode numbers count from one."""
    assert sample().render() == sample().render()


def test_concatenated_archives_parse_like_the_kernel_unpacks_them() -> None:
    """A job archive appended to the base (with zero padding between) adds its members."""
    second = Writer()
    second.file("job", b"x")
    both = parse(sample().render() + b"\0" * 8 + second.render())
    assert [e.name for e in both][-1] == "job"


@pytest.mark.parametrize("name", ["/abs", "a/../b", "", "a//b", "./a", "nul\0"])
def test_bad_names_are_refused(name: str) -> None:
    """Absolute, dotted, empty or NUL-carrying names never reach an archive."""
    with pytest.raises(CpioError):
        Writer().file(name, b"")


def test_duplicates_are_refused() -> None:
    """One archive, one member per name: a second write would silently shadow the first."""
    w = Writer()
    w.file("a", b"1")
    with pytest.raises(CpioError):
        w.file("a", b"2")


def test_parents_adds_missing_directories_once() -> None:
    """Nested job files get their directories, owned as asked, each exactly once."""
    w = Writer()
    w.parents("work/a/b/file", uid=7, gid=7)
    w.parents("work/a/c/file", uid=7, gid=7)
    entries = parse(w.render())
    assert [e.name for e in entries] == ["work", "work/a", "work/a/b", "work/a/c"]
    assert {e.uid for e in entries} == {7}


def test_truncated_archive_is_an_error() -> None:
    """A cut archive is reported, not half-read."""
    with pytest.raises(CpioError):
        parse(sample().render()[:200])


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox to cross-check")
def test_busybox_cpio_lists_our_archive() -> None:
    """An independent newc reader (busybox cpio, as in the guest) sees the same members."""
    listed = subprocess.run(
        ["busybox", "cpio", "-t"], input=sample().render(), capture_output=True, check=True
    ).stdout.decode().split()
    assert listed == [e.name for e in parse(sample().render())]


def test_entry_defaults_describe_a_root_owned_member() -> None:
    """An Entry without owner or time is root's, at the epoch (what reproducibility needs)."""
    e = Entry("x", stat.S_IFREG | 0o644)
    assert (e.uid, e.gid, e.mtime, e.data) == (0, 0, 0, b"")
