"""Proof records are signed by the host key; any edit after signing fails verification."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agentgw.fsio import Read, parse_iso
from agentgw.model.proof import ProofRecord
from agentgw.observe.isolation import judge_isolation
from agentgw.paths import Layout
from agentgw.proofs.record import (
    attest,
    host_key_path,
    host_public_key_path,
    load_or_create_host_key,
    render_record,
    sign_record,
    write_record,
)
from agentgw.signing import fingerprint, generate_keypair, load_public_key
from tests.unit.proofs.support import sample_record
from tests.unit.runner import agentgw


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path)


def signed(layout: Layout, record: ProofRecord | None = None) -> tuple[ProofRecord, bytes]:
    key = load_or_create_host_key(layout)
    done = sign_record(record or sample_record(), key)
    return done, render_record(done).encode()


def test_host_key_is_made_once_private_and_reused(layout: Layout) -> None:
    """The first verify makes host.key (0600) and host.key.pub (0644); later ones reuse it."""
    first = load_or_create_host_key(layout)
    assert 0o600 == stat.S_IMODE(host_key_path(layout).stat().st_mode)
    assert 0o644 == stat.S_IMODE(host_public_key_path(layout).stat().st_mode)
    again = load_or_create_host_key(layout)
    assert fingerprint(first.public_key()) == fingerprint(again.public_key())


def test_signed_record_verifies_and_carries_the_key_fingerprint(layout: Layout) -> None:
    """sign -> attest round-trips; the record names the signing key's fingerprint."""
    record, data = signed(layout)
    key = load_public_key(host_public_key_path(layout))
    result = attest(data, key)
    assert (True, "api", True) == (result.ok, result.profile, result.isolated)
    assert fingerprint(key) == record.key_fingerprint == result.key_fingerprint


def test_reformatting_keeps_the_signature_valid(layout: Layout) -> None:
    """The signature covers the canonical JSON, not the whitespace of the file."""
    _, data = signed(layout)
    compact = json.dumps(json.loads(data), separators=(",", ":")).encode()
    assert attest(compact, load_public_key(host_public_key_path(layout))).ok


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(isolated=False),
        lambda d: d["checks"][0].update(result="failed"),
        lambda d: d.update(exposure=1.1),
        lambda d: d["host"].update(bpf_firewall="not-enforced"),
        lambda d: d.update(extra="added"),
        lambda d: d.pop("reason"),
    ],
    ids=["verdict", "check-result", "score", "host-fact", "added-member", "removed-member"],
)
def test_any_edit_after_signing_fails(layout: Layout, edit: object) -> None:
    """Changing a verdict, a check, the score or a host fact, adding or removing a member:
    each breaks the signature."""
    _, data = signed(layout)
    document = json.loads(data)
    edit(document)  # type: ignore[operator]
    result = attest(json.dumps(document).encode(), load_public_key(host_public_key_path(layout)))
    assert (False, "bad signature: the record was changed after it was signed") == (
        result.ok, result.reason)


def test_another_key_and_an_unsigned_record_fail(layout: Layout, tmp_path: Path) -> None:
    """A record checked against a different key, or one without a signature, is refused."""
    _, data = signed(layout)
    generate_keypair(tmp_path / "other.key")
    other = load_public_key(tmp_path / "other.key.pub")
    result = attest(data, other)
    assert not result.ok and result.reason.startswith("signed by key")
    unsigned = render_record(sample_record()).encode()
    assert "the record is not signed" == attest(unsigned, other).reason


def test_status_reads_the_written_record_as_isolated(layout: Layout) -> None:
    """write_record puts the record where status looks, in the shape judge_isolation reads."""
    record, _ = signed(layout)
    path = write_record(layout, record)
    assert layout.proofs / "api.json" == path
    proved = parse_iso(record.time)
    assert proved is not None
    verdict = judge_isolation(isolated_mode=True, profile="api",
                              proof=Read(data=json.loads(path.read_text())),
                              started=proved - 1, now=proved + 5)
    assert ("isolated", "2 checks passed") == (verdict.state, verdict.reason)


def test_attest_verify_exit_codes(layout: Layout) -> None:
    """`agentgw attest verify FILE` exits 0 for the signed record (default key: the state
    dir's host.key.pub) and 3 once the file is edited, naming the reason."""
    record, _ = signed(layout)
    path = write_record(layout, record)
    code, out, _ = agentgw("--root", str(layout.root), "attest", "verify", str(path))
    assert 0 == code
    assert "signature valid" in out
    path.write_text(path.read_text().replace('"isolated": true', '"isolated": false'))
    code, _, err = agentgw("--root", str(layout.root), "attest", "verify", str(path), "--pubkey",
                       str(host_public_key_path(layout)))
    assert 3 == code
    assert "bad signature: the record was changed after it was signed" in err
