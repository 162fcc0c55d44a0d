#!/usr/bin/python
# Copyright: agentgw maintainers
# MIT License
"""agentgw.fleet.release: ensure a release is present (added, verified, signed)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: release
short_description: Ensure an agentgw release is present on the managed host
version_added: "0.1.0"
description:
  - Runs C(agentgw release add SRC --sha SHA --label LABEL) on the managed host, which verifies
    the tree, checks or makes its signature and adds it as C(<sha>-<label>).
  - C(changed) only when the release was added; agentgw prints C(unchanged ...) when the same
    content is already present, and nothing is run when C(agentgw release list --json) already
    lists C(<sha>-<label>).
  - Without I(src) it only reports whether the release is present (I(present)) and changes
    nothing (a cheap first step, so that a play skips copying a release a host already has).
options:
  src:
    description: A directory or tarball on the managed host (copy it there with
      M(ansible.builtin.copy) or M(ansible.builtin.unarchive) first). Omit to only ask
      whether the release is present.
    type: path
  sha:
    description: The git commit the release is built from (7-40 hex).
    type: str
    required: true
  label:
    description: Name suffix of the release directory.
    type: str
    default: release
  sign_key:
    description: An Ed25519 private key on the managed host to sign the manifest with
      (C(--sign-key)). Omit when the host verifies an off-host I(signature) instead.
    type: path
  signature:
    description: A signature file made off-host (C(--signature)); the host needs only the
      public key.
    type: path
  agentgw_bin:
    description: Path of the agentgw executable on the managed host.
    type: path
    default: /opt/agentgw/venv/bin/agentgw
  etc:
    description: Unused by C(release add); accepted for symmetry with the other modules.
    type: path
attributes:
  check_mode:
    support: full
author:
  - agentgw maintainers
"""

EXAMPLES = r"""
- name: Copy the release tree
  ansible.builtin.copy:
    src: build/good/
    dest: /var/tmp/release-good/
    mode: "0755"

- name: Add it, signed with the host's key
  agentgw.fleet.release:
    src: /var/tmp/release-good
    sha: "{{ release_sha }}"
    label: good
    sign_key: /etc/agentgw/release-signing.key
"""

RETURN = r"""
present:
  description: Whether C(<sha>-<label>) is on the host at the end (in check mode, would be).
  returned: always
  type: bool
release:
  description: The release directory name, C(<sha>-<label>).
  returned: always
  type: str
stdout:
  description: What C(agentgw release add) printed.
  returned: when agentgw ran
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.agentgw.fleet.plugins.module_utils.agentgw import (
    COMMON_ARGS,
    parse_json,
    run_agentgw,
)


def main():
    spec = dict(
        src=dict(type="path"),
        sha=dict(type="str", required=True),
        label=dict(type="str", default="release"),
        sign_key=dict(type="path"),
        signature=dict(type="path", no_log=False),
    )
    spec.update(COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=spec, supports_check_mode=True,
        mutually_exclusive=[("sign_key", "signature")],
    )
    p = module.params
    name = "%s-%s" % (p["sha"].lower(), p["label"])
    _rc, out, _err = run_agentgw(module, ["release", "list", "--json"], etc=False)
    present = [r.get("name") for r in parse_json(module, out, ["release", "list"])["releases"]]
    if name in present:
        module.exit_json(changed=False, release=name, present=True)
    if not p["src"]:
        module.exit_json(changed=False, release=name, present=False)
    if module.check_mode:
        module.exit_json(changed=True, release=name, present=True)
    args = ["release", "add", p["src"], "--sha", p["sha"], "--label", p["label"]]
    if p["sign_key"]:
        args += ["--sign-key", p["sign_key"]]
    if p["signature"]:
        args += ["--signature", p["signature"]]
    _rc, out, _err = run_agentgw(module, args, etc=False)
    module.exit_json(changed=not out.startswith("unchanged"), release=name, present=True,
                     stdout=out)


if __name__ == "__main__":
    main()
