"""The proofs' judgements are pure: fabricated probe answers in, verdicts out.

Each test states which observation makes a check pass, fail, or "not enforced", so a change to
the rules shows up here before it reaches a lab.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentgw.model.proof import Capability, Check, HostFacts
from agentgw.model.status import Alignment
from agentgw.proofs import checks

AT = "2025-01-01T00:00:00Z"
DENY_ANY = ["0.0.0.0/0", "::/0"]


def host(bpf: Capability = "enforced", proc: Capability = "enforced") -> HostFacts:
    return HostFacts(kernel="6.1", systemd="252", cgroup="unified", bpf_firewall=bpf,
                     protect_proc=proc)


def ctx(*, isolated: bool = True, bpf: Capability = "enforced", proc: Capability = "enforced",
        deny: list[str] | None = None, protect: str = "invisible") -> checks.ProbeContext:
    return checks.ProbeContext(
        profile="api", user="agent-api" if isolated else "agent-shared", isolated_mode=isolated,
        host=host(bpf, proc),
        sandbox={"IPAddressDeny": DENY_ANY if deny is None else deny,
                 "IPAddressAllow": ["127.77.0.3/32", "198.51.100.0/24"],
                 "ProtectProc": protect},
    )


def connect(target: str, host_ip: str, expect: str, tcp: str, udp_received: bool = False
            ) -> dict[str, Any]:
    return {"target": target, "host": host_ip, "port": 4000, "udp_port": 4001,
            "expect": expect, "tcp": tcp, "udp": "EPERM" if tcp != "connected" else "sent",
            "udp_received": udp_received}


BLOCKED = [
    connect("not allowlisted", "127.77.9.9", "deny", "timeout"),
    connect("sibling core", "127.77.0.2", "deny", "timeout"),
    connect("own address", "127.77.0.3", "allow", "connected", True),
]


def test_egress_passes_when_denied_addresses_drop_and_the_own_address_answers() -> None:
    """Every non-allowlisted target unreachable and the allowlisted own /32 reachable."""
    check = checks.judge_egress(BLOCKED, ctx(), AT)
    assert ("passed", "2 non-allowlisted addresses unreachable; the allowlisted own address "
            "reachable") == (check.result, check.reason)
    assert check.evidence["IPAddressDeny"] == DENY_ANY


def test_egress_reached_without_ipaddressdeny_fails_naming_the_unit() -> None:
    """A drop-in cleared IPAddressDeny=: reaching a sibling is the unit's fault -> failed, even
    on a host whose firewall works."""
    answers = [*BLOCKED[:1], connect("sibling core", "127.77.0.2", "deny", "connected"),
               BLOCKED[2]]
    check = checks.judge_egress(answers, ctx(deny=[]), AT)
    assert "failed" == check.result
    assert "reached sibling core 127.77.0.2:4000: the unit does not deny it" in check.reason


def test_egress_reached_on_a_host_without_bpf_firewall_is_not_enforced() -> None:
    """The unit denies everything but the host's BPF firewall is off: not-enforced, not failed
    and never passed."""
    answers = [connect("not allowlisted", "127.77.9.9", "deny", "connected", True), BLOCKED[2]]
    check = checks.judge_egress(answers, ctx(bpf="not-enforced"), AT)
    assert "not-enforced" == check.result
    assert check.reason.startswith("the host does not enforce IPAddressDeny=")


def test_egress_reached_despite_a_working_firewall_fails() -> None:
    """A reached address the unit denies, on a host whose firewall works, is a failure."""
    answers = [connect("not allowlisted", "127.77.9.9", "deny", "timeout", True), BLOCKED[2]]
    assert "failed" == checks.judge_egress(answers, ctx(), AT).result


def test_egress_fails_when_the_allowlisted_address_is_unreachable() -> None:
    """A deny that blocks everything, the allowlist included, does not pass: the allow path is
    part of the proof."""
    answers = [BLOCKED[0], connect("own address", "127.77.0.3", "allow", "timeout")]
    check = checks.judge_egress(answers, ctx(), AT)
    assert ("failed", "allowlisted own address 127.77.0.3:4000 unreachable (tcp timeout)") == (
        check.result, check.reason)


READS = [
    {"profile": "core", "path": "/opt/agent/gateways/core/home", "op": "listdir",
     "ok": False, "errno": "EACCES"},
    {"profile": "core", "path": "/opt/agent/gateways/core/env", "op": "read",
     "ok": False, "errno": "EACCES"},
]


def test_cross_read_denied_passes_and_a_readable_home_fails() -> None:
    """EACCES on every sibling file passes; one listable sibling home (chmod 0755) fails."""
    assert "passed" == checks.judge_cross_read(READS, ctx(), AT).result
    opened = [{**READS[0], "ok": True, "errno": None, "entries": 2}, READS[1]]
    check = checks.judge_cross_read(opened, ctx(), AT)
    assert ("failed", "listdir /opt/agent/gateways/core/home as agent-api succeeded") == (
        check.result, check.reason)


def test_cross_read_in_convenience_mode_fails_with_that_reason() -> None:
    """In convenience mode the read succeeds (one shared user): failed, and said to be
    expected in that mode."""
    opened = [{**r, "ok": True, "errno": None} for r in READS]
    check = checks.judge_cross_read(opened, ctx(isolated=False), AT)
    assert "failed" == check.result
    assert check.reason.startswith("convenience mode: every profile runs as agent-shared")


def test_denied_tools_absent_pass_and_a_visible_one_fails() -> None:
    """A tool hidden by InaccessiblePaths= (mode 0000, EACCES) passes; one found on PATH and
    run fails."""
    hidden = {"tool": "curl", "paths": ["/usr/bin/curl"], "which": None, "attempts": [
        {"path": "/usr/bin/curl", "stat": "mode 0000", "open": "EACCES", "exec": "EACCES"}]}
    assert "passed" == checks.judge_denied_tools([hidden], AT).result
    visible = {**hidden, "which": "/usr/bin/curl", "attempts": [
        {"path": "/usr/bin/curl", "stat": "mode 0755", "open": "opened", "exec": "ran (exit 0)"}]}
    check = checks.judge_denied_tools([visible], AT)
    assert "failed" == check.result
    assert "curl found on PATH at /usr/bin/curl" in check.reason


@pytest.mark.parametrize(
    ("judge", "entry", "result"),
    [
        (checks.judge_read_only, {"path": "/usr", "ok": False, "errno": "EROFS"}, "passed"),
        (checks.judge_read_only, {"path": "/usr", "ok": True}, "failed"),
        (checks.judge_read_only, {"path": "/usr", "ok": False, "errno": "ENOSPC"}, "failed"),
        (checks.judge_devices, {"path": "/dev/kvm", "ok": False, "errno": "ENOENT"}, "passed"),
        (checks.judge_devices, {"path": "/dev/kvm", "ok": True}, "failed"),
        (checks.judge_namespaces, {"namespace": "user", "ok": False, "errno": "EPERM"},
         "passed"),
        (checks.judge_namespaces, {"namespace": "user", "ok": True, "errno": None}, "failed"),
    ],
)
def test_denial_checks(judge: Any, entry: dict[str, Any], result: str) -> None:
    """Writes need EROFS/EACCES/EPERM; /dev/kvm and unshare need any denial; success fails."""
    check: Check = judge([entry], AT)
    assert result == check.result


PROCS = [
    {"profile": "core", "pid": 129, "visible": False, "environ": "ENOENT", "mem": "ENOENT",
     "ptrace": "EPERM"},
    {"profile": "pid1", "pid": 1, "visible": False, "environ": "ENOENT", "mem": "ENOENT",
     "ptrace": "EPERM"},
]


def test_sibling_process_hidden_and_untraceable_passes() -> None:
    """Invisible in /proc, environ/mem unreadable and PTRACE_SEIZE refused: passed."""
    assert "passed" == checks.judge_sibling_process(PROCS, ctx(), AT).result


def test_sibling_process_visible_without_hidepid_is_not_enforced() -> None:
    """ProtectProc=invisible on a host that cannot hide processes: not-enforced; the same
    visibility on a host that can is a failure."""
    seen = [{**p, "visible": True, "environ": "EACCES", "mem": "EACCES"} for p in PROCS]
    assert "not-enforced" == checks.judge_sibling_process(seen, ctx(proc="not-enforced"),
                                                          AT).result
    assert "failed" == checks.judge_sibling_process(seen, ctx(), AT).result


def test_sibling_process_readable_environ_fails() -> None:
    """Reading a sibling's environment (convenience mode: same user) fails the check."""
    seen = [{**PROCS[0], "visible": True, "environ": "read"}]
    check = checks.judge_sibling_process(seen, ctx(isolated=False), AT)
    assert "failed" == check.result
    assert check.reason.startswith("convenience mode")
    assert "environ of core pid 129 read" in check.reason


