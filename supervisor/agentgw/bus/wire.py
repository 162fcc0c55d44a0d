"""Between Python values and what pystemd puts on and takes off the wire.

Decoding: pystemd returns D-Bus strings and object paths as ``bytes``, ``ay`` as a list of ints,
structs as tuples, an ``a{sv}`` as a dict (or ``[]`` when empty). :func:`decode` gives str
everywhere.

Encoding: pystemd sends typed arguments as ``(type_code, value)`` pairs, built from a signature
by ``apply_signature``. Transient-unit properties (``a(sv)``) are encoded here from a table of
the properties agentgw uses, each with its D-Bus signature, so a wrong type is an error that
names the property instead of a D-Bus InvalidArgs from systemd.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from pystemd.dbuslib import apply_signature

from agentgw.errors import usage

# pystemd closes an open container (array, struct, variant) with this pair.
_CLOSE: tuple[int, None] = (-1, None)

Wire = list[tuple[int, Any]]

# Properties agentgw sets on transient units, with the signature systemd expects for each
# (systemd's src/core/dbus-*.c). Time values are the *USec forms in microseconds.
SIGNATURES: dict[str, str] = {
    **dict.fromkeys(
        (
            "Description", "Type", "User", "Group", "WorkingDirectory", "ProtectSystem",
            "ProtectHome", "ProtectProc", "ProcSubset", "CollectMode", "KillMode", "Slice",
            "StandardInput", "StandardOutput", "StandardError", "DevicePolicy", "Restart",
            "NotifyAccess", "KeyringMode",
        ),
        "s",
    ),
    **dict.fromkeys(
        (
            "RemainAfterExit", "NoNewPrivileges", "PrivateTmp", "PrivateDevices",
            "PrivateNetwork", "PrivateUsers", "PrivateIPC", "PrivateMounts",
            "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
            "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictRealtime",
            "RestrictSUIDSGID", "LockPersonality", "MemoryDenyWriteExecute", "RemoveIPC",
            "IPAccounting", "MemoryAccounting", "CPUAccounting", "TasksAccounting",
            "DefaultDependencies",
        ),
        "b",
    ),
    **dict.fromkeys(
        (
            "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths",
            "Environment", "SupplementaryGroups", "SystemCallArchitectures", "After",
            "Before", "Wants", "Requires", "Conflicts", "RuntimeDirectory", "StateDirectory",
            "LogsDirectory",
        ),
        "as",
    ),
    **dict.fromkeys(
        (
            "CapabilityBoundingSet", "AmbientCapabilities", "RestrictNamespaces", "MemoryMax",
            "MemoryHigh", "MemorySwapMax", "TasksMax", "CPUQuotaPerSecUSec", "RuntimeMaxUSec",
            "TimeoutStartUSec", "TimeoutStopUSec", "RestartUSec",
        ),
        "t",
    ),
    **dict.fromkeys(
        ("StandardInputFileDescriptor", "StandardOutputFileDescriptor",
         "StandardErrorFileDescriptor"),
        "h",
    ),
    **dict.fromkeys(("ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop"), "a(sasb)"),
    **dict.fromkeys(("IPAddressAllow", "IPAddressDeny"), "a(iayu)"),
    **dict.fromkeys(("SystemCallFilter", "RestrictAddressFamilies"), "(bas)"),
    **dict.fromkeys(("LoadCredential", "DeviceAllow"), "a(ss)"),
    "UMask": "u",
    **dict.fromkeys(("Nice", "SystemCallErrorNumber"), "i"),
}

# systemd's symbolic IP address lists (systemd.resource-control(5)).
_IP_KEYWORDS: dict[str, tuple[str, ...]] = {
    "any": ("0.0.0.0/0", "::/0"),
    "localhost": ("127.0.0.0/8", "::1/128"),
    "link-local": ("169.254.0.0/16", "fe80::/64"),
    "multicast": ("224.0.0.0/4", "ff00::/8"),
}


def decode(value: Any) -> Any:
    """pystemd's reply values with every bytes (D-Bus s/o/g) turned into str, recursively."""
    if isinstance(value, bytes):
        return value.decode(errors="surrogateescape")
    if isinstance(value, dict):
        return {decode(k): decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, tuple):
        return tuple(decode(v) for v in value)
    return value


