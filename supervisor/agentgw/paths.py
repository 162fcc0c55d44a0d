"""The host layout of DESIGN.md, every path derived from one root.

``Layout(Path("/"))`` is the real host; tests pass ``tmp_path``. ``--root`` / ``AGENTGW_ROOT``
select the root on the command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT_ENV = "AGENTGW_ROOT"
TEMPLATE_UNIT = "agent-gateway@.service"


def unit_name(profile: str) -> str:
    """The systemd instance of a profile (names are validated, so no escaping is needed)."""
    return f"agent-gateway@{profile}.service"


def profile_of(unit: str) -> str:
    """The profile of an ``agent-gateway@<profile>.service`` instance name."""
    return unit.removeprefix("agent-gateway@").removesuffix(".service")


def user_name(profile: str) -> str:
    return f"agent-{profile}"


def relay_socket_unit(profile: str) -> str:
    """The socket unit systemd makes the profile's sandbox socket with (the relay's)."""
    return f"agentgw-sandbox-relay@{profile}.socket"


def log_namespace(profile: str) -> str:
    """The profile's journal namespace (LogNamespace=); its journald is
    ``systemd-journald@<namespace>.service``."""
    return f"agentgw-{profile}"


def journald_unit(profile: str) -> str:
    return f"systemd-journald@{log_namespace(profile)}.service"


@dataclass(frozen=True)
class Layout:
    """Every host path agentgw reads or writes, under ``root``."""

    root: Path = Path("/")

    @classmethod
    def from_env(cls, root: str | os.PathLike[str] | None = None) -> Layout:
        chosen = root if root is not None else os.environ.get(ROOT_ENV) or "/"
        return cls(Path(chosen).absolute())

    def _p(self, rel: str) -> Path:
        return self.root / rel

    # configuration
    @property
    def etc(self) -> Path:
        return self._p("etc/agentgw")

    @property
    def host_config(self) -> Path:
        return self.etc / "agentgw.yaml"

    @property
    def gateways_config(self) -> Path:
        return self.etc / "gateways"

    # systemd
    @property
    def unit_dir(self) -> Path:
        return self._p("etc/systemd/system")

    @property
    def vendor_unit_dir(self) -> Path:
        """Where a package installs its units (the Debian package's template and services)."""
        return self._p("usr/lib/systemd/system")

    @property
    def template_unit(self) -> Path:
        return self.unit_dir / TEMPLATE_UNIT

    def dropin_dir(self, profile: str) -> Path:
        return self.unit_dir / f"agent-gateway@{profile}.service.d"

    def dropin(self, profile: str) -> Path:
        return self.dropin_dir(profile) / "50-agentgw.conf"

    def journald_conf(self, profile: str) -> Path:
        """The profile's journald settings (journald.conf(5) reads journald@<namespace>.conf)."""
        return self._p(f"etc/systemd/journald@{log_namespace(profile)}.conf")

    def journald_dropin_dir(self, profile: str) -> Path:
        return self.unit_dir / f"{journald_unit(profile)}.d"

    def journald_dropin(self, profile: str) -> Path:
        return self.journald_dropin_dir(profile) / "50-agentgw.conf"

    # day-2 without root: the admin group's rules (data/polkit, data/sudoers)
    @property
    def polkit_rules(self) -> Path:
        return self._p("etc/polkit-1/rules.d/50-agentgw.rules")

    @property
    def sudoers(self) -> Path:
        """sudo reads /etc/sudoers.d files whose names have no '.' (sudoers(5))."""
        return self._p("etc/sudoers.d/agentgw")

    # runtime trees
    @property
    def opt(self) -> Path:
        return self._p("opt/agent")

    @property
    def lib(self) -> Path:
        return self.opt / "_lib"

    @property
    def launcher(self) -> Path:
        return self.lib / "launch"

    @property
    def ready_waiter(self) -> Path:
        """ExecStartPost= of ``readiness: health`` profiles (repo: launcher/ready.py)."""
        return self.lib / "ready"

    @property
    def releases(self) -> Path:
        return self.opt / "releases"

    def release(self, sha: str, label: str) -> Path:
        return self.releases / f"{sha}-{label}"

    def profile_dir(self, profile: str) -> Path:
        return self.opt / "gateways" / profile

    def current(self, profile: str) -> Path:
        return self.profile_dir(profile) / "current"

    def previous(self, profile: str) -> Path:
        return self.profile_dir(profile) / "previous"

    def env_file(self, profile: str) -> Path:
        return self.profile_dir(profile) / "env"

    def home(self, profile: str) -> Path:
        return self.profile_dir(profile) / "home"

    def logs(self, profile: str) -> Path:
        return self.profile_dir(profile) / "logs"

    # state
    @property
    def state(self) -> Path:
        return self._p("var/lib/agentgw")

    @property
    def history(self) -> Path:
        return self.state / "history.jsonl"

    @property
    def proofs(self) -> Path:
        return self.state / "proofs"

    @property
    def locks(self) -> Path:
        return self.state / "locks"

    @property
    def intents(self) -> Path:
        return self.state / "intents"

    @property
    def archive(self) -> Path:
        return self.state / "archive"

    @property
    def sandbox_state(self) -> Path:
        return self.state / "sandbox"

    @property
    def sandbox_selftest(self) -> Path:
        """The last sandbox self-test, kept for verify and the registry."""
        return self.sandbox_state / "selftest.json"

    @property
    def sandbox_execs(self) -> Path:
        """The exec records (one JSON line each) that status and the registry read."""
        return self.sandbox_state / "execs.jsonl"

    @property
    def run(self) -> Path:
        return self._p("run/agentgw")

    @property
    def registry_socket(self) -> Path:
        return self.run / "registry.sock"

    @property
    def cli_socket(self) -> Path:
        """The CLI fork server's (agentgw-cli.socket); cli/entry.py keeps a copy of the host's
        (it imports no agentgw module: a test pins the two equal)."""
        return self.run / "cli.sock"

    def sandbox_socket(self, profile: str) -> Path:
        return self.run / "sandbox" / f"{profile}.sock"

    def relay_dropin_dir(self, profile: str) -> Path:
        """The drop-in dir of the profile's sandbox socket (its group: ``agentgw apply``)."""
        return self.unit_dir / f"{relay_socket_unit(profile)}.d"

    def relay_dropin(self, profile: str) -> Path:
        return self.relay_dropin_dir(profile) / "50-agentgw.conf"
