"""``agentgw verify``: prove each running profile's isolation and write a signed record.

Per profile: read the running unit (sandbox properties, unit files, dependencies), run the probe
program as the gateway (probes.py), judge every check (checks.py, pure), sign and write the
record (record.py). The host facts are measured once per run (host.py). Everything is read
from the live host: a record proves the process that was running when it was made.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentgw.apply.control import Controller
from agentgw.apply.history import read_history
from agentgw.bus import SERVICE, UNIT, Systemd
from agentgw.config.load import Config
from agentgw.errors import AgentgwError, Exit
from agentgw.fsio import iso
from agentgw.model.proof import Check, HostFacts, ProofRecord, SandboxMatch
from agentgw.model.status import ProfileStatus
from agentgw.observe import lint
from agentgw.observe.gateway import GatewayProbe
from agentgw.observe.status import collect_status
from agentgw.paths import Layout, unit_name
from agentgw.proofs import checks
from agentgw.proofs.host import probe_host
from agentgw.proofs.probes import (
    CONNECT_TIMEOUT_S,
    Listeners,
    Target,
    read_sandbox,
    run_probe,
    transient_properties,
)
from agentgw.proofs.record import host_key_path, load_or_create_host_key, sign_record, write_record

# A loopback address no profile or registry uses, for the "not allowlisted" probe and the host's
# BPF check; the first one free in this range is taken.
DENY_CANDIDATES = tuple(f"127.77.9.{n}" for n in range(9, 255))
LIFECYCLE_OPS = frozenset({"promote", "rollback", "restart"})
TOOL_PATH = os.defpath + ":/usr/local/bin:/usr/sbin:/sbin"


@dataclass(frozen=True)
class Verified:
    record: ProofRecord
    path: Path


def deny_address(config: Config) -> str:
    used = {str(p.listen.host) for p in config.profiles.values()}
    if config.host.registry.tcp is not None:
        used.add(str(config.host.registry.tcp.host))
    return next(a for a in DENY_CANDIDATES if a not in used)


def tool_paths(tool: str) -> list[str]:
    """Where a denied tool is on this host: the path and what it resolves to (bare names are
    looked up like apply does). The probe also looks it up on its own PATH."""
    found = tool if tool.startswith("/") else shutil.which(tool, path=TOOL_PATH)
    if found is None:
        return []
    return sorted({found, os.path.realpath(found)})


def unit_lint_facts(
    sd: Systemd, profile: str
) -> tuple[list[str], list[str], list[str], list[str]]:
    """The unit files systemd loaded for the instance, their PYTHONPATH lines, the unit's
    Environment=, and its links to other instances (``agentgw lint``'s checks, plus a few
    more dependency kinds)."""
    unit = unit_name(profile)
    props = sd.unit_properties(unit, UNIT, ["FragmentPath", "DropInPaths", *checks.MORE_COUPLINGS])
    files = [f for f in [props["FragmentPath"], *props["DropInPaths"]] if f]
    pythonpath = [hit for f in files for hit in lint.pythonpath_lines(Path(f))]
    environment = sd.unit_properties(unit, SERVICE, ["Environment"])["Environment"]
    independent = lint.check_independent(sd, profile)
    couplings = [f"{kind}={other}" for kind, others in independent.evidence.items()
                 if isinstance(others, list) for other in others]
    couplings += checks.instance_couplings(
        unit, {k: props[k] for k in checks.MORE_COUPLINGS}
    )
    return files, pythonpath, list(environment), couplings


def last_lifecycle(layout: Layout, profile: str) -> dict[str, Any] | None:
    """The last history record of a promote, rollback or restart of ``profile``."""
    records = [r for r in read_history(layout.history, profile) if r.action in LIFECYCLE_OPS]
    return records[-1].model_dump() if records else None


@dataclass(frozen=True)
class Scene:
    """Everything about the host that is the same for each profile verified in one run."""

    layout: Layout
    config: Config
    statuses: Mapping[str, ProfileStatus]
    host: HostFacts
    deny_host: str


def host_secrets(layout: Layout, config: Config) -> list[Path]:
    """agentgw's files a gateway must not read: the host config, the proof-signing key, the
    registry token, every profile's credential files, the state dir's history."""
    paths = [layout.host_config, host_key_path(layout), layout.history]
    if config.host.registry.token_file is not None:
        paths.append(config.host.registry.token_file)
    return paths


def probe_spec(scene: Scene, profile: str, targets: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the probe tries as ``profile``: sibling files and processes, addresses, denied
    tools, writes, /dev/kvm, namespaces."""
    layout, config = scene.layout, scene.config
    siblings = [s for s in config.profiles if s != profile]
    reads = []
    for s in siblings:
        reads += [{"profile": s, "path": os.fspath(layout.home(s)), "op": "listdir"},
                  {"profile": s, "path": os.fspath(layout.logs(s)), "op": "listdir"},
                  {"profile": s, "path": os.fspath(layout.env_file(s)), "op": "read"},
                  {"profile": s, "path": os.fspath(layout.gateways_config / f"{s}.yaml"),
                   "op": "read"}]
        reads += [{"profile": s, "path": os.fspath(path), "op": "read"}
                  for path in config.profiles[s].credentials.values()]
    # agentgw's own configuration, state and keys: no gateway reads them, its own included.
    reads += [{"profile": "agentgw", "path": os.fspath(path), "op": "read"}
              for path in host_secrets(layout, config)]
    processes = [{"profile": s, "pid": scene.statuses[s].main_pid}
                 for s in siblings if scene.statuses[s].main_pid]
    # PID 1 (root's) too, so the check never passes for want of a running sibling.
    processes.append({"profile": "pid1", "pid": 1})
    release = scene.statuses[profile].release
    writes = ["/usr", "/etc", os.fspath(layout.lib), os.fspath(layout.profile_dir(profile))]
    if release is not None:
        writes.append(release.path)
    return {
        "read": reads,
        "connect": list(targets),
        "tools": [{"tool": t, "paths": tool_paths(t)}
                  for t in config.profiles[profile].denied_tools],
        "write": writes,
        "devices": ["/dev/kvm"],
        "unshare": ["user", "mnt"],
        "processes": processes,
        "timeout": CONNECT_TIMEOUT_S,
    }


