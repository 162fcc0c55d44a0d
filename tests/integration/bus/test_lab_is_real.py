"""Smoke tests proving the lab is a real systemd whose sandboxing is enforced (issue 2 item 7).

Each runs inside the lab against its PID 1 through bus/ (one D-Bus connection).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgw.bus import Systemd, UnitInfo
from agentgw.run import run

pytestmark = pytest.mark.integration

# Runs as the sandboxed user: reports its uid, what writing /usr does, whether a TCP connect to
# argv[1]:argv[2] gets through, and leaves a file in the writable dir argv[3].
PROBE = """\
import errno, os, socket, sys
host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print("uid", os.getuid())
try:
    open("/usr/agentgw-probe", "w").close()
    print("usr writable")
except OSError as e:
    print("usr", errno.errorcode[e.errno])
s = socket.socket()
s.settimeout(1.5)
try:
    s.connect((host, port))
    print("connect ok")
except OSError as e:
    print("connect blocked", type(e).__name__, errno.errorcode.get(e.errno or 0, "-"))
with open(os.path.join(out, "probe-ran"), "w") as f:
    f.write(str(os.getuid()))
"""


def probe_lines(stdout: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in stdout.splitlines())


@pytest.fixture
def listener() -> Iterator[tuple[str, int]]:
    """A TCP listener on loopback (never accepted: the kernel completes the handshake)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield "127.0.0.1", s.getsockname()[1]


@pytest.fixture
def writable_dir(tag: str, test_user: tuple[str, int]) -> Iterator[Path]:
    path = Path(f"/var/tmp/bus-probe-{tag}")
    path.mkdir()
    os.chown(path, test_user[1], -1)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_pid1_is_systemd_252(sd: Systemd) -> None:
    """PID 1 of the lab is systemd itself, and its manager answers on D-Bus as version 252."""
    assert os.readlink("/proc/1/exe") in ("/usr/lib/systemd/systemd", "/lib/systemd/systemd")
    assert sd.version().split(".")[0] == "252"


def test_list_units_reports_states_like_systemctl(sd: Systemd) -> None:
    """list_units finds dbus.socket with the same load/active/sub state systemctl prints."""
    units = {u.name: u for u in sd.list_units(["dbus.*"])}
    shown = run(
        ["systemctl", "show", "-p", "Description,LoadState,ActiveState,SubState", "dbus.socket"]
    ).stdout
    props = dict(line.split("=", 1) for line in shown.splitlines())
    expected = UnitInfo(
        name="dbus.socket",
        description=props["Description"],
        load_state=props["LoadState"],
        active_state=props["ActiveState"],
        sub_state=props["SubState"],
        path="/org/freedesktop/systemd1/unit/dbus_2esocket",
    )
    assert expected == units["dbus.socket"]
    assert ("loaded", "active") == (expected.load_state, expected.active_state)


def test_list_units_filters_by_state(sd: Systemd) -> None:
    """The states argument filters server-side: the active dbus.socket is not 'inactive'."""
    assert [] == [u.name for u in sd.list_units(["dbus.socket"], ["inactive"])]
    assert ["dbus.socket"] == [u.name for u in sd.list_units(["dbus.socket"], ["active"])]


def test_sandbox_denies_loopback_and_usr_but_runs_as_the_user(
    sd: Systemd,
    tag: str,
    test_user: tuple[str, int],
    listener: tuple[str, int],
    writable_dir: Path,
) -> None:
    """User=, ProtectSystem=strict and IPAddressDeny=any are enforced, not just accepted.

    The probe runs as the test user, gets EROFS writing /usr, cannot connect to a loopback
    listener, and can write the one path made writable with ReadWritePaths=.
    """
    user, uid = test_user
    host, port = listener
    result = sd.run_transient(
        f"bus-deny-{tag}.service",
        ["/usr/bin/python3", "-c", PROBE, host, str(port), str(writable_dir)],
        {
            "User": user,
            "ProtectSystem": "strict",
            "ReadWritePaths": [str(writable_dir)],
            "IPAddressDeny": ["any"],
        },
    )
    lines = probe_lines(result.stdout)
    assert ("done", 0) == (result.result, result.exit_code), result.stderr
    assert str(uid) == lines["uid"]
    assert "EROFS" == lines["usr"]
    assert lines["connect"].startswith("blocked"), lines
    ran = writable_dir / "probe-ran"
    assert (str(uid), uid) == (ran.read_text(), ran.stat().st_uid)


def test_sandbox_allows_the_allowlisted_loopback_address(
    sd: Systemd,
    tag: str,
    test_user: tuple[str, int],
    listener: tuple[str, int],
    writable_dir: Path,
) -> None:
    """The same sandbox with IPAddressAllow= the listener's address connects: the deny above
    is the firewall, not an unreachable listener."""
    user, uid = test_user
    host, port = listener
    result = sd.run_transient(
        f"bus-allow-{tag}.service",
        ["/usr/bin/python3", "-c", PROBE, host, str(port), str(writable_dir)],
        {
            "User": user,
            "ProtectSystem": "strict",
            "ReadWritePaths": [str(writable_dir)],
            "IPAddressDeny": ["any"],
            "IPAddressAllow": [f"{host}/32"],
        },
    )
    lines = probe_lines(result.stdout)
    assert ("done", 0) == (result.result, result.exit_code), result.stderr
    assert str(uid) == lines["uid"]
    assert "EROFS" == lines["usr"]
    assert "ok" == lines["connect"]
