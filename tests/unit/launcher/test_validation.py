"""Every way the launcher refuses a profile: one exact line naming the variable and the fix.

Each case breaks one thing in a valid fake host (the env, or the host state the env points at)
and runs the real launcher. Placeholders in the expected line: {opt} the fake /opt/agent, {cur}
the api profile's current, {rel} the release it points at, {home} its home.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.launcher.conftest import SHA, Host, launch

Setup = Callable[[Host], dict[str, str]]
PY_FIX = "fix: set PYTHONPATH={cur} (exactly AGENT_ROOT) in the profile's env file"
ROOT_FIX = (
    "fix: set AGENT_ROOT=<root>/gateways/api/current, the profile's current symlink "
    "('agentgw apply' renders it)"
)
PROMOTE = "fix: promote a release: agentgw promote api <sha>"
READD = "fix: re-add it with 'agentgw release add' and promote it"
EXEC_FIX = (
    "fix: set AGENT_PROFILE_EXEC to the script's path inside the release (the profile's exec)"
)
MODE_FIX = "fix: set AGENT_GATEWAY_MODE=cli or AGENT_GATEWAY_MODE=script (the profile's mode)"
PYTHON_FIX = "fix: set AGENT_PYTHON to an installed interpreter (the host's python in agentgw.yaml)"
APPLY_FIX = "fix: run 'agentgw apply', which renders the profile's env file"


def env_with(**changes: str | None) -> Setup:
    return lambda h: h.env("api", "cli", **changes)


def script_env(**changes: str | None) -> Setup:
    return lambda h: h.env("api", "script", **changes)


def replace_current(target: str) -> Setup:
    def setup(h: Host) -> dict[str, str]:
        h.current().unlink()
        h.current().symlink_to(target)
        return h.env()

    return setup


def no_current(h: Host) -> dict[str, str]:
    h.current().unlink()
    return h.env()


def current_is_dir(h: Host) -> dict[str, str]:
    h.current().unlink()
    h.current().mkdir()
    return h.env()


def outside_release(h: Host) -> dict[str, str]:
    elsewhere = h.opt / "elsewhere"
    elsewhere.mkdir()
    h.current().unlink()
    h.current().symlink_to(elsewhere)
    return h.env()


def manifest(text: str | None) -> Setup:
    def setup(h: Host) -> dict[str, str]:
        path = h.release / "manifest.json"
        if text is None:
            path.unlink()
        else:
            path.write_text(text)
        return h.env()

    return setup


def script_links_out(h: Host) -> dict[str, str]:
    secret = h.opt / "secret.py"
    secret.write_text("")
    (h.release / "agent_mcp" / "out.py").symlink_to(secret)
    return h.env(mode="script", AGENT_PROFILE_EXEC="agent_mcp/out.py")


def python_not_executable(h: Host) -> dict[str, str]:
    fake = h.opt / "python"
    fake.write_text("")
    return h.env(AGENT_PYTHON=str(fake))


def home_missing(h: Host) -> dict[str, str]:
    h.home().rmdir()
    return h.env()


CASES: dict[str, tuple[Setup, str]] = {
    "pythonpath-missing": (env_with(PYTHONPATH=None), "PYTHONPATH: not set; " + PY_FIX),
    "pythonpath-empty": (env_with(PYTHONPATH=""), "PYTHONPATH: empty; " + PY_FIX),
    "pythonpath-two-entries": (
        lambda h: h.env(PYTHONPATH=f"{h.current()}:{h.opt}/lib"),
        "PYTHONPATH: 2 entries in '{cur}:{opt}/lib', exactly one allowed; " + PY_FIX,
    ),
    "pythonpath-trailing-colon": (
        lambda h: h.env(PYTHONPATH=f"{h.current()}:"),
        "PYTHONPATH: 2 entries in '{cur}:', exactly one allowed; " + PY_FIX,
    ),
    "pythonpath-is-the-release": (
        lambda h: h.env(PYTHONPATH=str(h.release)),
        "PYTHONPATH: '{rel}' is not AGENT_ROOT ({cur}); " + PY_FIX,
    ),
    "pythonpath-is-a-sibling": (
        lambda h: h.env(PYTHONPATH=str(h.current("core"))),
        "PYTHONPATH: '{opt}/gateways/core/current' is not AGENT_ROOT ({cur}); " + PY_FIX,
    ),
    "root-missing": (env_with(AGENT_ROOT=None), "AGENT_ROOT: not set; " + ROOT_FIX),
    "root-is-the-release": (
        lambda h: h.env(AGENT_ROOT=str(h.release)),
        "AGENT_ROOT: '{rel}' is not <root>/gateways/api/current; " + ROOT_FIX,
    ),
    "root-is-a-sibling": (
        lambda h: h.env(AGENT_ROOT=str(h.current("core"))),
        "AGENT_ROOT: '{opt}/gateways/core/current' is not <root>/gateways/api/current; " + ROOT_FIX,
    ),
    "root-not-normalised": (
        lambda h: h.env(AGENT_ROOT=f"{h.opt}/gateways/core/../api/current"),
        "AGENT_ROOT: '{opt}/gateways/core/../api/current' is not <root>/gateways/api/current; "
        + ROOT_FIX,
    ),
    "root-relative": (
        env_with(AGENT_ROOT="opt/agent/gateways/api/current"),
        "AGENT_ROOT: 'opt/agent/gateways/api/current' is not <root>/gateways/api/current; "
        + ROOT_FIX,
    ),
    "current-missing": (no_current, "AGENT_ROOT: {cur} does not exist; " + PROMOTE),
    "current-not-a-symlink": (current_is_dir, "AGENT_ROOT: {cur} is not a symlink; " + PROMOTE),
    "current-dangling": (
        replace_current("../../releases/0000000-gone"),
        "AGENT_ROOT: {cur} -> ../../releases/0000000-gone is dangling; "
        + PROMOTE
        + " (or rollback)",
    ),
    "current-outside-releases": (
        outside_release,
        "AGENT_ROOT: {cur} resolves to {opt}/elsewhere, not a release in {opt}/releases; "
        + PROMOTE,
    ),
    "release-without-manifest": (
        manifest(None),
        "AGENT_ROOT: release {rel} has no manifest.json; " + READD,
    ),
    "manifest-not-json": (
        manifest("{sha: 1"),
        "AGENT_ROOT: {rel}/manifest.json is unreadable: Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1); " + READD,
    ),
    "manifest-without-sha": (
        manifest('{"label": "good"}'),
        "AGENT_ROOT: {rel}/manifest.json lacks a sha and a label; " + READD,
    ),
    "manifest-names-another-release": (
        manifest(json.dumps({"sha": "1234567", "label": "good"})),
        "AGENT_ROOT: {rel} is not named after its manifest (1234567-good); " + READD,
    ),
    "profile-missing": (env_with(AGENT_PROFILE=None), "AGENT_PROFILE: not set; " + APPLY_FIX),
    "profile-invalid": (
        env_with(AGENT_PROFILE="../api"),
        "AGENT_PROFILE: '../api' is not a profile name ([a-z][a-z0-9]{{0,24}}); " + APPLY_FIX,
    ),
    "home-missing": (
        env_with(AGENT_HOME=None),
        "AGENT_HOME: not set; fix: set AGENT_HOME={opt}/gateways/api/home "
        "('agentgw apply' renders it)",
    ),
    "home-relative": (
        env_with(AGENT_HOME="home"),
        "AGENT_HOME: 'home' is not an absolute path; fix: set AGENT_HOME={opt}/gateways/api/home "
        "('agentgw apply' renders it)",
    ),
    "home-not-a-directory": (
        home_missing,
        "AGENT_HOME: {home} is not a directory; fix: run 'agentgw apply', which creates it",
    ),
    "logs-relative": (
        env_with(AGENT_LOGS="logs"),
        "AGENT_LOGS: 'logs' is not an absolute path; fix: set AGENT_LOGS={opt}/gateways/api/logs "
        "('agentgw apply' renders it)",
    ),
    "mode-missing": (env_with(AGENT_GATEWAY_MODE=None), "AGENT_GATEWAY_MODE: not set; " + MODE_FIX),
    "mode-unknown": (
        env_with(AGENT_GATEWAY_MODE="daemon"),
        "AGENT_GATEWAY_MODE: 'daemon' is not cli or script; " + MODE_FIX,
    ),
    "script-missing": (
        script_env(AGENT_PROFILE_EXEC=None),
        "AGENT_PROFILE_EXEC: not set, and script mode needs it; " + EXEC_FIX,
    ),
    "script-absolute": (
        script_env(AGENT_PROFILE_EXEC="/usr/bin/serve.py"),
        "AGENT_PROFILE_EXEC: '/usr/bin/serve.py' is absolute, it must be relative to the "
        "release; " + EXEC_FIX,
    ),
    "script-escapes": (
        script_env(AGENT_PROFILE_EXEC="agent_mcp/../../x.py"),
        "AGENT_PROFILE_EXEC: 'agent_mcp/../../x.py' escapes the release; " + EXEC_FIX,
    ),
    "script-not-in-release": (
        script_env(AGENT_PROFILE_EXEC="agent_mcp/absent.py"),
        "AGENT_PROFILE_EXEC: 'agent_mcp/absent.py' does not exist in {rel}; " + EXEC_FIX,
    ),
    "script-links-out-of-release": (
        script_links_out,
        "AGENT_PROFILE_EXEC: 'agent_mcp/out.py' resolves to {opt}/secret.py, outside {rel}; "
        + EXEC_FIX,
    ),
    "cli-module-invalid": (
        env_with(AGENT_CLI_MODULE="agent_cli/main"),
        "AGENT_CLI_MODULE: 'agent_cli/main' is not a module name; fix: unset it or name a module",
    ),
    "cli-args-unbalanced": (
        env_with(AGENT_CLI_ARGS="gateway run 'x"),
        'AGENT_CLI_ARGS: cannot split "gateway run \'x": No closing quotation; '
        "fix: balance the quotes",
    ),
    "python-relative": (
        env_with(AGENT_PYTHON="python3"),
        "AGENT_PYTHON: 'python3' is not an absolute path; " + PYTHON_FIX,
    ),
    "python-not-executable": (
        python_not_executable,
        "AGENT_PYTHON: {opt}/python is not an executable file; " + PYTHON_FIX,
    ),
    "dryrun-flag-unknown": (
        env_with(AGENT_LAUNCH_DRYRUN="yes"),
        "AGENT_LAUNCH_DRYRUN: 'yes' is not 1 or 0; fix: set it to 1 for a dry run, or unset",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_misconfiguration_exits_78_with_one_line(host: Host, case: str) -> None:
    """The launcher prints exactly one error line naming the variable and the fix, exits 78
    (the unit's RestartPreventExitStatus), prints nothing on stdout and writes no record."""
    setup, expected = CASES[case]
    result = launch(setup(host))
    line = expected.format(opt=host.opt, cur=host.current(), rel=host.release, home=host.home())
    assert (result.returncode, result.stdout) == (78, "")
    assert result.stderr == f"agentgw-launch: error: {line}\n"
    assert not (host.logs() / "launch.json").exists()


def test_real_start_refuses_an_unwritable_logs_dir(host: Host) -> None:
    """Without a logs dir to record launch.json in, a real start refuses before exec (78)."""
    host.logs().rmdir()
    result = launch(host.env(AGENT_LAUNCH_DRYRUN=None))
    expected = (
        f"agentgw-launch: error: AGENT_LOGS: cannot write {host.logs()}/launch.json: No such "
        "file or directory; fix: run 'agentgw apply' (logs is a 0700 directory owned by the "
        "profile's user)\n"
    )
    assert (result.returncode, result.stdout, result.stderr) == (78, "", expected)


@pytest.mark.parametrize(
    ("args", "env_changes", "expected"),
    [
        (
            ["--offline"],
            {"AGENT_LAUNCH_DRYRUN": None},
            "--offline: only with a dry run; fix: add --env-file FILE or AGENT_LAUNCH_DRYRUN=1",
        ),
        (["--bogus"], {}, "--bogus: unknown option or missing value; fix: see --help"),
        (["--env-file"], {}, "--env-file: unknown option or missing value; fix: see --help"),
        (
            ["--env-file", "/nonexistent/env"],
            {},
            "--env-file: cannot read /nonexistent/env: No such file or directory; "
            "fix: give a readable file",
        ),
    ],
    ids=["offline-without-dryrun", "unknown-option", "env-file-without-value", "env-file-missing"],
)
def test_bad_options_exit_2(
    host: Host, args: list[str], env_changes: dict[str, str | None], expected: str
) -> None:
    """Bad invocations are usage errors (exit 2), with the same one-line shape."""
    result = launch(host.env("api", "cli", **env_changes), *args)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"agentgw-launch: error: {expected}\n"


def test_env_file_value_not_utf8_is_refused(host: Host, tmp_path: Path) -> None:
    """A value systemd would refuse to load (invalid UTF-8) is refused, naming its variable."""
    env_file = tmp_path / "env"
    env_file.write_bytes(b"AGENT_PROFILE=api\nGREETING=caf\xe9\n")
    result = launch({}, "--env-file", os.fspath(env_file))
    expected = f"GREETING: value in {env_file} is not UTF-8 (systemd refuses the file); "
    assert result.returncode == 78
    assert result.stderr == f"agentgw-launch: error: {expected}fix: re-encode it\n"


def test_sha_of_a_valid_host_is_the_manifests(host: Host) -> None:
    """Control case: the unchanged fake host passes and the banner names the manifest's sha."""
    result = launch(host.env())
    assert result.returncode == 0, result.stderr
    assert f" sha={SHA} " in result.stderr
