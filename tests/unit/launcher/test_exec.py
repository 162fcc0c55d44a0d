"""A real start: the launcher prints its banner, records launch.json, then execs the target.

The target is a probe in the release that prints its pid, argv, cwd, sys.path and environment,
so the test sees the process the launcher became.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.unit.launcher.conftest import LAUNCHER, SHA, Host

# The environment as /proc/<pid>/environ shows it (what the alignment proof reads): Python's
# os.environ may already carry its own LC_CTYPE locale coercion.
PROBE = """\
import json, os, sys
raw = open("/proc/self/environ", "rb").read().split(b"\\0")
env = dict(e.decode().split("=", 1) for e in raw if e)
print(json.dumps({"pid": os.getpid(), "argv": sys.argv, "cwd": os.getcwd(),
                  "path": sys.path, "env": env, "who": "release"}))
"""


def start(env: dict[str, str]) -> tuple[int, list[str]]:
    """Run the launcher for real, stderr merged into stdout so the order is visible."""
    result = subprocess.run(
        [str(LAUNCHER)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode, result.stdout.splitlines()


def banner_fields(line: str) -> dict[str, str]:
    head, _, command = line.partition(" exec=")
    fields = dict(word.split("=", 1) for word in head.split()[1:])
    fields["exec"] = command
    return fields


def test_script_mode_execs_the_script_in_place_after_the_banner(host: Host) -> None:
    """One banner line comes first; then the script runs as the same pid (exec, not a child),
    in AGENT_HOME, with exactly the environment the launcher got (one PYTHONPATH = AGENT_ROOT,
    nothing added); launch.json holds the banner's fields."""
    (host.release / "probe.py").write_text(PROBE)
    env = host.env("mcp", mode="script", AGENT_LAUNCH_DRYRUN=None, AGENT_PROFILE_EXEC="probe.py")
    code, lines = start(env)
    assert code == 0, lines
    assert len(lines) == 2
    banner, probe = banner_fields(lines[0]), json.loads(lines[1])
    assert lines[0].startswith("agentgw-launch profile=mcp ")
    script = f"{host.current('mcp')}/probe.py"
    assert banner == {
        "profile": "mcp",
        "pid": str(probe["pid"]),
        "cwd": str(host.home("mcp")),
        "PYTHONPATH": str(host.current("mcp")),
        "runtime": str(host.release),
        "sha": SHA,
        "mode": "script",
        "exec": f"/usr/bin/python3 -s {script}",
    }
    assert probe["argv"] == [script]
    assert probe["cwd"] == str(host.home("mcp"))
    assert probe["env"] == env
    record = json.loads((host.logs("mcp") / "launch.json").read_text())
    assert record == {**banner, "pid": probe["pid"], "exec": ["/usr/bin/python3", "-s", script]}
    assert [p.name for p in host.logs("mcp").iterdir()] == ["launch.json"]


def test_cli_mode_imports_from_the_release_never_from_the_home(host: Host) -> None:
    """With -m, Python would put the cwd (the writable home) first on sys.path; the launcher's
    -P keeps it off, so a module planted in the home does not shadow the release's."""
    (host.release / "probe.py").write_text(PROBE)
    (host.home() / "probe.py").write_text(PROBE.replace('"release"', '"home"'))
    env = host.env(AGENT_LAUNCH_DRYRUN=None, AGENT_CLI_MODULE="probe", AGENT_CLI_ARGS="x")
    code, lines = start(env)
    assert code == 0, lines
    probe = json.loads(lines[1])
    assert probe["who"] == "release"
    assert probe["argv"][1:] == ["x"]
    assert str(host.home()) not in probe["path"]
    assert "" not in probe["path"]
    assert probe["path"][0] == str(host.current())


def test_the_launcher_never_imports_from_the_release_it_checks(host: Host) -> None:
    """The launcher runs isolated (-I): a release's shlex.py is not imported by the launcher
    itself (it imports shlex to split AGENT_CLI_ARGS), only the gateway sees PYTHONPATH."""
    (host.release / "shlex.py").write_text("raise SystemExit('release code ran in the launcher')\n")
    result = subprocess.run(
        [str(LAUNCHER)],
        env=host.env(AGENT_CLI_ARGS="gateway run"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    expected = "dryrun: would exec /usr/bin/python3 -s -P -m agent_cli.main gateway run\n"
    assert result.stdout == expected


def test_a_failed_exec_is_one_line_and_78(host: Host, tmp_path: Path) -> None:
    """An interpreter that exists but cannot be executed fails after the banner, in one line."""
    broken = tmp_path / "python"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)
    code, lines = start(host.env(AGENT_LAUNCH_DRYRUN=None, AGENT_PYTHON=str(broken)))
    assert code == 78
    assert lines[0].startswith("agentgw-launch profile=api ")
    assert lines[1:] == [
        f"agentgw-launch: error: AGENT_PYTHON: cannot exec {broken}: No such file or directory; "
        "fix: install it"
    ]
