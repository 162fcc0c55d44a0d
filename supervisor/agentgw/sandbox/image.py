"""``agentgw sandbox build``: the guest kernel and base initramfs, from Debian packages only.

The kernel comes from the package ``linux-image-cloud-amd64`` depends on, fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x`` (never installed into /boot). Its
vmlinuz is a bzImage whose payload is LZ4; QEMU's PVH boot wants the ELF inside, so the payload
is cut at the legacy LZ4 magic and decompressed. The base initramfs is a newc cpio written here:
busybox-static with its applet links, users, the virtio modules, and the init of ``guest.py``.

Cache layout: ``<cache>/<kernel-version>/{vmlinux,base.cpio,manifest.json}`` plus ``current``,
a symlink to the newest build. A build happens in a temp dir and is renamed into place under a
lock. The cpio has fixed mtimes, owners and order, so the same inputs give the same bytes.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import lzma
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentgw.errors import die
from agentgw.fsio import flip_symlink
from agentgw.log import get_logger
from agentgw.run import run
from agentgw.sandbox import guest
from agentgw.sandbox.cpio import Writer

log = get_logger(__name__)

DEFAULT_CACHE = Path("var/cache/agentgw/sandbox")  # under the host root of paths.Layout
META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
MANIFEST_FORMAT = 1  # bump when render_base_cpio changes what it writes
LZ4_LEGACY_MAGIC = bytes.fromhex("02214c18")
ELF_MAGIC = b"\x7fELF"
APPLET_DIRS = ("bin/", "sbin/", "usr/bin/", "usr/sbin/")
_XEN_ELFNOTE_PHYS32_ENTRY = 18  # the note QEMU looks for to boot an ELF kernel via PVH


@dataclass(frozen=True)
class BaseInputs:
    """Everything ``base.cpio`` is made of; rendering it is a pure function of these."""

    busybox: bytes
    applets: tuple[str, ...]
    modules: Mapping[str, bytes]


@dataclass(frozen=True)
class Image:
    """A built image in the cache: the files QEMU boots and the manifest describing them."""

    dir: Path
    manifest: Mapping[str, Any]

    @property
    def vmlinux(self) -> Path:
        return self.dir / "vmlinux"

    @property
    def base_cpio(self) -> Path:
        return self.dir / "base.cpio"

    @property
    def kernel_version(self) -> str:
        return str(self.manifest["kernel_version"])


def guest_digest() -> str:
    """Identifies the guest side of this agentgw (scripts, modules, layout version): a cached
    image built by another version is stale."""
    parts = (guest.INIT, guest.RUN_JOB_SCRIPT, " ".join(guest.MODULES), str(MANIFEST_FORMAT))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def render_base_cpio(inputs: BaseInputs) -> bytes:
    """The base initramfs; same inputs, same bytes (mtime 0, root-owned, fixed order)."""
    w = Writer()
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sbin", "sys", "usr",
              "usr/bin", "usr/sbin"):
        w.dir(d)
    w.dir("root", 0o700)
    w.dir("tmp", 0o1777)
    w.dir(guest.CONTROL, 0o711)
    w.dir(guest.WORK, 0o700, uid=guest.UID, gid=guest.GID)
    # The kernel opens /dev/console for init's stdio before anything is mounted.
    w.chardev("dev/console", 5, 1)
    w.file("bin/busybox", inputs.busybox, 0o755)
    for applet in sorted(set(inputs.applets)):
        if applet != "bin/busybox" and applet.startswith(APPLET_DIRS):
            w.symlink(applet, "/bin/busybox")
    w.file("etc/passwd", guest.PASSWD.encode())
    w.file("etc/group", guest.GROUP.encode())
    for name in guest.MODULES:
        w.file(f"lib/modules/{name}.ko", inputs.modules[name])
    w.file(guest.RUN_JOB, guest.RUN_JOB_SCRIPT.encode(), 0o755)
    w.file("init", guest.INIT.encode(), 0o755)
    return w.render()


def parse_depends(text: str, meta: str = META_PACKAGE) -> str:
    """The versioned kernel package out of ``apt-cache depends <meta>``."""
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Depends" and value.strip().startswith("linux-image-"):
            return value.strip().strip("<>")
    raise die(f"{meta} depends on no linux-image package", hint="run apt-get update")


def find_lz4_payload(vmlinuz: bytes) -> int:
    """Offset of the LZ4 (legacy frame) payload inside a bzImage."""
    at = vmlinuz.find(LZ4_LEGACY_MAGIC)
    if at < 0:
        raise die("vmlinuz has no LZ4 payload", hint="the Debian kernel's compression changed")
    return at


def check_vmlinux(data: bytes) -> None:
    """An x86-64 ELF whose loadable segments are complete and which carries the PVH entry note
    (what QEMU needs to boot it directly); raises otherwise."""
    if data[:4] != ELF_MAGIC or data[4] != 2:
        raise die("decompressed kernel is not a 64-bit ELF")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    pvh = False
    for i in range(phnum):
        ptype, _, offset, _, _, filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if offset + filesz > len(data):
            raise die("decompressed kernel is truncated")
        if ptype == 4:  # PT_NOTE
            pvh = pvh or _has_pvh_note(data[offset:offset + filesz])
    if not pvh:
        raise die("kernel has no PVH entry note; QEMU cannot boot it directly")


def _has_pvh_note(notes: bytes) -> bool:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
        name = notes[pos + 12:pos + 12 + namesz].rstrip(b"\0")
        if name == b"Xen" and ntype == _XEN_ELFNOTE_PHYS32_ENTRY:
            return True
        pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _field(text: str, key: str) -> str:
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            return line.split(":", 1)[1].strip()
    raise die(f"apt-cache show printed no {key}")


def _module(tree: Path, name: str, work: Path) -> bytes:
    """A module's bytes, decompressed whatever way Debian ships it (.ko, .ko.xz, .ko.zst)."""
    found = sorted(p for p in tree.rglob(f"{name}.ko*") if p.parent.name != "updates")
    if not found:
        raise die(f"kernel package has no module {name}")
    path = found[0]
    if path.suffix == ".ko":
        return path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(path.read_bytes())
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes())
    if path.suffix == ".zst":
        out = work / f"{name}.ko"
        run(["zstd", "-d", "-q", "-f", "-o", out, path])
        return out.read_bytes()
    raise die(f"unknown module compression: {path.name}")


