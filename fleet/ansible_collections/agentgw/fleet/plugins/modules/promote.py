#!/usr/bin/python
# Copyright: agentgw maintainers
# MIT License
"""agentgw.fleet.promote: promote (or roll back) a profile with agentgw's proofs."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: promote
short_description: Promote a profile to a release, or roll it back, with agentgw's proofs
version_added: "0.1.0"
description:
  - Runs C(agentgw promote PROFILE SHA --unless-current --json) (or C(agentgw rollback PROFILE
    --json)) on the
    managed host. agentgw verifies the release, flips C(current), restarts the unit and proves
    readiness, alignment and health; any failure flips back (result C(rolled_back)).
  - C(changed) only when the profile's release moved. When the profile already runs I(sha),
    active and aligned, agentgw does nothing (result C(unchanged)); when it runs I(sha) but is
    down or not aligned, it is restarted and proved again.
  - A C(rolled_back) or C(failed) result fails the task with agentgw's reason, and still
    returns the record (phases and timings).
options:
  profile:
    description: The profile to promote.
    type: str
    required: true
  sha:
    description: The release's git sha, or a unique prefix of at least 7 hex digits.
      Required unless I(state=rolled_back).
    type: str
  state:
    description: C(promoted) runs I(sha); C(rolled_back) returns to the previous release.
    type: str
    choices: [promoted, rolled_back]
    default: promoted
  allow_downgrade:
    description: Pass C(--allow-downgrade) (a release older than current).
    type: bool
    default: false
  agentgw_bin:
    description: Path of the agentgw executable on the managed host.
    type: path
    default: /opt/agentgw/venv/bin/agentgw
  etc:
    description: agentgw's config directory (C(--etc)); agentgw's default when omitted.
    type: path
attributes:
  check_mode:
    support: full
    details: Reports whether the release would move; runs nothing that changes the host.
author:
  - agentgw maintainers
"""

EXAMPLES = r"""
- name: Promote the api profile
  agentgw.fleet.promote:
    profile: api
    sha: 3f2a9c1d0e

- name: Back to the previous release
  agentgw.fleet.promote:
    profile: api
    state: rolled_back
"""

RETURN = r"""
record:
  description: agentgw's promote record (op, release, previous, result, reason, phases, ...).
  returned: when agentgw ran
  type: dict
result:
  description: C(ok), C(rolled_back) or C(failed), from the record; C(unchanged) when the
    profile already ran I(sha).
  returned: always
  type: str
phases:
  description: Each phase's name and milliseconds.
  returned: when agentgw ran
  type: list
  elements: dict
total_ms:
  description: Sum of the phases' milliseconds.
  returned: when agentgw ran
  type: float
release:
  description: The release directory the profile runs now (C(<sha>-<label>)).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.agentgw.fleet.plugins.module_utils.agentgw import (
    COMMON_ARGS,
    fail,
    parse_json,
    run_agentgw,
)


def current_release(module, profile):
    rc, out, err = run_agentgw(module, ["status", profile, "--json"], check_rc=False)
    if not out.strip():
        fail(module, ["status", profile], rc, out, err)
    rows = parse_json(module, out, ["status"]).get("profiles", [])
    release = rows[0].get("release") if rows else None
    return release or {}


def main():
    spec = dict(
        profile=dict(type="str", required=True),
        sha=dict(type="str"),
        state=dict(type="str", default="promoted", choices=["promoted", "rolled_back"]),
        allow_downgrade=dict(type="bool", default=False),
    )
    spec.update(COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=spec, supports_check_mode=True,
        required_if=[("state", "promoted", ("sha",))],
    )
    p = module.params
    if p["state"] == "promoted":
        sha = p["sha"].lower()
        # agentgw does nothing when the profile already runs sha, active and aligned.
        args = ["promote", p["profile"], sha, "--unless-current", "--json"]
        if p["allow_downgrade"]:
            args.append("--allow-downgrade")
    else:
        args = ["rollback", p["profile"], "--json"]
    if module.check_mode:
        before = current_release(module, p["profile"])
        if p["state"] == "promoted" and (before.get("sha") or "").startswith(sha):
            module.exit_json(changed=False, result="unchanged", release=before.get("name", ""))
        module.exit_json(changed=True, result="would_move", release=before.get("name", ""))
    rc, out, err = run_agentgw(module, args, check_rc=False)
    if not out.strip():
        fail(module, args, rc, out, err)
    record = parse_json(module, out, args)
    if rc == 0 and record.get("result") == "unchanged":
        module.exit_json(changed=False, result="unchanged", release=record.get("release", ""),
                         total_ms=0)
    phases = record.get("phases", [])
    total = round(sum(ph.get("ms", 0) for ph in phases), 1)
    moved = record.get("result") == "ok"
    after = record.get("release", "") if moved else (record.get("previous") or "")
    if rc != 0 or not moved:
        fail(
            module, args, rc, out, err, record=record, result=record.get("result", "failed"),
            reason=record.get("reason", ""), phases=phases, total_ms=total, release=after,
            msg="%s %s -> %s: %s: %s" % (record.get("op"), p["profile"], record.get("release"),
                                        record.get("result"), record.get("reason", "")),
        )
    module.exit_json(
        changed=True, record=record, result="ok", phases=phases, total_ms=total, release=after
    )


if __name__ == "__main__":
    main()
