"""From the attacker's side: a developer who may `sudo agentgw release add --git` owns a
repository whose config and attributes name a smudge filter, a textconv driver and hooks that
write a marker (with `id`). `git archive` would run the filter as root; agentgw reads only the
raw objects, so nothing of the repository's runs, and the release holds the committed bytes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.support import KEY, OPT, setup_host

pytestmark = pytest.mark.integration

MARK = Path("/tmp/agentgw-git-pwned")
DEV = "agentgwdev"


def sh(*argv: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    if user is not None:
        argv = ("setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv)
    return subprocess.run(argv, capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": f"/home/{DEV}"})


def test_a_repositorys_filters_and_hooks_never_run_as_root(tmp_path: Path) -> None:
    """The developer's repository: release add --git under sudo (SUDO_UID set) adds the raw
    committed file, and the marker its filter, textconv or hook would write never appears."""
    setup_host(tmp_path / "build")  # the signing key and a host that requires signatures
    if sh("id", DEV).returncode != 0:
        assert sh("useradd", "--create-home", DEV).returncode == 0
    repo = Path(f"/home/{DEV}/runtime")
    sh("rm", "-rf", str(repo))
    evil = f"sh -c 'id > {MARK}; cat'"
    steps = [
        ["git", "init", "-q", str(repo)],
        ["git", "-C", str(repo), "config", "user.email", "d@example.org"],
        ["git", "-C", str(repo), "config", "user.name", "dev"],
    ]
    for step in steps:
        assert sh(*step, user=DEV).returncode == 0, step
    (repo / ".gitattributes").write_text("* filter=evil diff=evil export-subst\n")
    (repo / "app.py").write_text("print('$Format:%H$')\n")
    sh("chown", "-R", f"{DEV}:{DEV}", str(repo))
    for step in (["git", "-C", str(repo), "add", "."],
                 ["git", "-C", str(repo), "commit", "-qm", "runtime"],
                 ["git", "-C", str(repo), "config", "filter.evil.smudge", evil],
                 ["git", "-C", str(repo), "config", "filter.evil.clean", evil],
                 ["git", "-C", str(repo), "config", "diff.evil.textconv", evil],
                 ["git", "-C", str(repo), "config", "core.fsmonitor", evil]):
        assert sh(*step, user=DEV).returncode == 0, step
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\nid > {MARK}\n")
    hook.chmod(0o755)
    sha = sh("git", "-C", str(repo), "rev-parse", "--short=12", "HEAD", user=DEV).stdout.strip()
    MARK.unlink(missing_ok=True)
    uid = sh("id", "-u", DEV).stdout.strip()
    proc = subprocess.run(
        ["/opt/agentgw/venv/bin/agentgw", "release", "add", "--git", str(repo), "--sha", sha,
         "--label", "fromgit", "--sign-key", str(KEY)],
        capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "SUDO_UID": uid, "SUDO_USER": DEV, "HOME": "/root"},
    )
    assert not MARK.exists(), f"repository code ran as: {MARK.read_text()}"
    assert proc.returncode == 0, proc.stderr
    (release,) = (OPT / "releases").glob(f"{sha}-fromgit")
    assert (release / "app.py").read_text() == "print('$Format:%H$')\n"
