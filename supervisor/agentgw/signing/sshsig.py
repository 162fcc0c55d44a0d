"""OpenSSH's signature format (``ssh-keygen -Y sign``), for Ed25519 keys, with cryptography.

A release is signed once, off-host, over a host-independent statement (its sha, label and
content digest: :func:`agentgw.plan.release.render_statement`); any host that trusts the public
key verifies it. The envelope is OpenSSH's SSHSIG (PROTOCOL.sshsig), so the standard tool checks
it too::

    ssh-keygen -Y verify -f allowed_signers -I release -n agentgw-release -s release.sig \\
        < statement

Layout of the armored blob: ``"SSHSIG" | uint32 1 | string publickey | string namespace |
string reserved | string hash_algorithm | string signature``; what is signed: ``"SSHSIG" |
string namespace | string reserved | string hash_algorithm | string H(message)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

MAGIC = b"SSHSIG"
VERSION = 1
NAMESPACE = "agentgw-release"
HASH = "sha512"
KEY_TYPE = b"ssh-ed25519"
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
LINE = 70


class BadSignature(ValueError):
    """Not an SSHSIG Ed25519 signature this module can read."""


@dataclass(frozen=True)
class SshSig:
    """A parsed signature: the signer's raw Ed25519 key, the namespace and the signature."""

    public_key: bytes
    namespace: str
    hash_algorithm: str
    signature: bytes


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _read_string(blob: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(blob):
        raise BadSignature("truncated")
    (size,) = struct.unpack(">I", blob[at : at + 4])
    end = at + 4 + size
    if end > len(blob):
        raise BadSignature("truncated")
    return blob[at + 4 : end], end


def _hash(message: bytes, algorithm: str) -> bytes:
    if algorithm == "sha512":
        return hashlib.sha512(message).digest()
    if algorithm == "sha256":
        return hashlib.sha256(message).digest()
    raise BadSignature(f"hash algorithm {algorithm!r} is not sha256 or sha512")


def signed_data(message: bytes, namespace: str, algorithm: str = HASH) -> bytes:
    """What the key signs for ``message`` in ``namespace`` (PROTOCOL.sshsig)."""
    return (
        MAGIC
        + _string(namespace.encode())
        + _string(b"")
        + _string(algorithm.encode())
        + _string(_hash(message, algorithm))
    )


def ssh_public_key_blob(raw: bytes) -> bytes:
    return _string(KEY_TYPE) + _string(raw)


def render_ssh_public_key(key: Ed25519PublicKey, comment: str = "") -> str:
    """``ssh-ed25519 AAAA… comment``: the line an allowed_signers file or authorized_keys holds."""
    from agentgw.signing import raw_public_key

    text = "ssh-ed25519 " + base64.b64encode(ssh_public_key_blob(raw_public_key(key))).decode()
    return f"{text} {comment}".rstrip()


def sign_message(key: Ed25519PrivateKey, message: bytes, namespace: str = NAMESPACE) -> str:
    """The armored SSHSIG signature of ``message`` by ``key``."""
    from agentgw.signing import raw_public_key

    signature = key.sign(signed_data(message, namespace))
    blob = (
        MAGIC
        + struct.pack(">I", VERSION)
        + _string(ssh_public_key_blob(raw_public_key(key.public_key())))
        + _string(namespace.encode())
        + _string(b"")
        + _string(HASH.encode())
        + _string(_string(KEY_TYPE) + _string(signature))
    )
    text = base64.b64encode(blob).decode()
    lines = [text[i : i + LINE] for i in range(0, len(text), LINE)]
    return "\n".join([BEGIN, *lines, END]) + "\n"


def parse(armored: str | bytes) -> SshSig:
    """Read an armored SSHSIG signature; BadSignature if it is anything else."""
    text = armored.decode("ascii", "replace") if isinstance(armored, bytes) else armored
    text = text.strip()
    if not (text.startswith(BEGIN) and text.endswith(END)):
        raise BadSignature("not an armored SSH signature")
    try:
        blob = base64.b64decode("".join(text[len(BEGIN) : -len(END)].split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadSignature("its base64 is broken") from exc
    if blob[:6] != MAGIC or len(blob) < 10:
        raise BadSignature("no SSHSIG preamble")
    (version,) = struct.unpack(">I", blob[6:10])
    if version != VERSION:
        raise BadSignature(f"SSHSIG version {version}")
    key_blob, at = _read_string(blob, 10)
    namespace, at = _read_string(blob, at)
    _, at = _read_string(blob, at)
    algorithm, at = _read_string(blob, at)
    sig_blob, at = _read_string(blob, at)
    key_type, k = _read_string(key_blob, 0)
    raw_key, _ = _read_string(key_blob, k)
    sig_type, s = _read_string(sig_blob, 0)
    raw_sig, _ = _read_string(sig_blob, s)
    if key_type != KEY_TYPE or sig_type != KEY_TYPE or len(raw_key) != 32 or len(raw_sig) != 64:
        raise BadSignature("not an Ed25519 signature")
    return SshSig(raw_key, namespace.decode(errors="replace"), algorithm.decode(), raw_sig)


def verify_message(sig: SshSig, message: bytes, namespace: str = NAMESPACE) -> bool:
    """Whether ``sig`` is its key's signature over ``message`` in ``namespace``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if sig.namespace != namespace:
        return False
    try:
        data = signed_data(message, namespace, sig.hash_algorithm)
        Ed25519PublicKey.from_public_bytes(sig.public_key).verify(sig.signature, data)
    except (InvalidSignature, BadSignature, ValueError):
        return False
    return True


def public_key_of(sig: SshSig) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(sig.public_key)
