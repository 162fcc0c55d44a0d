# Copyright: agentgw maintainers
# MIT License
"""Run agentgw on the managed host and map its exit codes and messages to module results."""

from __future__ import annotations

import json

DEFAULT_BIN = "/opt/agentgw/venv/bin/agentgw"

# agentgw's stable exit codes (agentgw --help).
EXIT_NAMES = {0: "ok", 1: "failed", 2: "usage", 3: "verify", 4: "locked"}

COMMON_ARGS = dict(
    agentgw_bin=dict(type="path", default=DEFAULT_BIN),
    etc=dict(type="path"),
)


def agentgw_message(stderr):
    """agentgw's own ``error:`` and ``hint:`` lines (it prints each once on failure)."""
    error, hint = "", ""
    for line in stderr.splitlines():
        if line.startswith("error: "):
            error = line[len("error: "):]
        elif line.startswith("hint: "):
            hint = line[len("hint: "):]
    return error, hint


def run_agentgw(module, args, check_rc=True, etc=True):
    """Run ``agentgw ARGS`` (adding ``--etc`` when given); fail the task on a non-zero exit
    when ``check_rc``, with agentgw's error and hint. Returns (rc, stdout, stderr)."""
    argv = [module.params["agentgw_bin"]] + list(args)
    if etc and module.params.get("etc"):
        argv += ["--etc", module.params["etc"]]
    rc, out, err = module.run_command(argv)
    if rc != 0 and check_rc:
        fail(module, argv, rc, out, err)
    return rc, out, err


def fail(module, argv, rc, out, err, **extra):
    error, hint = agentgw_message(err)
    msg = extra.pop("msg", "") or error or err.strip() or out.strip() or "agentgw exited %d" % rc
    module.fail_json(
        msg=msg, hint=hint, rc=rc, exit=EXIT_NAMES.get(rc, str(rc)), cmd=argv,
        stdout=out, stderr=err, **extra
    )


def parse_json(module, out, argv):
    try:
        return json.loads(out)
    except ValueError as exc:
        module.fail_json(msg="agentgw printed no JSON: %s" % exc, cmd=argv, stdout=out)
        return None
