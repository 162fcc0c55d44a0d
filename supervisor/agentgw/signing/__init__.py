"""Ed25519 keys and signatures, for releases and proof records alike.

Private keys are PKCS#8 PEM files (0600), public keys SubjectPublicKeyInfo PEM; a public key may
also be given as base64 of its 32 raw bytes (the host config allows both). A key's fingerprint
is the first 16 hex digits of the sha256 of its raw bytes.

cryptography is imported where a key is used, not with this module: its import costs ~20 ms,
and commands that only pass through here (a promote of an unsigned release under a policy that
does not require signatures) never touch a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from agentgw.errors import die, usage

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

FINGERPRINT_HEX = 16
PUBLIC_SUFFIX = ".pub"
PEM_MARK = "-----BEGIN"


def fingerprint(key: Ed25519PublicKey) -> str:
    """Short stable name of a public key: sha256 of its raw bytes, first 16 hex digits."""
    return hashlib.sha256(raw_public_key(key)).hexdigest()[:FINGERPRINT_HEX]


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def encode_public_key(key: Ed25519PublicKey) -> str:
    """The base64 form of a public key (what a signature record carries)."""
    return base64.b64encode(raw_public_key(key)).decode()


def render_private_key(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def render_public_key(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def parse_public_key(data: str | bytes) -> Ed25519PublicKey:
    """A public key from PEM or from base64 of its 32 bytes; ValueError if it is neither."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text = data.decode("ascii", errors="replace") if isinstance(data, bytes) else data
    text = text.strip()
    if text.startswith(PEM_MARK):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ValueError("not a PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("neither PEM nor base64") from exc
    if len(raw) != 32:
        raise ValueError(f"base64 decodes to {len(raw)} bytes, an Ed25519 key has 32")
    return Ed25519PublicKey.from_public_bytes(raw)


def inline_key(value: str) -> bool:
    """Whether a trusted_keys entry is the key itself (PEM, or base64 of its 32 bytes) rather
    than a file path. Decided by the content, not a leading '/': base64 may start with '/'.
    Only text that looks like a key reaches the parser (and its cryptography import)."""
    text = value.strip()
    if not text.startswith(PEM_MARK):
        try:
            raw = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            return False
        if len(raw) != 32:
            return False
    try:
        parse_public_key(text)
    except ValueError:
        return False
    return True


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise usage(
            f"cannot read public key {path}: {exc.strerror}",
            hint="give the path of an Ed25519 public key (PEM, or base64 of its 32 bytes)",
        ) from exc
    try:
        return parse_public_key(data)
    except ValueError as exc:
        raise usage(
            f"{path} is not an Ed25519 public key: {exc}",
            hint="create a key pair with 'agentgw release keygen --out PATH'",
        ) from exc


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise usage(
            f"cannot read signing key {path}: {exc.strerror}",
            hint="give the private key file written by 'agentgw release keygen'",
        ) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise usage(
            f"{path} is not an unencrypted PEM private key",
            hint="create a key pair with 'agentgw release keygen --out PATH'",
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise usage(
            f"{path} is not an Ed25519 private key",
            hint="create a key pair with 'agentgw release keygen --out PATH'",
        )
    return key


def trusted_keys(entries: Iterable[str]) -> dict[str, Ed25519PublicKey]:
    """The host's trusted public keys by fingerprint; an entry is a file path or a key inline."""
    found: dict[str, Ed25519PublicKey] = {}
    hint = "fix trusted_keys in agentgw.yaml (agentgw config check)"
    for entry in entries:
        inline = inline_key(entry)
        shown = "given inline" if inline else entry
        data: str | bytes = entry
        if not inline:
            try:
                data = Path(entry).read_bytes()
            except OSError as exc:
                raise die(f"cannot read trusted key {entry}: {exc.strerror}", hint=hint) from exc
        try:
            key = parse_public_key(data)
        except ValueError as exc:
            raise die(f"trusted key {shown} is unusable: {exc}", hint=hint) from exc
        found[fingerprint(key)] = key
    return found


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def verify(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is ``key``'s signature over exactly ``data``."""
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def generate_keypair(out: Path) -> str:
    """Write a new private key to ``out`` (0600) and its public key to ``out.pub`` (0644).

    Never overwrites: an existing key may be the only copy. Returns the key's fingerprint.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = out.with_name(out.name + PUBLIC_SUFFIX)
    for path in (out, public):
        if path.exists() or path.is_symlink():
            raise usage(
                f"{path} already exists", hint="choose another --out; keys are never replaced"
            )
    key = Ed25519PrivateKey.generate()
    _write_new(out, render_private_key(key), 0o600)
    _write_new(public, render_public_key(key.public_key()), 0o644)
    return fingerprint(key.public_key())


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a complete file under a temp name, then link it into place only if the name is free."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError as exc:
        raise usage(f"{path} already exists", hint="keys are never replaced") from exc
    finally:
        os.unlink(tmp)
