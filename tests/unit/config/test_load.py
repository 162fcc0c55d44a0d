"""Good configs load into frozen models with the documented defaults, and print as JSON."""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import json
import os
import tempfile
from pathlib import Path, PurePosixPath

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from agentgw.config import Config, load_config
from agentgw.errors import AgentgwError, Exit
from agentgw.model import HostConfig, Listen, Profile
from agentgw.observe.host import host_cpus, parse_cpu_list
from tests.unit.runner import agentgw

from .support import BASE, write

REPO = Path(__file__).resolve().parents[3]
# Characters systemd or a terminal could read as a line break or a control code.
CONTROL = st.characters(categories=["Cc", "Zl", "Zp"])
PRINTABLE = st.text(st.characters(exclude_categories=["Cc", "Zl", "Zp", "Cs"]), max_size=40)


def test_repo_examples_load() -> None:
    """The repo's agentgw.yaml and gateways/ (core cli, api cli, mcp script, web: datasette in
    cli mode) are valid."""
    config = load_config(REPO)
    modes = {name: (p.mode, p.exec) for name, p in config.profiles.items()}
    assert modes == {
        "api": ("cli", None),
        "core": ("cli", None),
        "mcp": ("script", PurePosixPath("agent_cli/mcp_server.py")),
        "web": ("cli", None),
    }
    assert config.host_file == REPO / "agentgw.yaml"
    assert config.profile_files["api"] == REPO / "gateways" / "api.yaml"
    assert config.host.registry.tcp is None  # TCP needs a token file: the example has none


def test_minimal_profile_gets_defaults(tmp_path: Path) -> None:
    """``mode`` and ``listen`` are all a profile needs; everything else has a safe default."""
    etc = write(tmp_path, {"gateways/api.yaml": BASE})
    profile = load_config(etc).profiles["api"]
    expected = Profile(
        name="api",
        mode="cli",
        listen=Listen(host=ipaddress.IPv4Address("127.77.0.2"), port=8080),
    )
    assert expected == profile
    assert (profile.egress, profile.env, profile.memory_deny_write_execute) == ((), {}, True)
    assert (profile.health.path, profile.health.timeout_s, profile.stop_timeout_s) == (
        "/health",
        10.0,
        30.0,
    )
    assert profile.resources.memory_max_bytes == 1024**3


def test_absent_files_mean_defaults(tmp_path: Path) -> None:
    """Without agentgw.yaml the host defaults apply; without gateways/ there are no profiles."""
    etc = tmp_path / "etc"
    etc.mkdir()
    config = load_config(etc)
    assert (config.host, config.host_file, dict(config.profiles)) == (HostConfig(), None, {})
    assert config.host.isolated
    assert config.host.user("api") == "agent-api"


def test_empty_host_file_means_defaults(tmp_path: Path) -> None:
    """An agentgw.yaml holding only comments is the default host config, not an error."""
    etc = write(tmp_path, {"agentgw.yaml": "# all defaults\n"})
    assert load_config(etc).host == HostConfig()


def test_convenience_mode_is_not_isolated(tmp_path: Path) -> None:
    """Convenience mode runs every profile as agent-shared and never calls it isolated."""
    etc = write(tmp_path, {"agentgw.yaml": "isolation: convenience\n"})
    host = load_config(etc).host
    assert (host.isolated, host.user("api"), host.user("core")) == (
        False,
        "agent-shared",
        "agent-shared",
    )


