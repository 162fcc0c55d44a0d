"""Signed proof records: the host key, signing, atomic writes, and ``attest verify``.

The signature is Ed25519 over the record's canonical JSON (keys sorted, no whitespace, UTF-8)
with the ``signature`` member left out; ``key_fingerprint`` is inside the signed part. So a
record can be re-indented and still verify, while any change to a value, or an added or
removed member, does not. The host key is ``<state>/host.key`` (0600, made on the first
``verify``) with its public half in ``host.key.pub`` for reviewers.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from agentgw.errors import AgentgwError, usage
from agentgw.fsio import write_atomic
from agentgw.model.proof import ProofRecord
from agentgw.paths import Layout
from agentgw.signing import (
    PUBLIC_SUFFIX,
    fingerprint,
    generate_keypair,
    load_private_key,
    load_public_key,
    render_public_key,
    sign,
    verify,
)

HOST_KEY = "host.key"
SIGNATURE = "signature"


def host_key_path(layout: Layout) -> Path:
    """The private key, in the state dir's keys/ (0700): a directory the registry's and the
    gateways' units cannot see (it exists from init on, so their sandboxes always hide it)."""
    return layout.state / "keys" / HOST_KEY


def host_public_key_path(layout: Layout) -> Path:
    return layout.state / (HOST_KEY + PUBLIC_SUFFIX)


def load_or_create_host_key(layout: Layout) -> Ed25519PrivateKey:
    """The host's signing key, created (0600, public half 0644 beside the state dir's records)
    the first time it is needed; a key left by an older agentgw in the state dir is moved."""
    path = host_key_path(layout)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    old = layout.state / HOST_KEY
    if not path.exists() and old.exists():
        os.rename(old, path)
    if not path.exists():
        try:
            generate_keypair(path)
        except AgentgwError:
            # Another verify created it in the meantime: generate_keypair never overwrites.
            if not path.exists():
                raise
    key = load_private_key(path)
    public = host_public_key_path(layout)
    if not public.exists():
        write_atomic(public, render_public_key(key.public_key()), mode=0o644,
                     tmp=public.with_name(f".{public.name}.tmp"))
    return key


def canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def signed_bytes(document: Mapping[str, Any]) -> bytes:
    """What the signature covers: the whole document except the signature itself."""
    return canonical({k: v for k, v in document.items() if k != SIGNATURE})


def sign_record(record: ProofRecord, key: Ed25519PrivateKey) -> ProofRecord:
    unsigned = record.model_copy(
        update={"key_fingerprint": fingerprint(key.public_key()), "signature": ""}
    )
    signature = sign(key, signed_bytes(unsigned.model_dump(mode="json")))
    return unsigned.model_copy(update={"signature": base64.b64encode(signature).decode()})


def render_record(record: ProofRecord) -> str:
    return json.dumps(record.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def record_path(layout: Layout, profile: str) -> Path:
    return layout.proofs / f"{profile}.json"


def write_record(layout: Layout, record: ProofRecord) -> Path:
    """Replace the profile's record atomically: readers see the old one or the new one."""
    path = record_path(layout, record.profile)
    layout.proofs.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, render_record(record), owner="root", group="root", mode=0o644)
    return path


@dataclass(frozen=True)
class Attestation:
    """The answer of ``attest verify``: ok, and why (or why not)."""

    ok: bool
    reason: str
    key_fingerprint: str
    profile: str | None = None
    time: str | None = None
    isolated: bool | None = None


def attest(data: bytes, key: Ed25519PublicKey) -> Attestation:
    """Whether ``data`` is a proof record signed by ``key`` and unchanged since."""
    expected = fingerprint(key)

    def bad(reason: str) -> Attestation:
        return Attestation(ok=False, reason=reason, key_fingerprint=expected)

    try:
        document = json.loads(data)
    except ValueError:
        return bad("not JSON")
    if not isinstance(document, dict):
        return bad("not a JSON object")
    raw = document.get(SIGNATURE)
    if not isinstance(raw, str) or not raw:
        return bad("the record is not signed")
    try:
        signature = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return bad("the signature is not base64")
    signer = document.get("key_fingerprint")
    if signer != expected:
        return bad(f"signed by key {signer!r}, not by the given key {expected}")
    try:
        payload = signed_bytes(document)
    except ValueError:
        return bad("the record holds values that have no canonical JSON form")
    if not verify(key, signature, payload):
        return bad("bad signature: the record was changed after it was signed")
    try:
        record = ProofRecord.model_validate(document)
    except ValidationError as exc:
        return bad(f"signed, but not a valid proof record: {exc.errors()[0]['msg']}")
    return Attestation(
        ok=True,
        reason=f"signature valid: signed by {expected}",
        key_fingerprint=expected,
        profile=record.profile,
        time=record.time,
        isolated=record.isolated,
    )


def attest_file(path: Path, public_key: Path) -> Attestation:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise usage(f"cannot read {path}: {exc.strerror}",
                    hint="give the path of a proof record (proofs/<profile>.json)") from exc
    return attest(data, load_public_key(public_key))
