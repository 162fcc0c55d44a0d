"""The two clients of the broker: the gateways' stdlib module and ``agentgw exec``."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.runner import agentgw
from tests.unit.sandbox.brokers import served

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def client() -> ModuleType:
    """launcher/sandbox_client.py loaded from its file, as a gateway loads it."""
    spec = importlib.util.spec_from_file_location(
        "agentgw_sandbox", REPO / "launcher" / "sandbox_client.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_client_runs_a_job_with_stdin_and_files(client: ModuleType, tmp_path: Path) -> None:
    """run() sends argv, stdin and files and returns the result with bytes output and the
    limits used (a larger timeout lowered to the host's)."""
    with served(tmp_path) as srv:
        result = client.run(["a", "b"], stdin=b"\x00in", files={"x/y": b"Y"}, timeout=99,
                            path=str(srv.sockets["api"]))
    assert (result["exit_code"], result["stdout"], result["stderr"]) == (2, b"\x00in",
                                                                         b"x/y=Y\n")
    assert (result["backend"], result["warm"], result["limits"]["timeout_s"]) == (
        "tcg", True, 10.0)


def test_client_finds_its_profiles_socket(client: ModuleType, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """The socket is /run/agentgw/sandbox/$AGENT_PROFILE.sock unless overridden."""
    monkeypatch.delenv(client.SOCKET_ENV, raising=False)
    monkeypatch.setenv("AGENT_PROFILE", "api")
    assert client.socket_path() == "/run/agentgw/sandbox/api.sock"
    monkeypatch.setenv(client.SOCKET_ENV, "/tmp/x.sock")
    assert client.socket_path() == "/tmp/x.sock"


def test_client_raises_the_brokers_refusal(client: ModuleType, tmp_path: Path) -> None:
    """A refusal is SandboxError with the protocol's kind; no broker is 'unreachable'."""
    with served(tmp_path, uids={"agent-api": 1001}, peer_uid=1002) as srv:
        with pytest.raises(client.SandboxError) as err:
            client.run(["true"], path=str(srv.sockets["api"]))
    assert err.value.kind == "forbidden"
    with pytest.raises(client.SandboxError) as gone:
        client.run(["true"], path=str(tmp_path / "none.sock"))
    assert gone.value.kind == "unreachable"
    with pytest.raises(TypeError):
        client.run("echo hi", path=str(tmp_path / "none.sock"))




def test_exec_goes_through_the_profiles_socket(
    tmp_path: Path
) -> None:
    """``agentgw exec`` asks the broker at ROOT/run/agentgw/sandbox/<p>.sock, prints the
    job's output and exits with its code; the broker records the exec."""
    (tmp_path / "f.txt").write_text("F")
    sockets = tmp_path / "run" / "agentgw" / "sandbox"
    with served(tmp_path, socket_dir=sockets) as srv:
        code, out, err = agentgw("--root", str(tmp_path), "exec", "--file",
                                 f"{tmp_path}/f.txt:in/f.txt", "api", "--", "a", "b", "c")
    assert (code, out, err) == (3, "", "in/f.txt=F\n")
    (record,) = srv.records_lines()
    assert (record["profile"], record["via"], record["uid"]) == ("api", "broker", os.getuid())


def test_exec_without_a_broker_says_how_to_start_one(
    tmp_path: Path
) -> None:
    """No socket: exit 1, naming the socket, the unit to start and --direct; nothing boots."""
    code, _, err = agentgw("--root", str(tmp_path), "exec", "api", "--", "true")
    assert code == 1
    assert "run/agentgw/sandbox/api.sock" in err
    assert "systemctl start agentgw-sandbox" in err and "--direct" in err


def test_exec_help_documents_direct() -> None:
    """--direct is the explicit way around the broker, and --help says so."""
    _, help_text, _ = agentgw("exec", "--help")
    assert "--direct" in help_text and "broker" in help_text
