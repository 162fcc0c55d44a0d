"""``agentgw logs``: the journalctl it runs (the journal itself is read in the lab tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

AGENTGW = "/opt/agentgw/venv/bin/agentgw"
REPO = Path(__file__).resolve().parents[3]


def etc_with_api(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    (etc / "gateways").mkdir(parents=True)
    shutil.copy(REPO / "gateways" / "api.yaml", etc / "gateways" / "api.yaml")
    return etc


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """agentgw with a journalctl on PATH that prints the arguments it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "journalctl"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run([AGENTGW, *args], capture_output=True, text=True, env=env)


def test_logs_reads_the_profiles_namespace_and_passes_arguments_on(tmp_path: Path) -> None:
    etc = etc_with_api(tmp_path)
    proc = run(tmp_path, "logs", "--etc", str(etc), "api", "-n", "5", "-o", "cat", "--no-pager")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "--namespace=+agentgw-api", "-u", "agent-gateway@api.service",
        "-n", "5", "-o", "cat", "--no-pager"]


def test_logs_json_is_journalctls_json_output(tmp_path: Path) -> None:
    etc = etc_with_api(tmp_path)
    for args in (("--json", "api", "-n", "1"), ("api", "-n", "1", "--json")):
        proc = run(tmp_path, "logs", "--etc", str(etc), *args)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == [
            "--namespace=+agentgw-api", "-u", "agent-gateway@api.service", "-o", "json",
            "-n", "1"]


def test_logs_of_an_unknown_profile_is_a_usage_error(tmp_path: Path) -> None:
    etc = etc_with_api(tmp_path)
    proc = run(tmp_path, "logs", "--etc", str(etc), "nope", "-f")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "error: no profile named 'nope'",
        f"hint: configured profiles: api (files in {etc}/gateways)",
    ]
