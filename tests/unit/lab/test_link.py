"""A lab link's names, addresses and sshd config: valid, distinct per lab, local only."""

from __future__ import annotations

import ipaddress

from agentgw.lab import link


def test_names_fit_interface_limits_and_differ_per_lab() -> None:
    """Interface names are <= 15 characters (IFNAMSIZ) and two labs never share one."""
    a, b = link.names("fleet-abcdef-1"), link.names("fleet-abcdef-2")
    assert all(len(n) <= 15 for n in (*a, *b))
    assert len({*a, *b}) == 4


def test_addresses_are_ula_on_one_64_per_lab() -> None:
    """Both ends are in the lab's own ULA /64 (fc00::/7: never routed off the machine)."""
    inside, outside = (ipaddress.IPv6Address(x) for x in link.addresses("fleet-x-1"))
    assert inside in ipaddress.IPv6Network("fc00::/7")
    assert ipaddress.IPv6Network(f"{inside}/64", strict=False) == ipaddress.IPv6Network(
        f"{outside}/64", strict=False)
    other = ipaddress.IPv6Address(link.addresses("fleet-x-2")[0])
    assert other not in ipaddress.IPv6Network(f"{inside}/64", strict=False)


def test_sshd_config_listens_only_on_the_link_with_keys_only() -> None:
    config = link.render_sshd_config("fd61:6777:1:2::2")
    assert "ListenAddress [fd61:6777:1:2::2]:22\n" in config
    assert "PasswordAuthentication no\n" in config
    assert "PermitRootLogin prohibit-password\n" in config


def test_addresses_are_canonical_text() -> None:
    """ssh finds a host in known_hosts by the canonical text: no group with a leading zero."""
    for i in range(200):
        for address in link.addresses(f"fleet-x-{i}"):
            assert address == ipaddress.IPv6Address(address).compressed
