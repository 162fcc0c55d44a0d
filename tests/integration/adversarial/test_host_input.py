"""A profile file that would put writable paths back into the runtime, and a host edited by
hand: each refused with the reason and the repair, nothing on the host changed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import (
    ETC,
    OPT,
    Releases,
    agentgw,
    all_promoted,
    current,
    main_pid,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    with all_promoted(tmp_path_factory.mktemp("build")) as releases:
        yield releases


@pytest.mark.parametrize("key", ["PYTHONSTARTUP", "PYTHONPYCACHEPREFIX", "PYTHONUSERBASE",
                                 "PYTHONWARNINGS", "GCONV_PATH", "PATH"])
def test_env_that_loads_code_from_a_path_is_refused(host: Releases, key: str) -> None:
    """config check and apply exit 2 naming the key; api's env file is untouched."""
    api = ETC / "gateways" / "api.yaml"
    original = api.read_text()
    env_file = OPT / "gateways" / "api" / "env"
    before = env_file.read_bytes()
    api.write_text(original.replace("env:\n", f"env:\n  {key}: /opt/agent/gateways/api/home\n"))
    try:
        for args in (("config", "check"), ("apply",)):
            proc = agentgw(*args, check=False)
            assert proc.returncode == 2, proc.stdout + proc.stderr
            assert f"{key} is reserved" in proc.stderr
        assert env_file.read_bytes() == before
    finally:
        api.write_text(original)


def test_current_replaced_by_a_directory_is_named_and_kept(host: Releases) -> None:
    """A hand-made directory where current was: promote exits 1 saying what it is and how to
    repair, the directory and its content stay, the unit keeps running."""
    link = OPT / "gateways" / "api" / "current"
    target = link.readlink()
    pid, _ = main_pid("api")
    link.unlink()
    link.mkdir()
    (link / "notes").write_text("mine")
    try:
        proc = agentgw("promote", "api", host.b, check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"{link} is a directory, not agentgw's symlink" in proc.stderr
        assert f"mv {link} {link}.by-hand" in proc.stderr
        assert "IsADirectoryError" not in proc.stderr
        assert (link / "notes").read_text() == "mine"
        assert main_pid("api")[0] == pid
    finally:
        shutil.rmtree(link)
        link.symlink_to(target)
    assert current("api") == Path(target).name


def test_a_previous_release_removed_by_hand_is_named(host: Releases) -> None:
    """previous points at a release that is gone: rollback exits 1 naming it and --to."""
    link = OPT / "gateways" / "api" / "previous"
    saved = link.readlink() if link.is_symlink() else None
    link.unlink(missing_ok=True)
    link.symlink_to("../../releases/0000000-gone")
    try:
        proc = agentgw("rollback", "api", check=False)
        assert proc.returncode == 1
        assert "previous -> 0000000-gone, which is no longer in" in proc.stderr
        assert "agentgw rollback api --to SHA" in proc.stderr
    finally:
        link.unlink()
        if saved is not None:
            link.symlink_to(saved)