def open_targets(scene: Scene, profile: str, net: Listeners) -> list[Target]:
    config = scene.config
    targets = [net.open("not allowlisted", scene.deny_host, "deny")]
    targets += [net.open(f"sibling {s}", str(p.listen.host), "deny")
                for s, p in config.profiles.items() if s != profile]
    if config.host.registry.tcp is not None:
        targets.append(net.open("registry", str(config.host.registry.tcp.host), "deny"))
    targets.append(net.open("own address", str(config.profiles[profile].listen.host), "allow"))
    return targets


def prove(sd: Systemd, scene: Scene, profile: str, net: Listeners) -> ProofRecord:
    """Every check of one running profile, judged into an unsigned record."""
    config, at = scene.config, iso(time.time())
    unit = unit_name(profile)
    status = scene.statuses[profile]
    user = config.host.user(profile)
    gateway = read_sandbox(sd, unit)
    targets = open_targets(scene, profile, net)
    probe = run_probe(sd, profile, os.fspath(config.host.python),
                      probe_spec(scene, profile, [t.spec() for t in targets]),
                      transient_properties(gateway))
    answers = probe.answers
    if answers is not None:
        by_port = {t.port: net.received(t) for t in targets}
        for entry in answers.get("connect", []):
            entry["udp_received"] = by_port.get(entry.get("port"), False)
    differences = checks.sandbox_differences(gateway, probe.sandbox)
    ctx = checks.ProbeContext(profile=profile, user=user, isolated_mode=config.host.isolated,
                              host=scene.host, sandbox=gateway)
    files, pythonpath, environment, couplings = unit_lint_facts(sd, profile)
    score = lint.exposure(unit)
    threshold = config.host.exposure_threshold
    found: list[Check] = [
        checks.judge_alignment(status.aligned, at),
        checks.judge_unit_lint(unit, files, pythonpath, environment, couplings, at),
        checks.judge_probe_sandbox(differences, probe.error, at),
        *checks.judge_probe(answers, probe.error, ctx, at),
        checks.judge_lifecycle(last_lifecycle(scene.layout, profile), at),
        checks.judge_exposure(score, threshold, at),
    ]
    isolated, reason = checks.judge_record(found, isolated_mode=config.host.isolated, user=user)
    return ProofRecord(
        profile=profile,
        unit=unit,
        time=iso(time.time()),
        isolation_mode=config.host.isolation,
        main_pid=status.main_pid or 0,
        release=status.release.name if status.release else None,
        host=scene.host,
        checks=tuple(found),
        isolated=isolated,
        reason=reason,
        exposure=score,
        exposure_threshold=threshold,
        sandbox=SandboxMatch(gateway_unit=unit, probe_unit=probe.unit, gateway=gateway,
                             probe=probe.sandbox, match=not differences,
                             differences=tuple(differences)),
    )


def chosen(config: Config, statuses: Mapping[str, ProfileStatus], name: str | None,
           out: Callable[[str], None]) -> list[str]:
    """The profiles to verify: ``name``, or every running one."""
    if name is not None:
        config.profile(name)
        if not statuses[name].main_pid:
            raise AgentgwError(
                f"profile {name} is not running ({statuses[name].active_state}): "
                "only a running gateway can be proven",
                hint=f"agentgw start {name}", code=Exit.VERIFY,
            )
        return [name]
    names = [p for p in config.profiles if statuses[p].main_pid]
    for p in config.profiles:
        if p not in names:
            out(f"{p}: not running ({statuses[p].active_state}), not verified")
    return names


def verify_profiles(
    layout: Layout,
    config: Config,
    sd: Systemd,
    name: str | None,
    *,
    lifecycle: bool,
    out: Callable[[str], None],
) -> list[Verified]:
    """Prove ``name`` (or every running profile), sign and write one record each."""
    statuses = {s.profile: s for s in collect_status(layout, config, sd)}
    names = chosen(config, statuses, name, out)
    if lifecycle:
        controller = Controller(layout, config, sd, GatewayProbe(layout), out)
        for p in names:
            out(f"restart {p} (lifecycle proof)")
            controller.restart(p)
        statuses = {s.profile: s for s in collect_status(layout, config, sd)}
    key = load_or_create_host_key(layout)
    done = []
    with Listeners() as net:
        deny_host = deny_address(config)
        host = probe_host(sd, net, os.fspath(config.host.python), deny_host)
        out(f"host: kernel {host.kernel}, systemd {host.systemd}, cgroup {host.cgroup}, "
            f"bpf firewall {host.bpf_firewall}, ProtectProc {host.protect_proc}")
        scene = Scene(layout=layout, config=config, statuses=statuses, host=host,
                      deny_host=deny_host)
        for p in names:
            record = sign_record(prove(sd, scene, p, net), key)
            done.append(Verified(record=record, path=write_record(layout, record)))
    return done
