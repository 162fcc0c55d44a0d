"""Credential files as the host has them: readable by root alone, or refused.

A profile's ``credentials`` are passed with LoadCredential=, so only systemd (as root) needs
to read the source file; a mode that lets a group or everyone read it hands the secret to
every local user, gateways included.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from agentgw.errors import usage
from agentgw.model.profile import Profile


def check_credentials(profiles: Mapping[str, Profile], files: Mapping[str, Path]) -> None:
    """Raise a usage error (exit 2) for the first credential file that is not root's alone;
    a missing one is left to systemd (the unit then fails, naming it)."""
    for name, profile in profiles.items():
        for cred, path in sorted(profile.credentials.items()):
            try:
                info = os.stat(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise usage(f"credential {cred} of {name}: cannot stat {path}: {exc.strerror}",
                            hint="make it a file root can read") from exc
            mode = stat.S_IMODE(info.st_mode)
            where = files.get(name, Path(f"gateways/{name}.yaml"))
            if info.st_uid != 0 or mode & 0o077:
                raise usage(
                    f"{where}: credentials: {cred}: {path} is readable by more than root "
                    f"(owner uid {info.st_uid}, mode {mode:04o})",
                    hint=f"chown root:root {path} && chmod 0600 {path} (systemd reads it as "
                    "root and hands the gateway its own copy)",
                )