def _busybox() -> tuple[Path, str]:
    listing = run(["dpkg", "-L", BUSYBOX_PACKAGE], check=False)
    paths = [Path(p) for p in listing.stdout.splitlines() if p.endswith("/bin/busybox")]
    if listing.returncode != 0 or not paths:
        raise die(f"{BUSYBOX_PACKAGE} is not installed", hint=f"apt-get install {BUSYBOX_PACKAGE}")
    version = run(["dpkg-query", "-W", "-f", "${Version}", BUSYBOX_PACKAGE]).stdout.strip()
    return paths[0], version


def _extract_vmlinux(vmlinuz: Path, work: Path) -> Path:
    data = vmlinuz.read_bytes()
    payload = work / "payload.lz4"
    payload.write_bytes(data[find_lz4_payload(data):])
    out = work / "vmlinux"
    # lz4 reads the legacy frame, then trips over the bzImage trailer and exits 1; the output is
    # complete, which check_vmlinux proves instead of trusting the exit code.
    run(["lz4", "-d", "-f", "-q", payload, out], check=False)
    if not out.exists():
        raise die("lz4 produced no kernel", hint="apt-get install lz4")
    check_vmlinux(out.read_bytes())
    payload.unlink()
    return out


@contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _current_inputs(package: str) -> dict[str, str]:
    show = run(["apt-cache", "show", "--no-all-versions", package]).stdout
    bb_path, bb_version = _busybox()
    return {
        "kernel_package": package,
        "kernel_package_version": _field(show, "Version"),
        "kernel_deb_sha256": _field(show, "SHA256"),
        "busybox_version": bb_version,
        "busybox_sha256": _sha256(bb_path),
        "guest_sha256": guest_digest(),
    }


def build(cache: Path, *, force: bool = False, meta: str = META_PACKAGE) -> tuple[Image, bool]:
    """Build (or reuse) the image for the kernel ``meta`` currently depends on.

    Returns the image and whether it was built now (False: the cached one matches every input).
    """
    package = parse_depends(run(["apt-cache", "depends", meta]).stdout, meta)
    kver = package.removeprefix("linux-image-")
    inputs = _current_inputs(package)
    with _locked(cache):
        final = cache / kver
        if not force and (final / "manifest.json").exists():
            cached = _read_manifest(final)
            if {k: cached.get(k) for k in inputs} == inputs:
                _point_current(cache, kver)
                publish(cache, final)
                return Image(final, cached), False
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            manifest = _build_into(tmp, package, kver, inputs)
            _swap_in(tmp / kver, final, cache)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _point_current(cache, kver)
        publish(cache, final)
    log.info("sandbox_image_built", kernel=kver, dir=str(final))
    return Image(final, manifest), True


