"""What a gateway knows about itself: its profile's settings (env) and the release it runs from."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

EX_CONFIG = 78  # as the launcher: systemd does not restart a misconfigured gateway
GOOD = "good"
DEFAULT_DRAIN_S = 10.0


class ConfigError(Exception):
    """A setting the gateway cannot run with; ``main`` prints it once and exits 78."""

    def __init__(self, var: str, problem: str) -> None:
        super().__init__(f"{var}: {problem}")


@dataclass(frozen=True)
class Settings:
    """The profile's environment, as the launcher validated and passed it."""

    profile: str
    home: Path
    host: str
    port: int
    health_path: str
    drain_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        profile = env.get("AGENT_PROFILE", "")
        if not profile:
            raise ConfigError("AGENT_PROFILE", "not set")
        home = env.get("AGENT_HOME", "")
        if not home.startswith("/") or not os.path.isdir(home):
            raise ConfigError("AGENT_HOME", f"{home!r} is not an absolute path to a directory")
        listen = env.get("AGENT_LISTEN", "")
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError("AGENT_LISTEN", f"{listen!r} is not host:port")
        health_path = env.get("AGENT_HEALTH_PATH") or "/health"
        if not health_path.startswith("/"):
            raise ConfigError("AGENT_HEALTH_PATH", f"{health_path!r} is not an HTTP path")
        try:
            drain_s = float(env.get("AGENT_DRAIN_S") or DEFAULT_DRAIN_S)
        except ValueError:
            raise ConfigError("AGENT_DRAIN_S", "is not a number of seconds") from None
        return cls(profile, Path(os.path.realpath(home)), host, int(port), health_path, drain_s)


@dataclass(frozen=True)
class Release:
    """The release tree this code was imported from, and how the build marked it."""

    root: Path
    sha: str
    label: str
    variant: str  # good, or a broken build for tests: crash, unhealthy, wrongsha

    @property
    def reported_sha(self) -> str:
        """The sha /health reports: the real one, except in the variant built to lie about it."""
        return "0" * len(self.sha) if self.variant == "wrongsha" else self.sha


def this_release() -> Release:
    """Identify the running release from this file's real location.

    Read once at start: the ``current`` symlink may be flipped to another release later, and
    the gateway must keep reporting the code it actually loaded. manifest.json is written by
    ``agentgw release add``; a bare build tree has only the VERSION marker of build-releases.
    """
    package = Path(os.path.realpath(__file__)).parent
    root = package.parent
    sha, label = "unknown", root.name
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        sha, label = str(manifest["sha"]), str(manifest["label"])
    except (OSError, ValueError, KeyError, TypeError):
        try:
            sha = (root / "VERSION").read_text().strip() or sha
        except OSError:
            pass
    try:
        variant = (package / "VARIANT").read_text().strip()
    except OSError:
        variant = GOOD
    return Release(root, sha, label, variant)
