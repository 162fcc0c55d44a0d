#!/usr/bin/python
# Copyright: agentgw maintainers
# MIT License
"""agentgw.fleet.profile: ensure a profile file's content, then agentgw apply."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: profile
short_description: Ensure an agentgw profile file's content and apply it
version_added: "0.1.0"
description:
  - Writes C(ETC/gateways/NAME.yaml) atomically when its content differs, then runs
    C(agentgw apply --json) (users, dirs, env files, drop-ins, units).
  - In check mode nothing is written; C(agentgw plan --json) is run when the file is
    unchanged and its actions are returned. With C(--diff) the file diff is shown.
  - C(changed) when the file's content changed or apply acted.
options:
  name:
    description: The profile name (file C(gateways/NAME.yaml)).
    type: str
    required: true
  content:
    description: The profile YAML.
    type: str
    required: true
  apply:
    description: Run C(agentgw apply) after writing (set false to write several profiles,
      then apply once).
    type: bool
    default: true
  agentgw_bin:
    description: Path of the agentgw executable on the managed host.
    type: path
    default: /opt/agentgw/venv/bin/agentgw
  etc:
    description: agentgw's config directory.
    type: path
    default: /etc/agentgw
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author:
  - agentgw maintainers
"""

EXAMPLES = r"""
- name: The api profile
  agentgw.fleet.profile:
    name: api
    content: "{{ lookup('ansible.builtin.file', 'gateways/api.yaml') }}"
"""

RETURN = r"""
actions:
  description: The actions agentgw applied (or, in check mode, would apply).
  returned: always
  type: list
  elements: dict
file_changed:
  description: Whether the profile file's content changed (or would).
  returned: always
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.agentgw.fleet.plugins.module_utils.agentgw import (
    DEFAULT_BIN,
    parse_json,
    run_agentgw,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            content=dict(type="str", required=True),
            apply=dict(type="bool", default=True),
            agentgw_bin=dict(type="path", default=DEFAULT_BIN),
            etc=dict(type="path", default="/etc/agentgw"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    content = p["content"] if p["content"].endswith("\n") else p["content"] + "\n"
    path = os.path.join(p["etc"], "gateways", p["name"] + ".yaml")
    try:
        with open(path, encoding="utf-8") as f:
            before = f.read()
    except FileNotFoundError:
        before = ""
    file_changed = before != content
    diff = dict(before=before, after=content, before_header=path, after_header=path)
    actions = []
    if module.check_mode:
        if not file_changed and p["apply"]:
            _rc, out, _err = run_agentgw(module, ["plan", "--json"])
            actions = parse_json(module, out, ["plan"]).get("actions", [])
        module.exit_json(changed=file_changed or bool(actions), file_changed=file_changed,
                         actions=actions, diff=diff)
    if file_changed:
        tmp = path + ".ansible-tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(content)
        os.chmod(tmp, 0o644)
        module.atomic_move(tmp, path)
    if p["apply"]:
        _rc, out, _err = run_agentgw(module, ["apply", "--json"])
        actions = parse_json(module, out, ["apply"]).get("actions", [])
    module.exit_json(changed=file_changed or bool(actions), file_changed=file_changed,
                     actions=actions, diff=diff)


if __name__ == "__main__":
    main()
