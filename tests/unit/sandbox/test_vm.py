"""The QEMU command line: no network, seccomp, the limits asked for, the guest cmdline."""

from __future__ import annotations

from pathlib import Path

from agentgw.sandbox.image import Image
from agentgw.sandbox.vm import Machine, parse_tsc_khz, render_cmdline, render_qemu_argv

IMAGE = Image(Path("/cache/6.1"), {"kernel_version": "6.1"})


def test_argv_has_no_network_and_a_seccomp_sandbox() -> None:
    """Every VM: -nic none, -nodefaults, seccomp denying spawn/elevate, reboot means exit."""
    argv = render_qemu_argv(Machine("tcg"), IMAGE, Path("/t/initrd"), memory_mb=128, cpus=2)
    joined = " ".join(argv)
    for part in ("-M microvm", "-accel tcg", "-nic none", "-nodefaults", "-no-user-config",
                 "-no-reboot", "-m 128", "-smp 2", "-display none",
                 "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
                 "-kernel /cache/6.1/vmlinux", "-initrd /t/initrd"):
        assert part in joined
    assert "-netdev" not in argv and "user" not in argv


def test_cpu_model_follows_the_accelerator() -> None:
    """KVM passes the host CPU through; TCG emulates one with rdrand (fast entropy)."""
    assert Machine("kvm").cpu == "host"
    assert Machine("tcg").cpu == "qemu64,+rdrand"


def test_cmdline_carries_the_boot_fixes() -> None:
    """panic=-1 and cryptomgr.notests always; tsc_early_khz when the host rate is known."""
    assert render_cmdline(2445406).split() == [
        "console=ttyS0", "quiet", "loglevel=1", "panic=-1", "reboot=t", "cryptomgr.notests",
        "tsc_early_khz=2445406",
    ]
    assert "tsc_early_khz" not in render_cmdline(None)


def test_tsc_rate_from_cpuinfo() -> None:
    """/proc/cpuinfo's MHz becomes kHz; absent or garbled gives None."""
    assert parse_tsc_khz("processor\t: 0\ncpu MHz\t\t: 2445.406\n") == 2445406
    assert parse_tsc_khz("processor\t: 0\n") is None
    assert parse_tsc_khz("cpu MHz : fast\n") is None