def args(signature: str, *values: Any) -> Wire:
    """Encode ``values`` by a D-Bus signature of simple/array/struct types for ``call_method``."""
    return list(apply_signature(signature.encode(), [_bytes(v) for v in values]))


def _bytes(value: Any) -> Any:
    """pystemd sends str fine but expects signature/container arguments as bytes."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list | tuple):
        return type(value)(_bytes(v) for v in value)
    return value


def ip_prefixes(entries: Sequence[str]) -> list[tuple[int, bytes, int]]:
    """``IPAddressAllow=``/``IPAddressDeny=`` entries (networks or keywords) as ``a(iayu)``."""
    out: list[tuple[int, bytes, int]] = []
    for entry in entries:
        for item in _IP_KEYWORDS.get(entry, (entry,)):
            try:
                net = ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise usage(
                    f"IP address list entry {entry!r} is not an IP network",
                    hint="use a network like 127.0.0.1/32 or one of: " + ", ".join(_IP_KEYWORDS),
                ) from exc
            family = socket.AF_INET if net.version == 4 else socket.AF_INET6
            out.append((int(family), net.network_address.packed, net.prefixlen))
    return out


def _bad(name: str, want: str, value: object) -> Exception:
    return usage(
        f"transient unit property {name}={value!r}: expected {want}",
        hint="see systemd.exec(5) / systemd.resource-control(5) for the property",
    )


def _str_list(value: object) -> list[str] | None:
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    return None


def _property_value(name: str, signature: str, value: object) -> object:
    """Check one property's Python value against its signature; return it in wire shape."""
    if signature == "s" and isinstance(value, str):
        return value
    if signature == "b" and isinstance(value, bool):
        return value
    if signature in ("t", "u", "h") and isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise _bad(name, "a non-negative int", value)
        return value
    if signature == "i" and isinstance(value, int) and not isinstance(value, bool):
        return value
    strings = _str_list(value)
    if signature == "as" and strings is not None:
        return strings
    if signature == "a(iayu)" and strings is not None:
        return ip_prefixes(strings)
    if signature == "a(sasb)" and isinstance(value, list | tuple):
        commands = [_str_list(c) for c in value]
        if all(commands):
            return [(c[0], c, False) for c in commands if c]
    if signature == "(bas)" and isinstance(value, tuple) and len(value) == 2:
        allow, names = value[0], _str_list(value[1])
        if isinstance(allow, bool) and names is not None:
            return (allow, names)
    if signature == "a(ss)" and isinstance(value, list | tuple):
        pairs = [_str_list(p) for p in value]
        if all(p is not None and len(p) == 2 for p in pairs):
            return [tuple(p) for p in pairs if p]
    raise _bad(name, _WANT[signature], value)


_WANT = {
    "s": "a string",
    "b": "a bool",
    "t": "a non-negative int",
    "u": "a non-negative int",
    "h": "a file descriptor (int)",
    "i": "an int",
    "as": "a list of strings",
    "a(iayu)": "a list of IP networks or keywords (any, localhost, link-local, multicast)",
    "a(sasb)": "a list of argv lists",
    "(bas)": "a tuple (allow: bool, [names])",
    "a(ss)": "a list of (str, str) pairs",
}


def unit_properties(properties: Mapping[str, object]) -> Wire:
    """Encode transient-unit properties as the ``a(sv)`` argument of StartTransientUnit."""
    wire: Wire = [(ord("a"), b"(sv)")]
    for name, value in properties.items():
        signature = SIGNATURES.get(name)
        if signature is None:
            raise usage(
                f"transient unit property {name!r} is not supported",
                hint="supported: " + ", ".join(sorted(SIGNATURES)),
            )
        shaped = _property_value(name, signature, value)
        wire += [(ord("r"), b"sv"), (ord("s"), name.encode()), (ord("v"), signature.encode())]
        wire += args(signature, shaped)
        wire += [_CLOSE, _CLOSE]
    wire.append(_CLOSE)
    return wire


def exec_command(argv: Sequence[str]) -> list[list[str]]:
    """One command for an ``Exec*=`` property: its argv, checked to be absolute."""
    if not argv or not argv[0].startswith("/"):
        raise usage(
            f"command {list(argv)!r} must start with an absolute path",
            hint="systemd runs Exec*= without a shell or PATH lookup here",
        )
    return [list(argv)]