def test_config_is_frozen_and_sorted(tmp_path: Path) -> None:
    """Profiles come sorted by name, and neither the config nor its models can be changed."""
    files = {
        f"gateways/{name}.yaml": f"mode: cli\nlisten: 127.77.0.{n}:80\n"
        for n, name in enumerate(["zeta", "alpha", "mid"], start=2)
    }
    config = load_config(write(tmp_path, files))
    assert list(config.profiles) == ["alpha", "mid", "zeta"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.host = HostConfig()  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.profiles["new"] = config.profiles["mid"]  # type: ignore[index]
    with pytest.raises(ValueError, match="frozen"):
        config.profiles["mid"].mode = "script"


def test_only_reads_the_named_profile(tmp_path: Path) -> None:
    """``only=``: that profile is loaded and validated, the others are only named, so a broken
    file elsewhere (and an address clash with it) does not stop a one-profile command."""
    etc = write(tmp_path, {
        "gateways/api.yaml": BASE,
        "gateways/core.yaml": "mode: cli\nlisten: 127.77.0.2:8080\n",  # same address as api
        "gateways/bad.yaml": "mode: [not yaml",
    })
    config = load_config(etc, only="api")
    assert list(config.profiles) == ["api"]
    assert config.names == ("api", "bad", "core")
    with pytest.raises(AgentgwError):
        load_config(etc)
    with pytest.raises(AgentgwError):
        load_config(etc, only="bad")


@pytest.mark.parametrize("value", ["-1", "301", "'2'"])
def test_health_settle_bounds(tmp_path: Path, value: str) -> None:
    """settle_s is a number of seconds from 0 to 300; 0 is the default."""
    etc = write(tmp_path, {"gateways/api.yaml": BASE + f"health:\n  settle_s: {value}\n"})
    with pytest.raises(AgentgwError) as info:
        load_config(etc)
    assert info.value.code == Exit.USAGE and "settle_s" in info.value.message
    ok = write(tmp_path / "ok", {"gateways/api.yaml": BASE + "health:\n  settle_s: 2.5\n"})
    assert load_config(ok).profiles["api"].health.settle_s == 2.5
    assert load_config(write(tmp_path / "d", {"gateways/api.yaml": BASE})).profiles[
        "api"].health.settle_s == 0.0


def test_resources_cpus(tmp_path: Path) -> None:
    """resources.cpus: CPU numbers for CPUAffinity=; an empty list, a negative number or text
    is refused (exit 2, the field named)."""
    ok = write(tmp_path / "ok", {"gateways/api.yaml": BASE + "resources:\n  cpus: [1, 0]\n"})
    assert load_config(ok).profiles["api"].resources.cpus == (1, 0)
    for i, bad in enumerate(("[]", "[-1]", "['1']", "1")):
        etc = write(tmp_path / str(i), {"gateways/api.yaml": BASE + f"resources:\n  cpus: {bad}\n"})
        with pytest.raises(AgentgwError) as info:
            load_config(etc)
        assert info.value.code == Exit.USAGE and "cpus" in info.value.message, bad


def test_logs(tmp_path: Path) -> None:
    """logs: the journal's size cap, rate limit and journald quota; nonsense is a usage error."""
    ok = write(tmp_path / "ok", {"gateways/api.yaml": BASE + (
        "logs:\n  max_use: 64M\n  rate_limit_burst: 500\n  cpu_quota: 10%\n")})
    logs = load_config(ok).profiles["api"].logs
    assert (logs.max_use, logs.rate_limit_burst, logs.cpu_quota) == ("64M", 500, "10%")
    bad_values = ("max_use: 512K", "max_use: infinity", "max_use: lots", "rate_limit_burst: -1",
                  "rate_limit_burst: '5'", "cpu_quota: 0%", "cpu_quota: 20", "size: 1M")
    for i, bad in enumerate(bad_values):
        etc = write(tmp_path / str(i), {"gateways/api.yaml": BASE + f"logs:\n  {bad}\n"})
        with pytest.raises(AgentgwError) as info:
            load_config(etc)
        key = bad.split(":")[0]
        assert info.value.code == Exit.USAGE and key in info.value.message, bad


def test_inline_trusted_keys(tmp_path: Path) -> None:
    """A trusted key may be a path, a PEM public key, or base64 of the 32 raw key bytes."""
    public = Ed25519PrivateKey.generate().public_key()
    pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    keys = ["/etc/agentgw/keys/ci.pub", pem, base64.b64encode(raw).decode()]
    host_yaml = yaml.safe_dump({"require_signature": True, "trusted_keys": keys})
    host = load_config(write(tmp_path, {"agentgw.yaml": host_yaml})).host
    assert host.trusted_keys == tuple(keys)


def test_config_check_json(tmp_path: Path) -> None:
    """``config check --json`` prints every setting, defaults included, with relative files."""
    etc = write(tmp_path, {"gateways/api.yaml": BASE + "egress: [10.0.0.0/8]\n"})
    code, out, err = agentgw("--root", str(tmp_path), "config", "check", "--json")
    assert (code, err) == (0, "")
    document = json.loads(out)
    assert document["etc"] == str(etc)
    assert document["host"] == {"file": None, **HostConfig().model_dump(mode="json")}
    assert document["host"]["registry"] == {"socket": True, "tcp": None, "token_file": None}
    assert document["profiles"] == {
        "api": {
            "file": "gateways/api.yaml",
            "name": "api",
            "mode": "cli",
            "listen": "127.77.0.2:8080",
            "exec": None,
            "egress": ["10.0.0.0/8"],
            "denied_tools": [],
            "resources": {
                "memory_max": "1G",
                "cpu_quota": "100%",
                "tasks_max": 512,
                "file_max": None,
                "data_max": None,
                "cpus": None,
            },
            "logs": {"max_use": "256M", "rate_limit_burst": 10000, "cpu_quota": "25%"},
            "health": {"path": "/health", "timeout_s": 10.0, "settle_s": 0.0},
            "env": {},
            "credentials": {},
            "stop_timeout_s": 30.0,
            "memory_deny_write_execute": True,
            "readiness": "health",
            "start_timeout_s": 90.0,
        }
    }


def test_json_round_trips(tmp_path: Path) -> None:
    """The JSON form of each repo example validates back into the same model."""
    document = load_config(REPO).to_json()
    for name, data in document["profiles"].items():
        data.pop("file")
        assert Profile.model_validate(data) == load_config(REPO).profiles[name]
    host = document["host"]
    host.pop("file")
    assert HostConfig.model_validate(host) == load_config(REPO).host


def test_config_check_human(tmp_path: Path) -> None:
    """Without --json, check names the config dir, the isolation mode and one line per profile."""
    etc = write(tmp_path, {"gateways/api.yaml": BASE})
    code, out, _ = agentgw("config", "check", "--etc", str(etc))
    assert (code, out.splitlines()) == (
        0,
        [
            f"ok: {etc}",
            "host: production isolation (defaults: no agentgw.yaml)",
            "profile api: cli on 127.77.0.2:8080 (gateways/api.yaml)",
        ],
    )


def load_env_value(value: str) -> Config:
    """Write a profile whose env holds ``value`` (as YAML escapes it) and load it."""
    with tempfile.TemporaryDirectory() as tmp:
        body = yaml.safe_dump({"mode": "cli", "listen": "127.77.0.2:80", "env": {"V": value}})
        return load_config(write(Path(tmp), {"gateways/api.yaml": body}))


@given(prefix=PRINTABLE, bad=CONTROL, suffix=PRINTABLE)
def test_env_control_chars_refused(prefix: str, bad: str, suffix: str) -> None:
    """Any env value holding a control or line-break character is refused with exit 2."""
    with pytest.raises(AgentgwError) as error:
        load_env_value(prefix + bad + suffix)
    assert error.value.code == Exit.USAGE
    assert error.value.message.startswith("gateways/api.yaml:")
    assert "env.V: value contains the control character" in error.value.message


@given(value=PRINTABLE)
def test_env_printable_round_trips(value: str) -> None:
    """Any value without control characters is accepted and loads back unchanged."""
    assert load_env_value(value).profiles["api"].env == {"V": value}


def test_plan_refuses_cpus_this_host_lacks(
    tmp_path: Path
) -> None:
    """A CPU CPUAffinity= could not give would fail every start of the unit: plan and apply
    say so first (exit 2, one line and a hint, nothing written)."""
    write(tmp_path, {"gateways/api.yaml": BASE + "resources:\n  cpus: [4095]\n"})
    code, out, err = agentgw("--root", str(tmp_path), "plan")
    assert code == 2
    assert err.startswith("error: gateways/api.yaml: resources.cpus: CPU 4095 is not on this")
    assert "hint: this host has CPUs 0" in err
    code, _, err = agentgw("--root", str(tmp_path), "apply")
    assert code == 2 and not (tmp_path / "opt").exists()


def test_host_cpus_are_the_cpuset_or_online_cpus_not_our_affinity(tmp_path: Path) -> None:
    """An operator's session kept off some CPUs may still pin a profile to them: the CPUs that
    count are the cgroup's effective cpuset, else the online ones, in the kernel's list form."""
    cpuset, online = tmp_path / "cpuset.cpus.effective", tmp_path / "online"
    online.write_text("0-3,6\n")
    assert host_cpus((cpuset, online)) == {0, 1, 2, 3, 6}
    cpuset.write_text("1,3-4\n")
    assert host_cpus((cpuset, online)) == {1, 3, 4}
    cpuset.write_text("\n")  # no cpuset controller here: the next source
    assert host_cpus((cpuset, online)) == {0, 1, 2, 3, 6}
    assert parse_cpu_list("") == frozenset()
    pinned = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(pinned)})
        assert host_cpus() >= pinned
    finally:
        os.sched_setaffinity(0, pinned)


