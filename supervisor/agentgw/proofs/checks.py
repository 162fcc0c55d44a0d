"""The proofs as pure judgements: observations in, :class:`Check` verdicts out.

Nothing here touches the host. ``verify.py`` gathers the observations (the probe program's JSON,
unit files and properties, history, the exposure score) and hands them to the
``judge_*`` functions; tests feed them fabricated observations instead.

A check is ``passed`` only on evidence that the boundary held, ``failed`` when the evidence
shows it did not, and ``not-enforced`` when the unit asks for the boundary but the host
demonstrably cannot enforce it (no cgroup-v2 BPF firewall, no hidepid) - never "isolated".
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentgw.model.proof import Check, CheckResult, HostFacts
from agentgw.model.status import Alignment

DENIED_ERRNOS = frozenset({"EACCES", "EPERM", "ENOENT"})
READ_ONLY_ERRNOS = frozenset({"EROFS", "EACCES", "EPERM"})
# Dependencies beyond ``agentgw lint``'s (Requires, Requisite, PartOf, BindsTo, Upholds) that
# also let one instance's start or stop reach another.
MORE_COUPLINGS = ("Conflicts", "PropagatesStopTo")
INSTANCE_RE = re.compile(r"agent-gateway@[^.]+\.service")
# ProtectProc= values that hide the processes of other users.
HIDING = frozenset({"invisible", "ptraceable"})


def make_check(
    name: str, result: CheckResult, reason: str, evidence: Mapping[str, Any], at: str
) -> Check:
    return Check(name=name, result=result, reason=reason, evidence=dict(evidence), time=at)


def passed_or_failed(
    name: str, problems: Sequence[str], ok_reason: str, evidence: Mapping[str, Any], at: str
) -> Check:
    if problems:
        return make_check(name, "failed", "; ".join(problems), evidence, at)
    return make_check(name, "passed", ok_reason, evidence, at)


# --- checks of the unit ------------------------------------------------------------------------


def judge_alignment(aligned: Alignment, at: str) -> Check:
    """The running process imports exactly the promoted release (observe/status's judgement)."""
    evidence = {"state": aligned.state, "detail": aligned.reason}
    result: CheckResult = "passed" if aligned.state == "yes" else "failed"
    return make_check("alignment", result, aligned.reason, evidence, at)


def instance_couplings(unit: str, dependencies: Mapping[str, Sequence[str]]) -> list[str]:
    """``Conflicts=agent-gateway@core.service``-style links from ``unit`` to another instance."""
    return [
        f"{kind}={other}"
        for kind, others in dependencies.items()
        for other in others
        if other != unit and INSTANCE_RE.fullmatch(other)
    ]


def judge_unit_lint(
    unit: str,
    files: Sequence[str],
    pythonpath: Sequence[str],
    environment: Sequence[str],
    couplings: Sequence[str],
    at: str,
) -> Check:
    """No PYTHONPATH in the unit or its drop-ins (the env file declares the runtime once), and
    no dependency that couples this instance's lifecycle to a sibling's.

    ``pythonpath`` holds the offending ``file:line: text`` lines of the unit ``files``
    (``agentgw lint``'s scan), ``couplings`` the ``Kind=unit`` links to other instances.
    """
    env = [e for e in environment if e.startswith("PYTHONPATH=")]
    problems = [f"PYTHONPATH set in {line}" for line in pythonpath]
    problems += [f"Environment= of the running unit has {e}" for e in env]
    problems += [f"{unit} has {c}" for c in couplings]
    evidence = {"files": list(files), "pythonpath": [*pythonpath, *env],
                "couplings": list(couplings)}
    return passed_or_failed(
        "unit-lint", problems,
        f"no PYTHONPATH in {len(files)} unit files; no dependency on another instance",
        evidence, at,
    )


def sandbox_differences(gateway: Mapping[str, Any], probe: Mapping[str, Any]) -> list[str]:
    """Property names whose values differ between the gateway and the probe unit."""
    return [
        f"{name}: gateway {gateway.get(name)!r}, probe {probe.get(name)!r}"
        for name in sorted(set(gateway) | set(probe))
        if gateway.get(name) != probe.get(name)
    ]


def judge_probe_sandbox(differences: Sequence[str], probe_error: str | None, at: str) -> Check:
    """The probes prove something about the gateway only if they ran in its exact sandbox."""
    if probe_error is not None:
        return make_check("probe-sandbox", "failed", probe_error, {"error": probe_error}, at)
    return passed_or_failed(
        "probe-sandbox",
        [f"probe sandbox differs: {d}" for d in differences],
        "the probe unit's sandbox properties equal the gateway's",
        {"differences": list(differences)},
        at,
    )


def judge_exposure(score: float | None, threshold: float, at: str) -> Check:
    """``systemd-analyze security`` of the running unit at or under the host's threshold."""
    evidence = {"score": score, "threshold": threshold}
    if score is None:
        return make_check("exposure", "failed", "systemd-analyze security gave no score",
                          evidence, at)
    ok = score <= threshold
    return make_check(
        "exposure", "passed" if ok else "failed",
        f"exposure {score} {'<=' if ok else '>'} threshold {threshold}", evidence, at,
    )


def judge_lifecycle(record: Mapping[str, Any] | None, at: str) -> Check:
    """The last promote/rollback/restart of this profile left every sibling's MainPID as it was."""
    if record is None:
        return make_check(
            "lifecycle", "failed",
            "no promote, rollback or restart of this profile is recorded: "
            "run 'agentgw verify --lifecycle'",
            {}, at,
        )
    raw = record.get("detail")
    detail: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    unchanged = detail.get("siblings_unchanged")
    evidence = {
        "op": record.get("action"), "time": record.get("time"), "result": record.get("result"),
        "release": detail.get("release"), "siblings_unchanged": unchanged,
    }
    what = f"{record.get('action')} at {record.get('time')}"
    if unchanged is True:
        return make_check("lifecycle", "passed", f"{what} left every sibling running unchanged",
                          evidence, at)
    why = "changed a sibling's MainPID" if unchanged is False else "recorded no sibling check"
    return make_check("lifecycle", "failed", f"{what} {why}", evidence, at)


# --- behavioural checks: the probe's answers ---------------------------------------------------


@dataclass(frozen=True)
class ProbeContext:
    """What the judges need besides the probe's answers."""

    profile: str
    user: str
    isolated_mode: bool
    host: HostFacts
    # The gateway's sandbox properties, normalised (IP lists as CIDR strings).
    sandbox: Mapping[str, Any]


def _attempts(entries: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    return [{k: e.get(k) for k in keys if k in e} for e in entries]


def judge_cross_read(entries: Sequence[Mapping[str, Any]], ctx: ProbeContext, at: str) -> Check:
    """Each sibling's home, logs and env file are unreadable to this profile's user."""
    evidence = {"user": ctx.user, "attempts": _attempts(entries, ("profile", "path", "op", "ok",
                                                                   "errno", "error"))}
    readable = [e for e in entries if e.get("ok")]
    odd = [e for e in entries if not e.get("ok") and e.get("errno") not in DENIED_ERRNOS]
    problems = [f"{e['op']} {e['path']} as {ctx.user} succeeded" for e in readable]
    problems += [f"{e['op']} {e['path']}: unexpected {e.get('errno') or e.get('error')}"
                 for e in odd]
    if readable and not ctx.isolated_mode:
        problems = [f"convenience mode: every profile runs as {ctx.user}, so sibling files are "
                    f"readable (expected): {', '.join(e['path'] for e in readable)}"]
    if not entries:
        return make_check("cross-profile-read", "passed", "no sibling profiles", evidence, at)
    return passed_or_failed(
        "cross-profile-read", problems,
        f"{len(entries)} reads of sibling files denied "
        f"({', '.join(sorted({str(e.get('errno')) for e in entries}))})",
        evidence, at,
    )


def _in(host: str, networks: Iterable[str]) -> bool:
    address = ipaddress.ip_address(host)
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


def reached(entry: Mapping[str, Any]) -> bool:
    return entry.get("tcp") == "connected" or entry.get("udp_received") is True


def judge_egress(entries: Sequence[Mapping[str, Any]], ctx: ProbeContext, at: str) -> Check:
    """Non-allowlisted addresses (a listener of verify's, each sibling's address, the registry)
    are unreachable; the profile's own allowlisted address is reachable.

    A denied address that was reached is ``not-enforced`` when the unit does deny it but the
    host's BPF firewall demonstrably does not work, else ``failed``.
    """
    deny = list(ctx.sandbox.get("IPAddressDeny") or [])
    allow = list(ctx.sandbox.get("IPAddressAllow") or [])
    evidence = {
        "attempts": _attempts(entries, ("target", "host", "port", "expect", "tcp", "udp",
                                        "udp_received")),
        "IPAddressDeny": deny, "IPAddressAllow": allow, "bpf_firewall": ctx.host.bpf_firewall,
    }
    problems: list[str] = []
    unenforced: list[str] = []
    for e in entries:
        where = f"{e['target']} {e['host']}:{e['port']}"
        if e["expect"] == "allow" and not reached(e):
            problems.append(f"allowlisted {where} unreachable (tcp {e.get('tcp')})")
        elif e["expect"] == "deny" and reached(e):
            if not _in(e["host"], deny) or _in(e["host"], allow):
                problems.append(f"reached {where}: the unit does not deny it "
                                "(IPAddressDeny=/IPAddressAllow=)")
            elif ctx.host.bpf_firewall == "not-enforced":
                unenforced.append(where)
            else:
                problems.append(f"reached {where} although the unit denies it")
    if problems:
        return make_check("egress", "failed", "; ".join(problems), evidence, at)
    if unenforced:
        return make_check(
            "egress", "not-enforced",
            "the host does not enforce IPAddressDeny= (no cgroup-v2 BPF firewall): reached "
            + ", ".join(unenforced),
            evidence, at,
        )
    denied = sum(1 for e in entries if e["expect"] == "deny")
    return make_check(
        "egress", "passed",
        f"{denied} non-allowlisted addresses unreachable; the allowlisted own address reachable",
        evidence, at,
    )


def judge_denied_tools(entries: Sequence[Mapping[str, Any]], at: str) -> Check:
    """No denied tool can be found on PATH, opened or run."""
    problems = []
    for e in entries:
        if e.get("error"):
            problems.append(f"{e['tool']}: probe error {e['error']}")
        if e.get("which"):
            problems.append(f"{e['tool']} found on PATH at {e['which']}")
        for a in e.get("attempts", []):
            if a.get("open") == "opened" or str(a.get("exec", "")).startswith("ran"):
                problems.append(f"{a['path']} is usable (open {a.get('open')}, exec "
                                f"{a.get('exec')})")
    evidence = {"tools": [dict(e) for e in entries]}
    if not entries:
        return make_check("denied-tools", "passed", "no denied tools configured", evidence, at)
    return passed_or_failed(
        "denied-tools", problems, f"{len(entries)} denied tools absent: "
        + ", ".join(str(e["tool"]) for e in entries), evidence, at,
    )


def _denied(
    name: str, entries: Sequence[Mapping[str, Any]], what: str, errnos: frozenset[str] | None,
    at: str,
) -> Check:
    """Every attempt failed (with one of ``errnos``, when given)."""
    problems = []
    for e in entries:
        label = e.get("path") or e.get("namespace")
        if e.get("ok"):
            problems.append(f"{what} {label} succeeded")
        elif e.get("error"):
            problems.append(f"{what} {label}: probe error {e['error']}")
        elif errnos is not None and e.get("errno") not in errnos:
            problems.append(f"{what} {label}: unexpected {e.get('errno')}")
    evidence = {"attempts": [dict(e) for e in entries]}
    if not entries:
        return make_check(name, "failed", f"nothing to {what} was probed", evidence, at)
    return passed_or_failed(
        name, problems,
        f"{what} denied: " + ", ".join(f"{e.get('path') or e.get('namespace')} "
                                       f"({e.get('errno')})" for e in entries),
        evidence, at,
    )


def judge_read_only(entries: Sequence[Mapping[str, Any]], at: str) -> Check:
    """/usr, /etc and the release are read-only to the gateway (EROFS or EACCES)."""
    return _denied("read-only-system", entries, "write to", READ_ONLY_ERRNOS, at)


def judge_devices(entries: Sequence[Mapping[str, Any]], at: str) -> Check:
    """/dev/kvm cannot be opened: untrusted code goes to the sandbox broker's microVM."""
    return _denied("devices", entries, "open", None, at)


def judge_namespaces(entries: Sequence[Mapping[str, Any]], at: str) -> Check:
    """No new user or mount namespace (the first step of most container escapes)."""
    return _denied("namespaces", entries, "unshare", None, at)


def judge_sibling_process(
    entries: Sequence[Mapping[str, Any]], ctx: ProbeContext, at: str
) -> Check:
    """Sibling gateways (and PID 1) cannot be traced or read, and are hidden in /proc."""
    protect = str(ctx.sandbox.get("ProtectProc", "default"))
    problems: list[str] = []
    unenforced: list[str] = []
    for e in entries:
        who = f"{e.get('profile')} pid {e.get('pid')}"
        if e.get("error"):
            problems.append(f"{who}: probe error {e['error']}")
            continue
        for key, success in (("environ", "read"), ("mem", "read"), ("ptrace", "attached")):
            if e.get(key) == success:
                problems.append(f"{key} of {who} {success}")
        if e.get("visible"):
            if protect not in HIDING:
                problems.append(f"{who} is visible in /proc (ProtectProc={protect})")
            elif ctx.host.protect_proc == "not-enforced":
                unenforced.append(who)
            else:
                problems.append(f"{who} is visible in /proc despite ProtectProc={protect}")
    if problems and not ctx.isolated_mode:
        problems.insert(0, f"convenience mode: every profile runs as {ctx.user}")
    evidence = {"ProtectProc": protect, "protect_proc": ctx.host.protect_proc,
                "attempts": [dict(e) for e in entries]}
    if problems:
        return make_check("sibling-process", "failed", "; ".join(problems), evidence, at)
    if unenforced:
        return make_check(
            "sibling-process", "not-enforced",
            "the host does not enforce ProtectProc= (no hidepid): visible " + ", ".join(unenforced),
            evidence, at,
        )
    return make_check(
        "sibling-process", "passed",
        f"{len(entries)} processes hidden, their environ, mem and ptrace denied", evidence, at,
    )


BEHAVIOURAL = ("cross-profile-read", "egress", "denied-tools", "read-only-system", "devices",
               "namespaces", "sibling-process")


def judge_probe(answers: Mapping[str, Any] | None, error: str | None, ctx: ProbeContext,
                at: str) -> list[Check]:
    """Every behavioural check from one probe run; all failed when the probe did not run."""
    if answers is None:
        why = f"the probe did not run: {error}"
        return [make_check(name, "failed", why, {"error": error}, at) for name in BEHAVIOURAL]
    return [
        judge_cross_read(answers.get("read", []), ctx, at),
        judge_egress(answers.get("connect", []), ctx, at),
        judge_denied_tools(answers.get("tools", []), at),
        judge_read_only(answers.get("write", []), at),
        judge_devices(answers.get("devices", []), at),
        judge_namespaces(answers.get("unshare", []), at),
        judge_sibling_process(answers.get("processes", []), ctx, at),
    ]


def judge_record(checks: Sequence[Check], *, isolated_mode: bool, user: str) -> tuple[bool, str]:
    """Isolated only when every check passed, in production-isolation mode."""
    failed = [c.name for c in checks if c.result == "failed"]
    unenforced = [c.name for c in checks if c.result == "not-enforced"]
    if not isolated_mode:
        detail = f" (failed: {', '.join(failed)})" if failed else ""
        return False, f"convenience mode: every profile runs as {user}; not isolated{detail}"
    if failed:
        return False, "failed: " + ", ".join(failed)
    if unenforced:
        return False, "not enforced by this host: " + ", ".join(unenforced)
    if not checks:
        return False, "no checks ran"
    return True, f"all {len(checks)} checks passed"
