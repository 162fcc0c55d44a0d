"""Credential files must be root's alone: config check and apply refuse anything else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentgw.errors import AgentgwError, Exit
from agentgw.model.profile import Profile
from agentgw.observe.secrets import check_credentials


def profile(path: Path) -> dict[str, Profile]:
    return {"api": Profile.model_validate({"name": "api", "mode": "cli",
                                          "listen": "127.77.0.3:8080",
                                          "credentials": {"key": str(path)}})}


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_secret_others_can_read_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    """Exit 2, naming the file, its mode and the chmod/chown that fixes it."""
    secret = tmp_path / "key"
    secret.write_text("s")
    secret.chmod(mode)
    with pytest.raises(AgentgwError) as info:
        check_credentials(profile(secret), {})
    assert info.value.code == Exit.USAGE
    assert f"mode {mode:04o}" in info.value.message
    assert f"chmod 0600 {secret}" in info.value.hint


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_secret_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    """0600 but owned by another user: that user (a gateway's, say) reads it."""
    secret = tmp_path / "key"
    secret.write_text("s")
    secret.chmod(0o600)
    os.chown(secret, 65534, 65534)
    with pytest.raises(AgentgwError, match="owner uid 65534"):
        check_credentials(profile(secret), {})


def test_root_only_and_missing_secrets_pass(tmp_path: Path) -> None:
    """0600 root: fine; absent: left to systemd, which names it when the unit starts."""
    secret = tmp_path / "key"
    secret.write_text("s")
    secret.chmod(0o600)
    check_credentials(profile(secret), {})
    check_credentials(profile(tmp_path / "absent"), {})
