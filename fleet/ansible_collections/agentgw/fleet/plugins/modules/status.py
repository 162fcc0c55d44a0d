#!/usr/bin/python
# Copyright: agentgw maintainers
# MIT License
"""agentgw.fleet.status: each profile's state, release, alignment and isolation, as facts."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: status
short_description: Gather agentgw's per-profile status as facts
version_added: "0.1.0"
description:
  - Runs C(agentgw status --json) on the managed host and returns its document unchanged
    (extra keys such as C(host) and C(schema) are passed through).
  - Sets the fact C(agentgw_status) and never changes anything.
options:
  profile:
    description: Only this profile (default all).
    type: str
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
  facts:
    support: full
author:
  - agentgw maintainers
"""

EXAMPLES = r"""
- name: Read every profile's status
  agentgw.fleet.status:

- name: Show which release each profile runs
  ansible.builtin.debug:
    msg: "{{ agentgw_status.profiles | map(attribute='release.name') | list }}"
"""

RETURN = r"""
ansible_facts:
  description: C(agentgw_status), the document of C(agentgw status --json).
  returned: always
  type: dict
profiles:
  description: One record per profile (state, main_pid, release, aligned, isolation, ...).
  returned: always
  type: list
  elements: dict
aligned:
  description: True when every profile's C(aligned.state) is C(yes).
  returned: always
  type: bool
rc:
  description: agentgw's exit code (3 when a profile is not aligned).
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.agentgw.fleet.plugins.module_utils.agentgw import (
    COMMON_ARGS,
    fail,
    parse_json,
    run_agentgw,
)


def main():
    spec = dict(profile=dict(type="str"))
    spec.update(COMMON_ARGS)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    args = ["status"]
    if module.params["profile"]:
        args.append(module.params["profile"])
    args.append("--json")
    rc, out, err = run_agentgw(module, args, check_rc=False)
    if not out.strip():
        fail(module, args, rc, out, err)
    doc = parse_json(module, out, args)
    profiles = doc.get("profiles", [])
    aligned = all((p.get("aligned") or {}).get("state") == "yes" for p in profiles)
    module.exit_json(
        changed=False, ansible_facts=dict(agentgw_status=doc), profiles=profiles,
        aligned=aligned, rc=rc,
    )


if __name__ == "__main__":
    main()
