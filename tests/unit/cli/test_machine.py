"""Every --json document says which host it comes from and which schema it follows, and so do
history records: a fleet's results can be collected and told apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentgw.apply.history import append_history, read_history
from agentgw.machine import SCHEMA_VERSION, identity
from agentgw.paths import Layout
from tests.unit.runner import agentgw


def test_identity_is_the_machine_id_and_hostname() -> None:
    """machine_id is /etc/machine-id's content; hostname the kernel's."""
    import socket

    ident = identity()
    assert ident["hostname"] == socket.gethostname()
    assert ident["machine_id"] == Path("/etc/machine-id").read_text().strip()


@pytest.mark.parametrize(
    "args",
    [["config", "check", "--json"], ["history", "--json"], ["release", "list", "--json"],
     ["status", "--json"]],
)
def test_json_documents_carry_schema_and_machine(
    tmp_path: Path, args: list[str]
) -> None:
    """Each is one JSON object with schema_version and the host's identity."""
    (tmp_path / "etc" / "agentgw" / "gateways").mkdir(parents=True)
    code, out, err = agentgw("--root", str(tmp_path), *args)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["machine"] == identity()


def test_history_records_name_the_host(tmp_path: Path) -> None:
    """A record appended now carries the machine; old records without one still read."""
    log = Layout(tmp_path).history
    log.parent.mkdir(parents=True)
    log.write_text(
        '{"seq": 1, "time": "2025-01-01T00:00:00Z", "action": "promote", "result": "ok", '
        '"prev": "' + "0" * 64 + '"}\n'
    )
    append_history(log, "promote", "ok", "api", release="x")
    old, new = read_history(log)
    assert old.machine is None and new.machine == identity()
