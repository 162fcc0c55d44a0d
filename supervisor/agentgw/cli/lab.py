"""``agentgw lab``: boot a disposable systemd + D-Bus, run commands in it, tear it down."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TypedDict, Unpack

import click

from agentgw import run
from agentgw.cli.context import echo_json
from agentgw.errors import AgentgwError, Exit
from agentgw.lab.link import LinkSpec
from agentgw.lab.machine import Lab, booted
from agentgw.lab.spec import DEFAULT_NAME, LabSpec, why_unavailable


def checkout() -> Path | None:
    """The agentgw checkout the caller works in (the working directory or a parent holding its
    pyproject.toml), bound into every lab so its tests and scripts run inside unchanged."""
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file() and 'name = "agentgw"' in pyproject.read_text():
            return directory
    return None


def default_binds(extra: tuple[Path, ...]) -> tuple[Path, ...]:
    binds = [p.resolve() for p in extra]
    top = checkout()
    if top is not None and top not in binds:
        binds.insert(0, top)
    return tuple(binds)


def inside_cwd(binds: tuple[Path, ...] | list[str]) -> Path:
    """Keep the caller's directory when it is visible inside the lab, else use /."""
    here = Path.cwd().resolve()
    for bind in binds:
        if here == Path(bind) or Path(bind) in here.parents:
            return here
    return Path("/")


name_option = click.option(
    "--name", default=DEFAULT_NAME, show_default=True, help="Name of the lab machine."
)
bind_option = click.option(
    "--bind",
    "binds",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Extra host directory to bind at the same path (the checkout always is).",
)
bpf_option = click.option(
    "--no-bpf",
    is_flag=True,
    help="Boot without bpf() allowed: IPAddressDeny= is then NOT enforced (for sabotage tests).",
)

cgroups_option = click.option(
    "--cgroups",
    type=click.Choice(["unified", "hybrid"]),
    default="unified",
    show_default=True,
    help="unified: cgroup v2 only (on hosts that keep cpu/memory/pids on v1, CPUQuota=, "
    "MemoryMax= and TasksMax= are then not enforced inside); hybrid: cgroup2 plus those v1 "
    "controllers delegated read-write, so they are.",
)

link_option = click.option(
    "--link",
    "netns",
    metavar="NETNS",
    help="Give the lab a network link instead of no network: a veth pair into the network "
    "namespace NETNS (made by the caller with 'ip netns add'), with IPv6 ULA addresses that "
    "exist only on that pair, and an sshd on the lab's end (host key made at boot). "
    "Needs --authorized-key.",
)
key_option = click.option(
    "--authorized-key",
    "authorized_key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Public key file allowed to log in as root over the --link's sshd.",
)


def link_spec(netns: str | None, authorized_key: Path | None) -> LinkSpec | None:
    if netns is None and authorized_key is None:
        return None
    if netns is None or authorized_key is None:
        raise click.UsageError("--link and --authorized-key go together")
    return LinkSpec(netns=netns, authorized_key=authorized_key.read_text())


@click.group()
def lab() -> None:
    """Boot a disposable systemd + D-Bus (systemd-nspawn over an overlay of the host root).

    Writes inside the lab go to a tmpfs and vanish on 'down'. The checkout agentgw runs from is
    bound in at the same path, so its tests and tools run inside unchanged.
    """


@lab.command("up")
@name_option
@bind_option
@bpf_option
@cgroups_option
@link_option
@key_option
def lab_up(name: str, binds: tuple[Path, ...], no_bpf: bool, cgroups: str,
           netns: str | None, authorized_key: Path | None) -> None:
    """Boot a lab and wait until its systemd is running; prints the boot time (and, with
    --link, the lab's address and sshd host key; also in 'lab status --json')."""
    spec = LabSpec(name=name, binds=default_binds(binds), bpf=not no_bpf, cgroups=cgroups,
                   link=link_spec(netns, authorized_key))
    machine = Lab.up(spec)
    click.echo(
        f"lab {name} up in {machine.state.boot_seconds:.2f}s "
        f"(init pid {machine.state.leader_pid}, bpf {'allowed' if spec.bpf else 'blocked'}, "
        f"cgroups {cgroups})"
    )
    if machine.state.address:
        click.echo(f"ssh root@{machine.state.address} (host key {machine.state.host_key})")


