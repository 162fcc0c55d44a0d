"""A fake host layout on tmp_path and a way to run the real launcher in it.

The layout mirrors DESIGN.md under ``tmp_path``: ``opt/agent/releases/<sha>-<label>/`` with a
manifest, ``opt/agent/gateways/<p>/{current,home,logs}``; the launcher runs as a separate
process with exactly the environment a test gives it (no inherited variables).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[3]
LAUNCHER = REPO / "launcher" / "launch"
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
SHA = "3f9c2e1"
LABEL = "good"
PROFILES = ("api", "core", "mcp")
SCRIPT = "agent_mcp/serve.py"


@dataclass(frozen=True)
class Host:
    """Paths of the fake host, and the profile env files agentgw would render for it."""

    opt: Path

    @property
    def release(self) -> Path:
        return self.opt / "releases" / f"{SHA}-{LABEL}"

    def profile_dir(self, profile: str) -> Path:
        return self.opt / "gateways" / profile

    def current(self, profile: str = "api") -> Path:
        return self.profile_dir(profile) / "current"

    def home(self, profile: str = "api") -> Path:
        return self.profile_dir(profile) / "home"

    def logs(self, profile: str = "api") -> Path:
        return self.profile_dir(profile) / "logs"

    def env(self, profile: str = "api", mode: str = "cli", **changes: str | None) -> dict[str, str]:
        """A valid dry-run environment for ``profile``; a change of None removes the variable."""
        current = str(self.current(profile))
        env = {
            "AGENT_PROFILE": profile,
            "AGENT_ROOT": current,
            "PYTHONPATH": current,
            "AGENT_HOME": str(self.home(profile)),
            "AGENT_GATEWAY_MODE": mode,
            "AGENT_LAUNCH_DRYRUN": "1",
        }
        if mode == "script":
            env["AGENT_PROFILE_EXEC"] = SCRIPT
        for key, value in changes.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def normalise(self, text: str) -> str:
        """Output with the temp root as ``<tmp>`` and the varying pid as ``<pid>``."""
        text = text.replace(str(self.opt.parent.parent), "<tmp>")
        return re.sub(r"\bpid=\d+", "pid=<pid>", text)


def make_release(opt: Path, sha: str = SHA, label: str = LABEL) -> Path:
    release = opt / "releases" / f"{sha}-{label}"
    (release / "agent_mcp").mkdir(parents=True)
    (release / "agent_mcp" / "serve.py").write_text("print('serving')\n")
    manifest = f'{{"sha": "{sha}", "label": "{label}", "version": 1, "files": []}}\n'
    (release / "manifest.json").write_text(manifest)
    return release


@pytest.fixture
def host(tmp_path: Path) -> Host:
    """A host with one release that every profile's current points at (relatively, as promote)."""
    opt = tmp_path / "opt" / "agent"
    release = make_release(opt)
    for profile in PROFILES:
        pdir = opt / "gateways" / profile
        for sub in ("home", "logs"):
            (pdir / sub).mkdir(parents=True)
        (pdir / "current").symlink_to(Path("../../releases") / release.name)
    return Host(opt)


def launch(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run launcher/launch with exactly ``env``, as systemd would after reading the env file."""
    return subprocess.run(
        [os.fspath(LAUNCHER), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="session")
def launcher() -> ModuleType:
    """launcher/launch imported as a module, for its pure parts (it has no .py suffix)."""
    loader = importlib.machinery.SourceFileLoader("agentgw_launch", os.fspath(LAUNCHER))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
