"""Signing a release being added: the key and an off-host signature checked against the host's
policy before anything is written, the manifest signed after.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

from agentgw.errors import AgentgwError, Exit, usage
from agentgw.model.release import Manifest, ManifestSignature, ReleasePolicy
from agentgw.plan.release import (
    content_digest,
    signing_payload,
    statement_of,
)
from agentgw.signing import (
    encode_public_key,
    fingerprint,
    load_private_key,
    raw_public_key,
    sign,
    trusted_keys,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey




def signing_key(
    sign_key: Path | None, policy: ReleasePolicy, statement_sig: bytes | None = None
) -> Ed25519PrivateKey | None:
    """The signing key, checked against the policy before anything is written."""
    trusted = trusted_keys(policy.trusted_keys) if policy.require_signature else {}
    if statement_sig is not None:
        check_statement_signer(statement_sig, policy)
    if sign_key is None:
        if policy.require_signature and statement_sig is None:
            raise usage(
                "this host requires signed releases and no --sign-key or --signature was given",
                hint="pass --signature FILE made by 'agentgw release sign' with a trusted key "
                "(or --sign-key with a key whose public half is in trusted_keys)",
            )
        return None
    key = load_private_key(sign_key)
    public = key.public_key()
    if policy.require_signature:
        known = trusted.get(fingerprint(public))
        if known is None or raw_public_key(known) != raw_public_key(public):
            raise usage(
                f"signing key {fingerprint(public)} is not one of this host's trusted keys",
                hint="sign with a trusted key, or add its .pub to trusted_keys in agentgw.yaml",
            )
    return key


def check_statement_signer(statement_sig: bytes, policy: ReleasePolicy) -> None:
    """An off-host signature that can be read, by a trusted key when the host requires one
    (whether it covers this tree is checked once the tree is hashed)."""
    from agentgw.signing import sshsig

    try:
        sig = sshsig.parse(statement_sig)
    except sshsig.BadSignature as exc:
        raise usage(
            f"--signature is not an SSH signature agentgw can read: {exc}",
            hint="make it with: agentgw release sign SRC --sha SHA --label LABEL --key KEY",
        ) from exc
    if sig.namespace != sshsig.NAMESPACE:
        raise usage(
            f"--signature was made for namespace {sig.namespace!r}, not {sshsig.NAMESPACE!r}",
            hint="sign with agentgw release sign (or ssh-keygen -Y sign -n agentgw-release)",
        )
    if policy.require_signature:
        key = fingerprint(sshsig.public_key_of(sig))
        known = trusted_keys(policy.trusted_keys).get(key)
        if known is None or raw_public_key(known) != sig.public_key:
            raise usage(
                f"--signature is by key {key}, which is not one of this host's trusted keys",
                hint="add the signer's public key to trusted_keys in agentgw.yaml",
            )


def check_statement(manifest: Manifest, statement_sig: bytes) -> None:
    from agentgw.signing import sshsig

    if not sshsig.verify_message(sshsig.parse(statement_sig), statement_of(manifest)):
        raise AgentgwError(
            f"--signature does not match this tree: it was not made over release "
            f"{manifest.sha}-{manifest.label} with content {content_digest(manifest.files)}",
            hint="the source changed after it was signed, or the signature is another "
            "release's; nothing was added",
            code=Exit.VERIFY,
        )


def sign_manifest(key: Ed25519PrivateKey, manifest: Manifest) -> ManifestSignature:
    public = key.public_key()
    return ManifestSignature(
        key=fingerprint(public),
        public_key=encode_public_key(public),
        signature=base64.b64encode(sign(key, signing_payload(manifest))).decode(),
    )
