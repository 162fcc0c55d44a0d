"""Ed25519 keys and signatures: key files, both public key forms, round trips, trust lists."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import pytest

from agentgw.errors import AgentgwError, Exit
from agentgw.signing import (
    encode_public_key,
    fingerprint,
    generate_keypair,
    load_private_key,
    load_public_key,
    parse_public_key,
    raw_public_key,
    sign,
    trusted_keys,
    verify,
)


def test_keygen_writes_private_0600_and_public_pem(tmp_path: Path) -> None:
    """keygen writes OUT (0600, PKCS#8 PEM) and OUT.pub (PEM); the fingerprint names the pair."""
    out = tmp_path / "ci"
    fp = generate_keypair(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    public = load_public_key(tmp_path / "ci.pub")
    assert fingerprint(load_private_key(out).public_key()) == fingerprint(public) == fp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ci", "ci.pub"]


@pytest.mark.parametrize("existing", ["ci", "ci.pub"])
def test_keygen_never_replaces_a_key(tmp_path: Path, existing: str) -> None:
    """An existing private or public key file makes keygen exit 2 and write nothing."""
    (tmp_path / existing).write_text("precious")
    with pytest.raises(AgentgwError) as raised:
        generate_keypair(tmp_path / "ci")
    assert raised.value.code == Exit.USAGE
    assert "already exists" in raised.value.message
    assert [p.name for p in tmp_path.iterdir()] == [existing]
    assert (tmp_path / existing).read_text() == "precious"


def test_sign_and_verify_round_trip(tmp_path: Path) -> None:
    """A signature verifies over exactly the signed bytes with exactly the signing key."""
    generate_keypair(tmp_path / "a")
    generate_keypair(tmp_path / "b")
    key = load_private_key(tmp_path / "a")
    signature = sign(key, b"payload")
    assert verify(key.public_key(), signature, b"payload")
    assert not verify(key.public_key(), signature, b"payload!")
    assert not verify(load_private_key(tmp_path / "b").public_key(), signature, b"payload")
    assert not verify(key.public_key(), bytes(64), b"payload")


def test_public_keys_parse_from_pem_and_raw_base64(tmp_path: Path) -> None:
    """PEM and base64 of the 32 raw bytes are the same key; fingerprint = sha256(raw)[:16]."""
    generate_keypair(tmp_path / "k")
    pem_key = load_public_key(tmp_path / "k.pub")
    raw_key = parse_public_key(encode_public_key(pem_key))
    assert raw_public_key(raw_key) == raw_public_key(pem_key)
    assert fingerprint(pem_key) == hashlib.sha256(raw_public_key(pem_key)).hexdigest()[:16]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not a key", "neither PEM nor base64"),
        (base64.b64encode(bytes(31)).decode(), "31 bytes"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "not a PEM public key"),
    ],
)
def test_malformed_public_keys_are_refused(text: str, reason: str) -> None:
    """Garbage, wrong lengths and broken PEM raise ValueError saying why."""
    with pytest.raises(ValueError, match=reason):
        parse_public_key(text)


def test_unreadable_or_foreign_private_keys_exit_2(tmp_path: Path) -> None:
    """A missing file or a public key given as --sign-key is bad input, with a keygen hint."""
    generate_keypair(tmp_path / "k")
    for path in (tmp_path / "missing", tmp_path / "k.pub"):
        with pytest.raises(AgentgwError) as raised:
            load_private_key(path)
        assert raised.value.code == Exit.USAGE
        assert "keygen" in raised.value.hint


def test_trusted_keys_accept_paths_and_inline_keys(tmp_path: Path) -> None:
    """agentgw.yaml's trusted_keys entries: a file path, inline PEM, inline base64."""
    for name in ("a", "b", "c"):
        generate_keypair(tmp_path / name)
    b_pem = (tmp_path / "b.pub").read_text()
    c_raw = encode_public_key(load_public_key(tmp_path / "c.pub"))
    found = trusted_keys([str(tmp_path / "a.pub"), b_pem, c_raw])
    expected = {fingerprint(load_public_key(tmp_path / f"{n}.pub")) for n in "abc"}
    assert set(found) == expected


def test_unusable_trusted_keys_fail_with_the_config_hint(tmp_path: Path) -> None:
    """A missing key file or a broken inline key stops the command pointing at agentgw.yaml."""
    for entry in (str(tmp_path / "gone.pub"), "garbage"):
        with pytest.raises(AgentgwError) as raised:
            trusted_keys([entry])
        assert raised.value.code == Exit.FAILED
        assert "trusted_keys" in raised.value.hint


def test_inline_key_starting_with_a_slash_is_not_taken_for_a_path() -> None:
    """Base64 can begin with '/': such an inline key is still a key (in the config model and
    in trusted_keys), not a file path to read."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agentgw.model.host import HostConfig
    from agentgw.signing import fingerprint, trusted_keys

    raw_format = serialization.PublicFormat.Raw
    for _ in range(5000):
        public = Ed25519PrivateKey.generate().public_key()
        text = base64.b64encode(public.public_bytes(serialization.Encoding.Raw, raw_format))
        if text.startswith(b"/"):
            break
    entry = text.decode()
    assert entry.startswith("/")
    assert HostConfig.model_validate({"trusted_keys": [entry]}).trusted_keys == (entry,)
    assert list(trusted_keys([entry])) == [fingerprint(public)]
