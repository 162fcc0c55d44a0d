"""Encoding of transient-unit properties and decoding of replies, without a bus."""

from __future__ import annotations

import re
import socket

import pytest

from agentgw.bus import wire
from agentgw.errors import AgentgwError, Exit

LO6 = bytes(15) + b"\x01"


def test_decode_turns_bytes_into_str_recursively() -> None:
    """Strings and object paths inside lists, tuples and dicts come back as str; ints stay."""
    reply = [(b"a.service", b"/org/x", 3, [1, 2]), {b"Id": b"a", b"N": 7}]
    assert [("a.service", "/org/x", 3, [1, 2]), {"Id": "a", "N": 7}] == wire.decode(reply)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (["127.0.0.1"], [(socket.AF_INET, bytes([127, 0, 0, 1]), 32)]),
        (["10.1.2.3/8"], [(socket.AF_INET, bytes([10, 0, 0, 0]), 8)]),
        (["::1"], [(socket.AF_INET6, LO6, 128)]),
        (["any"], [(socket.AF_INET, bytes(4), 0), (socket.AF_INET6, bytes(16), 0)]),
        (["localhost"], [(socket.AF_INET, bytes([127, 0, 0, 0]), 8), (socket.AF_INET6, LO6, 128)]),
    ],
)
def test_ip_prefixes_match_systemd_address_lists(
    entries: list[str], expected: list[tuple[int, bytes, int]]
) -> None:
    """Networks and systemd's keywords become (family, address bytes, prefix) as in a(iayu)."""
    assert expected == wire.ip_prefixes(entries)


def test_bad_ip_entry_is_a_usage_error() -> None:
    """An entry that is no network is refused before anything reaches systemd."""
    with pytest.raises(AgentgwError, match="'10.0.0.0/33' is not an IP network") as caught:
        wire.ip_prefixes(["10.0.0.0/33"])
    assert Exit.USAGE == caught.value.code


def test_unit_properties_encode_as_an_array_of_name_variant_structs() -> None:
    """Each property opens a struct and a variant with its signature, then closes both."""
    encoded = wire.unit_properties({"User": "agent-api", "PrivateTmp": True})
    a, r, s, v, close = ord("a"), ord("r"), ord("s"), ord("v"), -1
    assert [
        (a, b"(sv)"),
        (r, b"sv"), (s, b"User"), (v, b"s"), (s, b"agent-api"), (close, None), (close, None),
        (r, b"sv"), (s, b"PrivateTmp"), (v, b"b"), (ord("b"), True), (close, None), (close, None),
        (close, None),
    ] == encoded


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("User", 0, "User=0: expected a string"),
        ("PrivateTmp", "yes", "PrivateTmp='yes': expected a bool"),
        ("MemoryMax", -1, "MemoryMax=-1: expected a non-negative int"),
        ("MemoryMax", True, "MemoryMax=True: expected a non-negative int"),
        ("ReadWritePaths", "/var", "ReadWritePaths='/var': expected a list of strings"),
        ("ExecStart", [[]], "ExecStart=[[]]: expected a list of argv lists"),
        ("SystemCallFilter", ["@system-service"], "expected a tuple (allow: bool, [names])"),
        ("IPAddressDeny", "any", "IPAddressDeny='any': expected a list of IP networks"),
    ],
)
def test_wrongly_typed_property_is_a_usage_error_naming_it(
    name: str, value: object, message: str
) -> None:
    """A value of the wrong type fails here, naming the property, not as InvalidArgs later."""
    with pytest.raises(AgentgwError, match=re.escape(message)):
        wire.unit_properties({name: value})


def test_unknown_property_is_refused() -> None:
    """Only properties with a known signature are sent."""
    with pytest.raises(AgentgwError, match="'PYTHONPATH' is not supported"):
        wire.unit_properties({"PYTHONPATH": "/x"})


def test_exec_command_needs_an_absolute_path() -> None:
    """systemd does no PATH lookup for transient units here, so a bare name is refused."""
    assert [["/bin/true", "x"]] == wire.exec_command(["/bin/true", "x"])
    with pytest.raises(AgentgwError, match="must start with an absolute path"):
        wire.exec_command(["true"])
