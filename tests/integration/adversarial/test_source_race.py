"""From the attacker's side: a user who owns a release source swaps one of its subdirectories
for a symlink to /etc and back, as fast as it can, while root adds it. Without
--allow-untrusted-source the tree is refused (exit 2, nothing written); with it, every add
either refuses ("changed while it was being added") or installs the tree's own files, and never
a file from /etc."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.support import KEY, OPT, PATH_ONLY, agentgw, setup_host, sh

pytestmark = pytest.mark.integration

USER = "agentgwsrc"
SWAPPER = r"""
import os, sys, time
root, aside = sys.argv[1], sys.argv[3]
real, link, spare = f"{root}/pkg", f"{aside}/pkg.link", f"{aside}/pkg.real"
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    os.rename(real, spare)
    os.rename(link, real)      # pkg -> /etc
    os.rename(real, link)
    os.rename(spare, real)     # pkg is the real directory again
"""


def test_a_source_swapped_under_the_add_never_copies_outside_files(tmp_path: Path) -> None:
    """Refused without the flag; with it, 20 adds under a racing swapper: each exit is 0 or 1,
    and no installed release holds shadow, passwd or any name that is only in /etc."""
    setup_host(tmp_path / "build")
    if sh("id", USER, env=PATH_ONLY).returncode != 0:
        assert sh("useradd", "--system", "--no-create-home", USER, env=PATH_ONLY).returncode == 0
    base = Path(f"/var/tmp/{USER}")
    sh("rm", "-rf", str(base), env=PATH_ONLY)
    src, aside = base / "src", base / "aside"
    (src / "pkg").mkdir(parents=True)
    aside.mkdir()
    for name in ("shadow", "passwd", "hostname"):
        (src / "pkg" / name).write_text(f"the tree's own {name}\n")
    (aside / "pkg.link").symlink_to("/etc")  # outside the tree: swapped in and out of it
    sh("chown", "-R", f"{USER}:{USER}", str(base), env=PATH_ONLY)

    refused = agentgw("release", "add", str(src), "--sha", "5ace000", "--label", "race",
                      "--sign-key", str(KEY), check=False)
    assert refused.returncode == 2 and "can be changed by a user other than root" in \
        refused.stderr
    assert not list((OPT / "releases").glob("5ace000-*"))

    swapper = subprocess.Popen(
        ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups",
         "/usr/bin/python3", "-I", "-c", SWAPPER, str(src), "60", str(aside)],
    )
    codes = []
    try:
        for i in range(20):
            proc = agentgw("release", "add", str(src), "--sha", f"5ace{i:03x}", "--label",
                           "race", "--sign-key", str(KEY), "--allow-untrusted-source",
                           check=False)
            codes.append(proc.returncode)
            assert proc.returncode in (0, 1, 2), proc.stderr
            time.sleep(0.05)
    finally:
        swapper.kill()
        swapper.wait()
    for release in (OPT / "releases").glob("5ace*-race"):
        for path in release.rglob("*"):
            if path.is_file() and path.parent.name == "pkg":
                assert path.read_text().startswith("the tree's own"), path
        names = {p.name for p in release.rglob("*")}
        assert names <= {"pkg", "shadow", "passwd", "hostname", "manifest.json",
                         "manifest.sig"}, names
    assert 0 in codes, f"no add got through the race at all: {codes}"
    print(f"exit codes under the race: {codes}")
