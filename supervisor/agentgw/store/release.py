"""Read-only views of releases: find, list, re-hash and verify, and may-this-be-promoted.

Nothing here writes: apply (which writes the store), observe, the registry and the CLI all read
releases through this module, which imports none of them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from agentgw.errors import AgentgwError, Exit, usage
from agentgw.fsio import MANIFEST_FILE, read_manifest_bytes
from agentgw.model.release import (
    Manifest,
    ManifestSignature,
    Problem,
    ProblemKind,
    ProfileUse,
    ReleasePolicy,
    ReleaseRef,
    Slot,
)
from agentgw.paths import Layout
from agentgw.plan.release import (
    SIGNATURE_FILE,
    STATEMENT_SIG_FILE,
    check_downgrade,
    content_digest,
    match_release,
    parse_release_name,
    plan_gc,
    signing_payload,
    statement_of,
)
from agentgw.plan.tree_diff import ObservedEntry, diff_tree, render_problems
from agentgw.signing import (
    fingerprint,
    parse_public_key,
    raw_public_key,
    sshsig,
    trusted_keys,
    verify,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

CHUNK = 1 << 20
HASH_THREADS = max(2, min(4, os.cpu_count() or 1))
# Below this many files threads buy nothing.
SMALL_TREE = 64
SLOTS: tuple[Slot, ...] = ("current", "previous")
VERIFY_HINT = "see 'agentgw release verify {name}'; re-add the release from its source"


def release_names(layout: Layout) -> list[str]:
    """Names of the release directories (work in progress and other files are not releases)."""
    if not layout.releases.is_dir():
        return []
    return sorted(
        entry.name
        for entry in os.scandir(layout.releases)
        if entry.is_dir(follow_symlinks=False) and parse_release_name(entry.name) is not None
    )


def find_release(layout: Layout, ref: str) -> Path:
    """The release directory ``ref`` names (a unique sha prefix or a full name); exit 2 if none
    or several match."""
    return layout.releases / match_release(release_names(layout), ref)


def read_manifest(release: Path) -> Manifest:
    try:
        return Manifest.model_validate_json(read_manifest_bytes(release))
    except OSError as exc:
        raise AgentgwError(
            f"{release.name}: cannot read {MANIFEST_FILE}: {exc.strerror}",
            hint=VERIFY_HINT.format(name=release.name),
            code=Exit.VERIFY,
        ) from exc
    except ValidationError as exc:
        raise AgentgwError(
            f"{release.name}: {MANIFEST_FILE} is invalid ({exc.error_count()} errors)",
            hint=VERIFY_HINT.format(name=release.name),
            code=Exit.VERIFY,
        ) from exc


def current_manifest(layout: Layout, profile: str) -> Manifest | None:
    """The manifest of the release a profile's ``current`` points at, None without one."""
    link = layout.current(profile)
    if not link.is_symlink():
        return None
    return read_manifest(Path(os.path.realpath(link)))


def release_owner(layout: Layout) -> tuple[int, int]:
    """Release trees belong to whoever owns the releases directory (root on a host)."""
    info = os.stat(layout.releases)
    return info.st_uid, info.st_gid


def profiles_using(layout: Layout) -> dict[str, list[ProfileUse]]:
    """Release name -> the profiles whose ``current`` or ``previous`` points at it."""
    gateways = layout.opt / "gateways"
    releases = os.path.realpath(layout.releases)
    uses: dict[str, list[ProfileUse]] = {}
    if not gateways.is_dir():
        return uses
    for profile in sorted(p.name for p in gateways.iterdir() if p.is_dir()):
        for slot in SLOTS:
            link = layout.current(profile) if slot == "current" else layout.previous(profile)
            if not link.is_symlink():
                continue
            real = os.path.realpath(link)
            if os.path.dirname(real) == releases:
                use = ProfileUse(profile=profile, slot=slot)
                uses.setdefault(os.path.basename(real), []).append(use)
    return uses


def list_releases(layout: Layout) -> list[ReleaseRef]:
    """Every release, newest first, with who uses it; cheap: nothing is re-hashed."""
    uses = profiles_using(layout)
    refs = [
        _ref(layout.releases / name, tuple(uses.get(name, ()))) for name in release_names(layout)
    ]
    return sorted(refs, key=lambda r: (r.version or 0, r.name), reverse=True)


def _ref(path: Path, used_by: tuple[ProfileUse, ...]) -> ReleaseRef:
    sha, label = parse_release_name(path.name) or ("", "")
    sig_path = path / SIGNATURE_FILE
    key = None
    if sig_path.is_file():
        with contextlib.suppress(OSError, ValidationError):
            key = ManifestSignature.model_validate_json(sig_path.read_bytes()).key
    statement_path = path / STATEMENT_SIG_FILE
    if key is None and statement_path.is_file():
        with contextlib.suppress(OSError, sshsig.BadSignature):
            key = fingerprint(sshsig.public_key_of(sshsig.parse(statement_path.read_bytes())))
    manifest, problem = None, None
    try:
        manifest = read_manifest(path)
    except AgentgwError as exc:
        problem = exc.message
    return ReleaseRef(
        name=path.name,
        sha=sha,
        label=label,
        path=path,
        version=manifest.version if manifest else None,
        created=manifest.created if manifest else None,
        size=manifest.size if manifest else 0,
        files=sum(1 for e in manifest.files if e.type == "file") if manifest else 0,
        signed=sig_path.exists(),
        key=key,
        used_by=used_by,
        problem=problem,
    )