def _build_into(tmp: Path, package: str, kver: str, inputs: dict[str, str]) -> dict[str, Any]:
    dl, tree, out = tmp / "dl", tmp / "tree", tmp / kver
    for d in (dl, tree, out):
        d.mkdir()
    run(["apt-get", "download", "-q", package], cwd=dl)
    debs = sorted(dl.glob("*.deb"))
    if len(debs) != 1:
        raise die(f"apt-get download {package} produced {len(debs)} packages")
    if _sha256(debs[0]) != inputs["kernel_deb_sha256"]:
        raise die(f"{debs[0].name} does not match the archive's SHA256")
    run(["dpkg-deb", "-x", debs[0], tree])
    vmlinux = _extract_vmlinux(tree / "boot" / f"vmlinuz-{kver}", tmp)
    os.replace(vmlinux, out / "vmlinux")
    bb_path, _ = _busybox()
    applets = tuple(run([bb_path, "--list-full"]).stdout.split())
    # bookworm ships modules under /lib/modules, merged-/usr releases under /usr/lib/modules.
    mod_dirs = [d for d in (tree / "lib" / "modules", tree / "usr" / "lib" / "modules")
                if d.is_dir()]
    if not mod_dirs:
        raise die(f"{package} has no modules directory")
    modules = {m: _module(mod_dirs[0], m, tmp) for m in guest.MODULES}
    base = render_base_cpio(BaseInputs(bb_path.read_bytes(), applets, modules))
    (out / "base.cpio").write_bytes(base)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "kernel_version": kver,
        **inputs,
        "modules": {m: hashlib.sha256(modules[m]).hexdigest() for m in guest.MODULES},
        "files": {name: _sha256(out / name) for name in ("vmlinux", "base.cpio")},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def publish(cache: Path, final: Path) -> None:
    """Make the image readable by every job unit's dynamic user (0755 directories, 0644
    files): it is Debian's kernel and busybox, nothing secret, and each microVM job's QEMU
    boots it as a user of its own. Also repairs a cache an older build left 0700."""
    for directory in (cache, final):
        directory.chmod(0o755)
    for name in ("vmlinux", "base.cpio", "manifest.json"):
        if (final / name).exists():
            (final / name).chmod(0o644)


def _swap_in(new: Path, final: Path, cache: Path) -> None:
    """Rename the finished build into place; an older build of the same kernel is moved aside
    first (a directory cannot be replaced by rename) and removed after."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=".old-", dir=cache))
        os.replace(final, old / "image")
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _point_current(cache: Path, kver: str) -> None:
    link = cache / "current"
    if link.is_symlink() and os.readlink(link) == kver:
        return
    flip_symlink(link, kver)


def _read_manifest(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise die(f"unreadable sandbox manifest in {directory}: {exc}",
                  hint="run 'agentgw sandbox build --force'") from exc
    if not isinstance(data, dict):
        raise die(f"bad sandbox manifest in {directory}", hint="run 'agentgw sandbox build'")
    return data


def load(cache: Path, *, verify: bool = False) -> Image:
    """The current image; ``verify`` re-hashes its files against the manifest."""
    directory = cache / "current"
    if not (directory / "manifest.json").exists():
        raise die(f"no sandbox image in {cache}", hint="run 'agentgw sandbox build'")
    image = Image(directory.resolve(), _read_manifest(directory))
    if image.manifest.get("guest_sha256") != guest_digest():
        raise die("the sandbox image was built for another version of agentgw",
                  hint="run 'agentgw sandbox build'")
    for name in ("vmlinux", "base.cpio"):
        if not (image.dir / name).is_file():
            raise die(f"sandbox image is missing {name}", hint="run 'agentgw sandbox build'")
        if verify and _sha256(image.dir / name) != image.manifest["files"][name]:
            raise die(f"sandbox image file {name} does not match its manifest",
                      hint="run 'agentgw sandbox build --force'")
    return image