@lab.command("exec", context_settings={"ignore_unknown_options": True})
@name_option
@click.option("--cwd", type=click.Path(path_type=Path), help="Working directory inside the lab.")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def lab_exec(name: str, cwd: Path | None, argv: tuple[str, ...]) -> None:
    """Run ARGV inside the lab as root; its exit code becomes ours.

    Example: agentgw lab exec -- systemctl is-system-running
    """
    machine = _require(name)
    wd = cwd if cwd is not None else inside_cwd(machine.state.binds)
    sys.stdout.flush()
    run.exec_replace(machine.nsenter_argv(list(argv), cwd=wd))


class SpecOptions(TypedDict):
    """The options of ``lab run`` that say what to boot (see the option decorators)."""

    binds: tuple[Path, ...]
    no_bpf: bool
    cgroups: str
    netns: str | None
    authorized_key: Path | None


@lab.command("run", context_settings={"ignore_unknown_options": True})
@name_option
@bind_option
@bpf_option
@cgroups_option
@link_option
@key_option
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def lab_run(name: str, argv: tuple[str, ...], **options: Unpack[SpecOptions]) -> None:
    """Boot a lab, run ARGV inside, and tear the lab down whatever happens (also on Ctrl-C).

    Exits with ARGV's exit code.
    """
    spec = LabSpec(name=name, binds=default_binds(options["binds"]), bpf=not options["no_bpf"],
                   cgroups=options["cgroups"],
                   link=link_spec(options["netns"], options["authorized_key"]))
    with booted(spec) as machine:
        click.echo(f"lab {name} up in {machine.state.boot_seconds:.2f}s", err=True)
        result = machine.exec(list(argv), cwd=inside_cwd(spec.binds), check=False, capture=False)
    sys.exit(result.returncode)


@lab.command("down")
@name_option
@click.option("--all", "all_", is_flag=True, help="Tear down every lab on this host.")
def lab_down(name: str, all_: bool) -> None:
    """Power off the lab and remove its processes and mounts (also repairs a half-done up)."""
    names = Lab.names() if all_ else [name]
    for each in names:
        removed = Lab.teardown(each)
        click.echo(f"lab {each} {'down' if removed else 'was not up'}")


@lab.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def lab_status(as_json: bool) -> None:
    """List labs on this host and whether each is alive."""
    rows = []
    for each in Lab.names():
        machine = Lab.find(each)
        rows.append(
            {
                "name": each,
                "alive": bool(machine and machine.alive()),
                "init_pid": machine.state.leader_pid if machine else None,
                "bpf": machine.state.bpf if machine else None,
                "cgroups": machine.state.cgroups if machine else None,
                "boot_seconds": machine.state.boot_seconds if machine else None,
                "address": machine.state.address or None if machine else None,
                "host_key": machine.state.host_key or None if machine else None,
            }
        )
    if as_json:
        echo_json({"labs": rows})
        return
    for row in rows:
        click.echo(f"{row['name']}\t{'up' if row['alive'] else 'dead'}\tinit={row['init_pid']}")
    if not rows:
        click.echo("no labs")


@lab.command("check")
def lab_check() -> None:
    """Exit 0 when this machine can boot a lab; otherwise say why and exit 1."""
    reason = why_unavailable()
    if reason is not None:
        raise AgentgwError(f"no lab here: {reason}", hint="run as root on Debian 12 (make setup)")
    click.echo("lab available")


def _require(name: str) -> Lab:
    machine = Lab.find(name)
    if machine is None or not machine.alive():
        raise AgentgwError(
            f"lab {name!r} is not up", hint=f"agentgw lab up --name {name}", code=Exit.USAGE
        )
    return machine


__all__ = ["lab"]