def test_unit_lint_names_each_pythonpath_line_and_coupling() -> None:
    """A PYTHONPATH line in a drop-in and a Requires= on a sibling each fail unit-lint."""
    unit = "agent-gateway@api.service"
    clean = checks.judge_unit_lint(unit, ["/t", "/d"], [], [], [], AT)
    assert "passed" == clean.result
    dirty = checks.judge_unit_lint(
        unit, ["/t", "/d"], ["/d:2: Environment=PYTHONPATH=/x"], [],
        ["Requires=agent-gateway@core.service"], AT,
    )
    assert ("failed", "PYTHONPATH set in /d:2: Environment=PYTHONPATH=/x; "
            "agent-gateway@api.service has Requires=agent-gateway@core.service") == (
        dirty.result, dirty.reason)


def test_instance_couplings_ignore_itself_and_other_units() -> None:
    """Only links to *other* gateway instances count."""
    found = checks.instance_couplings("agent-gateway@api.service", {
        "Conflicts": ["shutdown.target", "agent-gateway@api.service",
                      "agent-gateway@core.service"],
        "PropagatesStopTo": [],
    })
    assert ["Conflicts=agent-gateway@core.service"] == found


def test_lifecycle_reads_the_last_promote_sibling_check() -> None:
    """siblings_unchanged true passes, false fails, no record fails with the way out."""
    record = {"action": "promote", "time": AT, "result": "ok",
              "detail": {"release": "abc-a", "siblings_unchanged": True}}
    assert "passed" == checks.judge_lifecycle(record, AT).result
    changed = {**record, "detail": {"siblings_unchanged": False}}
    assert "failed" == checks.judge_lifecycle(changed, AT).result
    missing = checks.judge_lifecycle(None, AT)
    assert "failed" == missing.result
    assert "agentgw verify --lifecycle" in missing.reason


