"""From the attacker's side: a developer who may `sudo agentgw release add --git` owns a
repository whose config and attributes name a smudge filter, a textconv driver and hooks that
write a marker (with `id`). `git archive` would run the filter as root; agentgw reads only the
raw objects, so nothing of the repository's runs, and the release holds the committed bytes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.support import KEY, OPT, PATH_ONLY, setup_host, sh

pytestmark = pytest.mark.integration

MARK = Path("/tmp/agentgw-git-pwned")
DEV = "agentgwdev"
GIT_ENV = {**PATH_ONLY, "HOME": f"/home/{DEV}"}


def test_a_repositorys_filters_and_hooks_never_run_as_root(tmp_path: Path) -> None:
    """The developer's repository: release add --git under sudo (SUDO_UID set) adds the raw
    committed file, and the marker its filter, textconv or hook would write never appears."""
    setup_host(tmp_path / "build")  # the signing key and a host that requires signatures
    if sh("id", DEV, env=GIT_ENV).returncode != 0:
        assert sh("useradd", "--create-home", DEV, env=GIT_ENV).returncode == 0
    repo = Path(f"/home/{DEV}/runtime")
    sh("rm", "-rf", str(repo), env=GIT_ENV)
    evil = f"sh -c 'id > {MARK}; cat'"
    steps = [
        ["git", "init", "-q", str(repo)],
        ["git", "-C", str(repo), "config", "user.email", "d@example.org"],
        ["git", "-C", str(repo), "config", "user.name", "dev"],
    ]
    for step in steps:
        assert sh(*step, user=DEV, env=GIT_ENV).returncode == 0, step
    (repo / ".gitattributes").write_text("* filter=evil diff=evil export-subst\n")
    (repo / "app.py").write_text("print('$Format:%H$')\n")
    sh("chown", "-R", f"{DEV}:{DEV}", str(repo), env=GIT_ENV)
    for step in (["git", "-C", str(repo), "add", "."],
                 ["git", "-C", str(repo), "commit", "-qm", "runtime"],
                 ["git", "-C", str(repo), "config", "filter.evil.smudge", evil],
                 ["git", "-C", str(repo), "config", "filter.evil.clean", evil],
                 ["git", "-C", str(repo), "config", "diff.evil.textconv", evil],
                 ["git", "-C", str(repo), "config", "core.fsmonitor", evil]):
        assert sh(*step, user=DEV, env=GIT_ENV).returncode == 0, step
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\nid > {MARK}\n")
    hook.chmod(0o755)
    sha = sh("git", "-C", str(repo), "rev-parse", "--short=12", "HEAD", user=DEV,
             env=GIT_ENV).stdout.strip()
    MARK.unlink(missing_ok=True)
    uid = sh("id", "-u", DEV, env=GIT_ENV).stdout.strip()
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
