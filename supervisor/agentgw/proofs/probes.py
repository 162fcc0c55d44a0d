"""Run the probe program as a gateway: same user, same sandbox, in a transient unit.

The gateway's sandbox is read from its *running* unit over D-Bus (so drop-ins, resets and
daemon-reloads are all accounted for), copied onto a transient unit running ``probe_main.py``,
and read back from that unit while it still exists: the proof record shows both sets, and the
probe-sandbox check fails when they differ. Loopback listeners that the probes try to reach
(:class:`Listeners`) live in this process, outside any sandbox.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, Protocol

from agentgw.bus import SERVICE, TransientRun
from agentgw.bus.wire import SIGNATURES

# The sandbox of a gateway (Service interface properties): copied onto the probe unit.
COPIED = (
    "User", "Group", "SupplementaryGroups", "WorkingDirectory",
    "ProtectSystem", "ProtectHome", "PrivateTmp", "ReadWritePaths", "ReadOnlyPaths",
    "InaccessiblePaths", "ExecPaths", "NoExecPaths", "PrivateDevices", "DevicePolicy",
    "DeviceAllow", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
    "ProtectControlGroups", "ProtectClock", "ProtectHostname", "ProtectProc", "ProcSubset",
    "PrivateMounts", "PrivateNetwork", "PrivateIPC", "PrivateUsers", "UMask", "NoNewPrivileges",
    "CapabilityBoundingSet", "AmbientCapabilities", "RestrictSUIDSGID", "RemoveIPC",
    "KeyringMode", "LockPersonality", "RestrictRealtime", "RestrictNamespaces",
    "SystemCallArchitectures", "SystemCallFilter", "SystemCallErrorNumber",
    "MemoryDenyWriteExecute", "RestrictAddressFamilies", "IPAddressDeny", "IPAddressAllow",
)
# Sandbox settings agentgw never writes and the probe unit cannot carry: compared only, so a
# gateway that has any of them is reported as probed in a different sandbox, not as isolated.
COMPARED_ONLY = ("RootDirectory", "RootImage", "BindPaths", "BindReadOnlyPaths",
                 "TemporaryFileSystem")
SANDBOX = COPIED + COMPARED_ONLY
IP_LISTS = ("IPAddressDeny", "IPAddressAllow")
PAIRS = ("DeviceAllow", "TemporaryFileSystem")
FLAGGED_LISTS = ("SystemCallFilter", "RestrictAddressFamilies")
PROBE_TIMEOUT_S = 30.0
# How long a TCP connect may take before it counts as dropped: loopback answers in microseconds.
CONNECT_TIMEOUT_S = 0.5


class Bus(Protocol):
    """The part of :class:`agentgw.bus.Systemd` the probes use."""

    def unit_properties(
        self, name: str, interface: str = ..., names: Sequence[str] | None = ...
    ) -> dict[str, Any]: ...
    def start_transient(
        self, name: str, properties: Mapping[str, object], argv: Sequence[str], *,
        wait: bool = ..., timeout: float = ...,
    ) -> str: ...
    def run_transient(
        self, name: str, argv: Sequence[str], properties: Mapping[str, object] | None = ...,
        *, timeout: float = ..., read_back: Sequence[str] = ...,
    ) -> TransientRun: ...


# --- pure: property values -----------------------------------------------------------------


def _ip_list(entries: Sequence[Sequence[Any]]) -> list[str]:
    """a(iayu) as read from systemd -> sorted CIDR strings."""
    out = []
    for _family, address, prefix in entries:
        host = ipaddress.ip_address(bytes(address))
        out.append(str(ipaddress.ip_network(f"{host}/{prefix}", strict=False)))
    return sorted(set(out))


def normalise(name: str, value: Any) -> Any:
    """A property value in a stable, JSON-friendly form (order-free lists sorted)."""
    if name in IP_LISTS:
        return _ip_list(value or [])
    if name in FLAGGED_LISTS:
        allow, names = value if value else (False, [])
        return {"allow": bool(allow), "names": sorted(set(names))}
    if name in PAIRS or name in ("BindPaths", "BindReadOnlyPaths"):
        return sorted({tuple(v) for v in value or []})
    if isinstance(value, list):
        return sorted(set(value))
    return value


def sandbox_of(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _jsonable(normalise(name, raw.get(name))) for name in SANDBOX}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _unset(value: Any) -> bool:
    if isinstance(value, dict):
        return not value["allow"] and not value["names"]
    return value is None or value == "" or value == []


def transient_properties(sandbox: Mapping[str, Any]) -> dict[str, object]:
    """The gateway's sandbox as StartTransientUnit properties; unset values stay unset."""
    props: dict[str, object] = {}
    for name in COPIED:
        value: Any = sandbox.get(name)
        if _unset(value):
            continue
        signature = SIGNATURES[name]
        if signature == "(bas)":
            props[name] = (value["allow"], list(value["names"]))
        elif signature == "a(ss)":
            props[name] = [tuple(pair) for pair in value]
        else:
            props[name] = value
    return props