@pytest.mark.parametrize(
    "key",
    ["PYTHONSTARTUP", "PYTHONPYCACHEPREFIX", "PYTHONUSERBASE", "PYTHONPLATLIBDIR",
     "PYTHONWARNINGS", "PYTHONBREAKPOINT", "GCONV_PATH", "PATH", "TMPDIR", "LD_PRELOAD"],
)
def test_env_names_that_load_code_from_a_path_are_refused(tmp_path: Path, key: str) -> None:
    """Names that put writable paths or imports back into the runtime: exit 2 with the reason
    (and, for PYTHON*, the ones allowed)."""
    etc = write(tmp_path, {"gateways/api.yaml": BASE + f"env:\n  {key}: /tmp/x\n"})
    with pytest.raises(AgentgwError) as info:
        load_config(etc)
    assert info.value.code == Exit.USAGE and f"{key} is reserved" in info.value.message


def test_harmless_python_settings_are_allowed(tmp_path: Path) -> None:
    """PYTHONUNBUFFERED, PYTHONHASHSEED, PYTHONDONTWRITEBYTECODE and kin are settings, not
    paths."""
    env = "env:\n  PYTHONHASHSEED: '0'\n  PYTHONDONTWRITEBYTECODE: '1'\n  PYTHONUNBUFFERED: '0'\n"
    etc = write(tmp_path, {"gateways/api.yaml": BASE + env})
    assert load_config(etc).profiles["api"].env["PYTHONHASHSEED"] == "0"