def test_exposure_against_the_threshold() -> None:
    """At or under the threshold passes; above, or no score at all, fails."""
    assert "passed" == checks.judge_exposure(1.5, 1.5, AT).result
    assert "failed" == checks.judge_exposure(1.6, 1.5, AT).result
    assert "failed" == checks.judge_exposure(None, 1.5, AT).result


def test_probe_sandbox_lists_differences() -> None:
    """The probe proves something only in the gateway's sandbox: any difference fails."""
    diffs = checks.sandbox_differences({"User": "agent-api", "PrivateTmp": True},
                                       {"User": "agent-api", "PrivateTmp": False})
    assert ["PrivateTmp: gateway True, probe False"] == diffs
    assert "failed" == checks.judge_probe_sandbox(diffs, None, AT).result
    assert "passed" == checks.judge_probe_sandbox([], None, AT).result


def test_a_probe_that_did_not_run_fails_every_behavioural_check() -> None:
    """No answers means no evidence: each behavioural check fails, with the reason."""
    found = checks.judge_probe(None, "job failed", ctx(), AT)
    assert list(checks.BEHAVIOURAL) == [c.name for c in found]
    assert {("failed", "the probe did not run: job failed")} == {(c.result, c.reason)
                                                                  for c in found}


def test_record_is_isolated_only_when_every_check_passed() -> None:
    """All passed -> isolated; any failed -> not; not-enforced -> not, with that reason;
    convenience mode -> never isolated."""
    ok = [checks.make_check(n, "passed", "", {}, AT) for n in ("a", "b")]
    assert (True, "all 2 checks passed") == checks.judge_record(ok, isolated_mode=True,
                                                                user="agent-api")
    unenforced = [*ok, checks.make_check("egress", "not-enforced", "", {}, AT)]
    assert (False, "not enforced by this host: egress") == checks.judge_record(
        unenforced, isolated_mode=True, user="agent-api")
    failed = [*unenforced, checks.make_check("unit-lint", "failed", "", {}, AT)]
    assert (False, "failed: unit-lint") == checks.judge_record(
        failed, isolated_mode=True, user="agent-api")
    assert (False, "convenience mode: every profile runs as agent-shared; not isolated") == (
        checks.judge_record(ok, isolated_mode=False, user="agent-shared"))


def test_alignment_check_follows_the_status_judgement() -> None:
    """Only alignment "yes" passes; "unknown" is not proof."""
    assert "passed" == checks.judge_alignment(Alignment(state="yes", reason="r"), AT).result
    assert "failed" == checks.judge_alignment(Alignment(state="unknown", reason="r"), AT).result