# --- effects -------------------------------------------------------------------------------


def read_sandbox(sd: Bus, unit: str) -> dict[str, Any]:
    """The sandbox properties of a loaded unit, normalised."""
    return sandbox_of(sd.unit_properties(unit, SERVICE, SANDBOX))


@dataclass(frozen=True)
class Target:
    """A loopback address the probe tries to reach, with verify's own listeners on it."""

    target: str
    host: str
    expect: Literal["deny", "allow"]
    port: int
    udp_port: int

    def spec(self) -> dict[str, Any]:
        return {"target": self.target, "host": self.host, "expect": self.expect,
                "port": self.port, "udp_port": self.udp_port}


@dataclass
class Listeners:
    """TCP listeners and UDP sockets on loopback addresses, open while ``verify`` runs.

    IP filtering ignores ports, so a listener of ours on a sibling's address (any free port)
    proves that address unreachable; and since nobody else listens there, a refused or
    unanswered connect cannot be mistaken for a blocked one.
    """

    _sockets: list[socket.socket] = field(default_factory=list)
    _udp: dict[Target, socket.socket] = field(default_factory=dict)

    def open(self, target: str, host: str, expect: Literal["deny", "allow"]) -> Target:
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sockets.append(tcp)
        tcp.bind((host, 0))
        tcp.listen(64)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sockets.append(udp)
        udp.bind((host, 0))
        udp.setblocking(False)
        made = Target(target, host, expect, tcp.getsockname()[1], udp.getsockname()[1])
        self._udp[made] = udp
        return made

    def received(self, target: Target) -> bool:
        """Whether a datagram reached ``target``'s UDP socket (drains it)."""
        got = False
        while True:
            try:
                self._udp[target].recvfrom(256)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    return got
                raise
            got = True

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        self._udp.clear()

    def __enter__(self) -> Listeners:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ProbeRun:
    """The probe unit's outcome: its answers (None when it did not report) and its sandbox."""

    unit: str
    result: str
    code: str
    status: int
    answers: dict[str, Any] | None
    error: str | None
    sandbox: dict[str, Any]
    stderr: str


def probe_source() -> str:
    return (resources.files("agentgw.proofs") / "probe_main.py").read_text()


def probe_argv(python: str, spec: Mapping[str, Any]) -> list[str]:
    """``-I``: no PYTHON* variables or user site; ``-S``: only the stdlib is needed."""
    return [python, "-I", "-S", "-c", probe_source(), json.dumps(spec, sort_keys=True)]


def parse_answers(stdout: str) -> dict[str, Any] | None:
    lines = stdout.strip().splitlines()
    if not lines:
        return None
    try:
        answers = json.loads(lines[-1])
    except ValueError:
        return None
    return answers if isinstance(answers, dict) else None


def run_probe(
    sd: Bus,
    tag: str,
    python: str,
    spec: Mapping[str, Any],
    properties: Mapping[str, object],
    *,
    timeout: float = PROBE_TIMEOUT_S,
) -> ProbeRun:
    """Run the probe program in a oneshot transient unit with ``properties``; read its answers
    and, before the unit is removed, the sandbox properties systemd actually gave it."""
    name = f"agentgw-probe-{tag}-{secrets.token_hex(4)}.service"
    props = {"Description": f"agentgw verify probe ({tag})", **properties}
    run = sd.run_transient(
        name, probe_argv(python, spec), props, timeout=timeout, read_back=SANDBOX
    )
    result, code, status, stdout, stderr = run.result, run.code, run.status, run.stdout, run.stderr
    answers = parse_answers(stdout)
    error = None
    if answers is None:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        error = f"probe unit {name}: job {result}, {code} {status}: {tail}"
    return ProbeRun(
        unit=name, result=result, code=code, status=status, answers=answers, error=error,
        sandbox=sandbox_of(run.properties), stderr=stderr[-2000:],
    )