def gc_candidates(layout: Layout, keep: int) -> list[str]:
    """What ``release gc --keep N`` removes: all but the N newest, never one a profile uses."""
    refs = list_releases(layout)
    in_use = {r.name for r in refs if r.used_by}
    return plan_gc([(r.name, r.version) for r in refs], in_use, keep)


# verification ----------------------------------------------------------------------------------


def hash_file(path: str | Path) -> tuple[str, int]:
    """sha256 and size of a regular file, never following a symlink swapped in."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    digest, size = hashlib.sha256(), 0
    try:
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest(), size


def _hash_batch(paths: list[str]) -> list[str]:
    return [hash_file(path)[0] for path in paths]


def hash_files(paths: list[str]) -> dict[str, str]:
    """sha256 of each file, on a few threads: hashlib and os.read release the GIL, and a
    release is mostly small files, so each thread takes a whole share (one task per thread,
    not per file: 10,000 futures cost more than the hashing)."""
    if len(paths) < SMALL_TREE:
        return dict(zip(paths, _hash_batch(paths), strict=True))
    from concurrent.futures import ThreadPoolExecutor  # big trees only (~4 ms to import)

    shares = [paths[i::HASH_THREADS] for i in range(HASH_THREADS)]
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        digests = pool.map(_hash_batch, shares)
        return {p: d for share, done in zip(shares, digests, strict=True)
                for p, d in zip(share, done, strict=True)}


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISCHR, "chardev"),
        (stat.S_ISBLK, "blockdev"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return kind
    return "other"


def _observe(
    path: str, rel: str, info: os.stat_result, digest: str | None = None
) -> ObservedEntry:
    kind = _kind(info.st_mode)
    target = os.readlink(path) if kind == "symlink" else None
    return ObservedEntry(
        path=rel,
        type=kind,
        mode=stat.S_IMODE(info.st_mode),
        uid=info.st_uid,
        gid=info.st_gid,
        size=info.st_size,
        sha256=digest if kind == "file" else None,
        target=target,
    )


def scan_tree(root: Path) -> list[ObservedEntry]:
    """Every path under ``root`` (``.`` is root itself), files re-hashed, links not followed.

    Files are hashed on a few threads (hashlib releases the GIL while it digests): a promote
    re-hashes the whole release, ~0.4 s for 10,000 files and 222 MiB here (make bench,
    bench_runtime) instead of ~0.8 s in one thread.
    """
    top = os.fspath(root)
    found: list[tuple[str, str, os.stat_result]] = [(".", top, os.lstat(top))]
    pending = [("", top)]
    while pending:
        rel, full = pending.pop()
        with os.scandir(full) as entries:
            for entry in entries:
                path = f"{rel}/{entry.name}" if rel else entry.name
                info = entry.stat(follow_symlinks=False)
                found.append((path, entry.path, info))
                if stat.S_ISDIR(info.st_mode):
                    pending.append((path, entry.path))
    digests = hash_files([full for _, full, info in found if stat.S_ISREG(info.st_mode)])
    observed = [_observe(full, rel, info, digests.get(full)) for rel, full, info in found]
    return sorted(observed, key=lambda e: e.path)


@dataclass(frozen=True)
class Checked:
    """One signature of a release, checked: what is wrong with it, or whether a trusted key
    made it."""

    problem: Problem | None
    trusted: bool
    key: str
    path: str


def signature_problems(
    manifest: Manifest,
    record: bytes | None,
    policy: ReleasePolicy,
    trusted: Mapping[str, Ed25519PublicKey],
    statement_sig: bytes | None = None,
) -> list[Problem]:
    """What is wrong with a release's signatures under the host policy.

    Two kinds: ``manifest.sig``, made on this host over its manifest (``release add
    --sign-key``), and ``release.sig``, made once off-host over the host-independent statement
    (``release sign``, then ``release add --signature``). A signature that is present must
    always be valid; with ``require_signature`` at least one must be by a trusted key.
    """
    checked = [
        c
        for c in (
            None if record is None else _check_manifest_sig(manifest, record, trusted),
            None if statement_sig is None else _check_statement_sig(
                manifest, statement_sig, trusted
            ),
        )
        if c is not None
    ]
    bad = [c.problem for c in checked if c.problem is not None]
    if bad:
        return bad
    if not policy.require_signature or any(c.trusted for c in checked):
        return []
    if not checked:
        return [_sig("unsigned", "not signed, and this host requires signed releases")]
    return [
        Problem(kind="untrusted", path=c.path,
                detail=f"signed by key {c.key}, which is not a trusted key")
        for c in checked
    ]


def _check_manifest_sig(
    manifest: Manifest, record: bytes, trusted: Mapping[str, Ed25519PublicKey]
) -> Checked:
    try:
        signature = ManifestSignature.model_validate_json(record)
        embedded = parse_public_key(signature.public_key)
        raw = base64.b64decode(signature.signature, validate=True)
    except (ValidationError, ValueError, binascii.Error):
        return Checked(_sig("signature", "not a valid signature record"), False, "", SIGNATURE_FILE)
    if fingerprint(embedded) != signature.key:
        problem = _sig("signature", f"key {signature.key} does not match the public key it carries")
        return Checked(problem, False, signature.key, SIGNATURE_FILE)
    # Verify with the trusted key of that fingerprint, not the embedded one: a key forged to
    # collide on the short fingerprint then fails here instead of passing as trusted.
    key = trusted.get(signature.key, embedded)
    if not verify(key, raw, signing_payload(manifest)):
        problem = _sig("signature", f"signature by key {signature.key} does not match the manifest")
        return Checked(problem, False, signature.key, SIGNATURE_FILE)
    ok = signature.key in trusted and raw_public_key(key) == raw_public_key(embedded)
    return Checked(None, ok, signature.key, SIGNATURE_FILE)


def _check_statement_sig(
    manifest: Manifest, armored: bytes, trusted: Mapping[str, Ed25519PublicKey]
) -> Checked:
    """``release.sig``: an SSHSIG signature over the statement of what the manifest lists."""
    def problem(detail: str) -> Problem:
        return Problem(kind="signature", path=STATEMENT_SIG_FILE, detail=detail)

    try:
        sig = sshsig.parse(armored)
    except sshsig.BadSignature as exc:
        return Checked(problem(f"not a valid SSH signature: {exc}"), False, "", STATEMENT_SIG_FILE)
    embedded = sshsig.public_key_of(sig)
    key = fingerprint(embedded)
    if not sshsig.verify_message(sig, statement_of(manifest)):
        return Checked(
            problem(f"signature by key {key} does not match this release (its sha, label and "
                    f"content {content_digest(manifest.files)})"),
            False, key, STATEMENT_SIG_FILE,
        )
    known = trusted.get(key)
    ok = known is not None and raw_public_key(known) == sig.public_key
    return Checked(None, ok, key, STATEMENT_SIG_FILE)


def _sig(kind: ProblemKind, detail: str) -> Problem:
    return Problem(kind=kind, path=SIGNATURE_FILE, detail=detail)


def verify_tree(
    release: Path, policy: ReleasePolicy, owner: tuple[int, int], expected: Manifest | None = None
) -> list[Problem]:
    """Every problem of one release directory: tree vs manifest, name, signature vs policy."""
    try:
        manifest = read_manifest(release)
    except AgentgwError as exc:
        return [Problem(kind="manifest", path=MANIFEST_FILE, detail=exc.message)]
    problems = diff_tree(manifest, scan_tree(release), owner)
    if manifest.name != release.name:
        problems.append(
            Problem(kind="manifest", path=MANIFEST_FILE, detail=f"describes {manifest.name}")
        )
    if expected is not None and manifest != expected:
        problems.append(
            Problem(kind="manifest", path=MANIFEST_FILE, detail="differs from the one checked")
        )
    sig_path = release / SIGNATURE_FILE
    record = sig_path.read_bytes() if sig_path.is_file() else None
    statement_path = release / STATEMENT_SIG_FILE
    statement = statement_path.read_bytes() if statement_path.is_file() else None
    return problems + signature_problems(
        manifest, record, policy, trusted_keys(policy.trusted_keys), statement
    )


def verify_release(layout: Layout, ref: str, policy: ReleasePolicy) -> list[Problem]:
    """Re-hash a release (by sha prefix or name) and check it against its manifest and policy."""
    return verify_tree(find_release(layout, ref), policy, release_owner(layout))


def check_promotable(
    layout: Layout,
    manifest: Manifest,
    policy: ReleasePolicy,
    current_manifest: Manifest | None,
    allow_downgrade: bool,
) -> None:
    """Refuse a promote to ``manifest``'s release unless it is intact, signed as the policy
    demands, and not older than ``current_manifest`` (unless ``allow_downgrade``).

    Exit 2 for a refused downgrade, exit 3 when the release fails verification.
    """
    check_downgrade(manifest, current_manifest, allow_downgrade)
    release = layout.release(manifest.sha, manifest.label)
    if not release.is_dir():
        raise usage(
            f"release {manifest.name} is not on this host", hint="see 'agentgw release list'"
        )
    problems = verify_tree(release, policy, release_owner(layout), expected=manifest)
    if problems:
        raise AgentgwError(
            f"release {manifest.name} cannot be promoted: {render_problems(problems)}",
            hint=VERIFY_HINT.format(name=manifest.name),
            code=Exit.VERIFY,
        )
