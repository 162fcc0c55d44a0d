"""Every bad config gives exactly one ``error: file:line: field: what`` line, a hint, and exit 2.

Each case runs the real ``agentgw --root ROOT config check`` entry point (``main()``, the console
script's function) against a temp root and checks the whole first line of stderr.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.unit.runner import agentgw

from .support import BASE, Files, write


@dataclass(frozen=True)
class Case:
    id: str
    files: Files
    error: str


def api(body: str | bytes) -> Files:
    return {"gateways/api.yaml": body}


def base(extra: str) -> Files:
    return api(BASE + extra)


def host(body: str) -> Files:
    return {"agentgw.yaml": body, "gateways/api.yaml": BASE}


CASES = [
    # file names and profile names
    Case(
        "name-uppercase",
        {"gateways/Api.yaml": BASE},
        "gateways/Api.yaml: 'Api' is not a valid profile name",
    ),
    Case(
        "name-digit-first",
        {"gateways/1api.yaml": BASE},
        "gateways/1api.yaml: '1api' is not a valid profile name",
    ),
    Case(
        "name-dash",
        {"gateways/my-api.yaml": BASE},
        "gateways/my-api.yaml: 'my-api' is not a valid profile name",
    ),
    Case(
        "name-too-long",
        {f"gateways/a{'b' * 25}.yaml": BASE},
        f"gateways/a{'b' * 25}.yaml: 'a{'b' * 25}' is not a valid profile name",
    ),
    Case("name-empty", {"gateways/.yaml": BASE}, "gateways/.yaml: '' is not a valid profile name"),
    Case(
        "yml-suffix",
        {"gateways/api.yml": BASE},
        "gateways/api.yml: profile files must end in .yaml",
    ),
    Case(
        "yml-beside-yaml",
        {**api(BASE), "gateways/api.yml": BASE},
        "gateways/api.yml: profile files must end in .yaml",
    ),
    Case(
        "stray-file", {"gateways/README": "x"}, "gateways/README: profile files must end in .yaml"
    ),
    Case(
        "editor-backup",
        {"gateways/api.yaml~": BASE},
        "gateways/api.yaml~: profile files must end in .yaml",
    ),
    Case("directory", {"gateways/sub.yaml/x": ""}, "gateways/sub.yaml: not a regular file"),
    Case(
        "name-key",
        base("name: other\n"),
        "gateways/api.yaml:3: name: the profile name comes from the file name (api)",
    ),
    # duplicates across files
    Case(
        "duplicate-listen",
        {**api(BASE), "gateways/core.yaml": "# core\n" + BASE},
        "gateways/core.yaml:3: listen: 127.77.0.2 is already used by profile api "
        "(gateways/api.yaml:2)",
    ),
    Case(
        "duplicate-address-other-port",
        {**api(BASE), "gateways/core.yaml": "mode: cli\nlisten: 127.77.0.2:9090\n"},
        "gateways/core.yaml:2: listen: 127.77.0.2 is already used by profile api "
        "(gateways/api.yaml:2)",
    ),
    Case(
        "listen-is-registry",
        {"agentgw.yaml": "registry:\n  tcp: 127.77.0.2:9177\n", **api(BASE)},
        "gateways/api.yaml:2: listen: 127.77.0.2 is already used by the registry (agentgw.yaml:2)",
    ),
    # YAML syntax and encoding
    Case(
        "yaml-indent",
        api("mode: cli\n  listen: 127.77.0.2:8080\n"),
        "gateways/api.yaml:2: invalid YAML: mapping values are not allowed here",
    ),
    Case(
        "yaml-unclosed-quote",
        api('mode: "cli\nlisten: 127.77.0.2:8080\n'),
        "gateways/api.yaml:3: invalid YAML: found unexpected end of stream",
    ),
    Case(
        "yaml-unclosed-flow",
        base("egress: [10.0.0.0/8\n"),
        "gateways/api.yaml:4: invalid YAML: expected ',' or ']', but got '<stream end>'",
    ),
    Case(
        "yaml-tab",
        api("mode: cli\n\tlisten: x\n"),
        "gateways/api.yaml:2: invalid YAML: found character '\\t' that cannot start any token",
    ),
    Case(
        "yaml-duplicate-key",
        base("mode: script\n"),
        "gateways/api.yaml:3: mode: duplicate key (first at line 1)",
    ),
    Case(
        "yaml-duplicate-nested-key",
        base("env:\n  A: x\n  A: y\n"),
        "gateways/api.yaml:5: env.A: duplicate key (first at line 4)",
    ),
    Case(
        "yaml-raw-control-char",
        base("env:\n  A: x\x07y\n"),
        "gateways/api.yaml:4: invalid YAML: control character '\\x07'",
    ),
    Case("not-utf8", api(b"mode: cli\nlisten: \xff\n"), "gateways/api.yaml:2: not UTF-8 text"),
    Case(
        "two-documents",
        api(BASE + "---\n" + BASE),
        "gateways/api.yaml:3: invalid YAML: but found another document",
    ),
    Case(
        "python-tag",
        base("env: !!python/object/apply:os.system [id]\n"),
        "gateways/api.yaml:3: invalid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
    # wrong shapes and types
    Case("empty-file", api(""), "gateways/api.yaml:1: empty profile"),
    Case("only-comments", api("# nothing yet\n"), "gateways/api.yaml:1: empty profile"),
    Case(
        "top-level-list",
        api("- mode: cli\n"),
        "gateways/api.yaml:1: must be a mapping of settings, got a list",
    ),
    Case(
        "top-level-scalar",
        api("# profile\ncli\n"),
        "gateways/api.yaml:2: must be a mapping of settings, got 'cli'",
    ),
    Case(
        "resources-list",
        base("resources:\n  - 1G\n"),
        "gateways/api.yaml:3: resources: must be a mapping, got a list",
    ),
    Case(
        "egress-string",
        base("egress: 10.0.0.0/8\n"),
        "gateways/api.yaml:3: egress: must be a list, got '10.0.0.0/8'",
    ),
    Case(
        "mode-unknown",
        api("mode: daemon\nlisten: 127.77.0.2:8080\n"),
        "gateways/api.yaml:1: mode: must be 'cli' or 'script', got 'daemon'",
    ),
    Case(
        "mode-missing",
        api("# api\nlisten: 127.77.0.2:8080\n"),
        "gateways/api.yaml:2: mode: required key is missing",
    ),
    Case(
        "tasks-max-string",
        base("resources:\n  tasks_max: '10'\n"),
        "gateways/api.yaml:4: resources.tasks_max: must be a whole number, got '10'",
    ),
    Case(
        "tasks-max-float",
        base("resources:\n  tasks_max: 1.5\n"),
        "gateways/api.yaml:4: resources.tasks_max: must be a whole number, got 1.5",
    ),
    Case(
        "mdwe-string",
        base("memory_deny_write_execute: 'no'\n"),
        "gateways/api.yaml:3: memory_deny_write_execute: must be true or false, got 'no'",
    ),
    Case(
        "timeout-bool",
        base("health:\n  timeout_s: true\n"),
        "gateways/api.yaml:4: health.timeout_s: must be a number, got true",
    ),
    Case(
        "denied-tools-mapping",
        base("denied_tools: {curl: 1}\n"),
        "gateways/api.yaml:3: denied_tools: must be a list, got a mapping",
    ),
    # egress networks
    Case(
        "egress-prefix-33",
        base("egress:\n  - 10.0.0.0/8\n  - 10.0.0.0/33\n"),
        "gateways/api.yaml:5: egress[1]: '10.0.0.0/33' is not an IP network",
    ),
    Case(
        "egress-host-bits",
        base("egress: [10.0.0.1/8]\n"),
        "gateways/api.yaml:3: egress[0]: '10.0.0.1/8' is not an IP network",
    ),
    Case(
        "egress-garbage",
        base("egress:\n  - example.com\n"),
        "gateways/api.yaml:4: egress[0]: 'example.com' is not an IP network",
    ),
    Case(
        "egress-number",
        base("egress:\n  - 10\n"),
        "gateways/api.yaml:4: egress[0]: 10 is not an IP network",
    ),
    Case(
        "egress-loopback",
        base("egress:\n  - 127.0.0.0/8\n"),
        "gateways/api.yaml:4: egress[0]: 127.0.0.0/8 includes loopback",
    ),
    Case(
        "egress-any",
        base("egress:\n  - 0.0.0.0/0\n"),
        "gateways/api.yaml:4: egress[0]: 0.0.0.0/0 includes loopback",
    ),
    Case(
        "egress-ipv6-loopback",
        base("egress:\n  - ::1/128\n"),
        "gateways/api.yaml:4: egress[0]: ::1/128 includes loopback",
    ),
    # listen
    Case(
        "listen-shared-loopback",
        api("mode: cli\nlisten: 127.0.0.1:8080\n"),
        "gateways/api.yaml:2: listen: 127.0.0.1 is the shared loopback address",
    ),
    Case(
        "listen-not-loopback",
        api("mode: cli\nlisten: 10.0.0.1:8080\n"),
        "gateways/api.yaml:2: listen: 10.0.0.1 is not a loopback address",
    ),
    Case(
        "listen-no-port",
        api("mode: cli\nlisten: 127.77.0.2\n"),
        "gateways/api.yaml:2: listen: '127.77.0.2' is not an address:port",
    ),
    Case(
        "listen-port-range",
        api("mode: cli\nlisten: 127.77.0.2:70000\n"),
        "gateways/api.yaml:2: listen.port: must be at most 65535, got 70000",
    ),
    Case(
        "listen-hostname",
        api("mode: cli\nlisten: localhost:80\n"),
        "gateways/api.yaml:2: listen: 'localhost' is not an IPv4 address",
    ),
    Case(
        "listen-mapping-bypass",
        api("mode: cli\nlisten: {host: 127.0.0.1, port: 80}\n"),
        "gateways/api.yaml:2: listen: 127.0.0.1 is the shared loopback address",
    ),
    Case(
        "listen-number",
        api("mode: cli\nlisten: 8080\n"),
        "gateways/api.yaml:2: listen: must be a string like 127.77.0.2:8080",
    ),
    Case(
        "listen-missing", api("mode: cli\n"), "gateways/api.yaml:1: listen: required key is missing"
    ),
    # mode and exec
    Case(
        "script-without-exec",
        api("mode: script\nlisten: 127.77.0.2:8080\n"),
        "gateways/api.yaml:1: mode: script mode needs exec",
    ),
    Case(
        "exec-absolute",
        api("mode: script\nlisten: 127.77.0.2:8080\nexec: /usr/bin/x.py\n"),
        "gateways/api.yaml:3: exec: '/usr/bin/x.py' is an absolute path",
    ),
    Case(
        "exec-dotdot",
        api("mode: script\nlisten: 127.77.0.2:8080\nexec: ../other/x.py\n"),
        "gateways/api.yaml:3: exec: '../other/x.py' contains '..'",
    ),
    Case(
        "exec-inner-dotdot",
        api("mode: script\nlisten: 127.77.0.2:8080\nexec: a/../../x.py\n"),
        "gateways/api.yaml:3: exec: 'a/../../x.py' contains '..'",
    ),
    Case(
        "exec-in-cli-mode",
        base("exec: serve.py\n"),
        "gateways/api.yaml:3: exec: exec is only used in script mode",
    ),
    # env
    Case(
        "env-bare-cr",
        base('env:\n  G: "ok\\rH=bad"\n'),
        "gateways/api.yaml:4: env.G: value contains the control character '\\r'",
    ),
    Case(
        "env-lf",
        base('env:\n  G: "a\\nb"\n'),
        "gateways/api.yaml:4: env.G: value contains the control character '\\n'",
    ),
    Case(
        "env-nul",
        base('env:\n  G: "a\\0b"\n'),
        "gateways/api.yaml:4: env.G: value contains the control character '\\x00'",
    ),
    Case(
        "env-escape",
        base('env:\n  G: "\\e[31m"\n'),
        "gateways/api.yaml:4: env.G: value contains the control character '\\x1b'",
    ),
    Case(
        "env-tab",
        base('env:\n  G: "a\\tb"\n'),
        "gateways/api.yaml:4: env.G: value contains the control character '\\t'",
    ),
    Case(
        "env-line-separator",
        base('env:\n  G: "a\\Lb"\n'),
        "gateways/api.yaml:4: env.G: value contains the control character '\\u2028'",
    ),
    Case(
        "env-key-digit",
        base("env:\n  1X: a\n"),
        "gateways/api.yaml:4: env.1X: '1X' is not a valid variable name",
    ),
    Case(
        "env-key-dash",
        base("env:\n  FOO-BAR: a\n"),
        "gateways/api.yaml:4: env.FOO-BAR: 'FOO-BAR' is not a valid variable name",
    ),
    Case(
        "env-key-space",
        base("env:\n  'A B': a\n"),
        "gateways/api.yaml:4: env['A B']: 'A B' is not a valid variable name",
    ),
    Case(
        "env-pythonpath",
        base("env:\n  PYTHONPATH: /opt/x\n"),
        "gateways/api.yaml:4: env.PYTHONPATH: PYTHONPATH is reserved",
    ),
    Case(
        "env-agent-root",
        base("env:\n  AGENT_ROOT: /opt/x\n"),
        "gateways/api.yaml:4: env.AGENT_ROOT: AGENT_ROOT is reserved",
    ),
    Case(
        "env-ld-preload",
        base("env:\n  LD_PRELOAD: /x.so\n"),
        "gateways/api.yaml:4: env.LD_PRELOAD: LD_PRELOAD is reserved",
    ),
    Case(
        "env-ld-library-path",
        base("env:\n  LD_LIBRARY_PATH: /x\n"),
        "gateways/api.yaml:4: env.LD_LIBRARY_PATH: LD_LIBRARY_PATH is reserved",
    ),
    Case(
        "env-agent-home",
        base("env:\n  AGENT_HOME: /tmp\n"),
        "gateways/api.yaml:4: env.AGENT_HOME: AGENT_HOME is reserved",
    ),
    Case(
        "env-agent-profile-exec",
        base("env:\n  AGENT_PROFILE_EXEC: x.py\n"),
        "gateways/api.yaml:4: env.AGENT_PROFILE_EXEC: AGENT_PROFILE_EXEC is reserved",
    ),
    Case(
        "env-number-value",
        base("env:\n  WORKERS: 4\n"),
        "gateways/api.yaml:4: env.WORKERS: must be a string, got 4",
    ),
    Case(
        "env-list",
        base("env:\n  - A=b\n"),
        "gateways/api.yaml:3: env: must be a mapping, got a list",
    ),
    # denied tools and credentials
    Case(
        "tool-relative-path",
        base("denied_tools:\n  - bin/curl\n"),
        "gateways/api.yaml:4: denied_tools[0]: 'bin/curl' is neither an absolute path nor a tool "
        "name",
    ),
    Case(
        "tool-dotdot",
        base("denied_tools:\n  - /usr/../bin/sh\n"),
        "gateways/api.yaml:4: denied_tools[0]: '/usr/../bin/sh' contains '..'",
    ),
    Case(
        "tool-nul",
        base('denied_tools:\n  - "cu\\0rl"\n'),
        "gateways/api.yaml:4: denied_tools[0]: tool contains the control character '\\x00'",
    ),
    Case(
        "credential-relative",
        base("credentials:\n  token: secrets/token\n"),
        "gateways/api.yaml:4: credentials.token: 'secrets/token' is not an absolute path",
    ),
    Case(
        "credential-name",
        base("credentials:\n  'a b': /etc/x\n"),
        "gateways/api.yaml:4: credentials['a b']: 'a b' is not a valid credential name",
    ),
    # resources, health, timeouts
    Case(
        "memory-garbage",
        base("resources:\n  memory_max: 5X\n"),
        "gateways/api.yaml:4: resources.memory_max: '5X' is not a size",
    ),
    Case(
        "memory-number",
        base("resources:\n  memory_max: 512\n"),
        "gateways/api.yaml:4: resources.memory_max: must be a string, got 512",
    ),
    Case(
        "file-max-garbage",
        base("resources:\n  file_max: lots\n"),
        "gateways/api.yaml:4: resources.file_max: 'lots' is not a size",
    ),
    Case(
        "data-max-infinity",
        base("resources:\n  data_max: infinity\n"),
        "gateways/api.yaml:4: resources.data_max: 'infinity' is not a size",
    ),
    Case(
        "memory-tiny",
        base("resources:\n  memory_max: 1K\n"),
        "gateways/api.yaml:4: resources.memory_max: 1K is below the 16M a gateway needs to start",
    ),
    Case(
        "cpu-zero",
        base("resources:\n  cpu_quota: 0%\n"),
        "gateways/api.yaml:4: resources.cpu_quota: '0%' is not a CPU quota",
    ),
    Case(
        "cpu-huge",
        base("resources:\n  cpu_quota: 20000%\n"),
        "gateways/api.yaml:4: resources.cpu_quota: '20000%' is not a CPU quota",
    ),
    Case(
        "cpu-no-percent",
        base("resources:\n  cpu_quota: '50'\n"),
        "gateways/api.yaml:4: resources.cpu_quota: '50' is not a CPU quota",
    ),
    Case(
        "tasks-zero",
        base("resources:\n  tasks_max: 0\n"),
        "gateways/api.yaml:4: resources.tasks_max: must be at least 1, got 0",
    ),
    Case(
        "tasks-huge",
        base("resources:\n  tasks_max: 100001\n"),
        "gateways/api.yaml:4: resources.tasks_max: must be at most 100000, got 100001",
    ),
    Case(
        "health-timeout-zero",
        base("health:\n  timeout_s: 0\n"),
        "gateways/api.yaml:4: health.timeout_s: must be above 0, got 0",
    ),
    Case(
        "health-timeout-long",
        base("health:\n  timeout_s: 301\n"),
        "gateways/api.yaml:4: health.timeout_s: must be at most 300, got 301",
    ),
    Case(
        "health-path",
        base("health:\n  path: health\n"),
        "gateways/api.yaml:4: health.path: 'health' is not an HTTP path",
    ),
    Case(
        "stop-timeout-negative",
        base("stop_timeout_s: -1\n"),
        "gateways/api.yaml:3: stop_timeout_s: must be above 0, got -1",
    ),
    # unknown keys at every level
    Case("unknown-top", base("egres: []\n"), "gateways/api.yaml:3: egres: unknown key"),
    Case(
        "unknown-resources",
        base("resources:\n  memory_max: 1G\n  swap_max: 1G\n"),
        "gateways/api.yaml:5: resources.swap_max: unknown key",
    ),
    Case(
        "unknown-health",
        base("health:\n  url: /x\n"),
        "gateways/api.yaml:4: health.url: unknown key",
    ),
    Case(
        "unknown-listen-mapping",
        api("mode: cli\nlisten: {host: 127.77.0.2, port: 80, tls: x}\n"),
        "gateways/api.yaml:2: listen.tls: unknown key",
    ),
    Case(
        "unknown-host-top", host("isolaton: production\n"), "agentgw.yaml:1: isolaton: unknown key"
    ),
    Case(
        "unknown-host-registry",
        host("registry:\n  socket: true\n  port: 1\n"),
        "agentgw.yaml:3: registry.port: unknown key",
    ),
    Case(
        "unknown-host-sandbox",
        host("sandbox:\n  memory: 1\n"),
        "agentgw.yaml:2: sandbox.memory: unknown key",
    ),
    # host settings
    Case(
        "host-isolation",
        host("isolation: full\n"),
        "agentgw.yaml:1: isolation: must be 'production' or 'convenience', got 'full'",
    ),
    Case(
        "host-signature-without-keys",
        host("require_signature: true\n"),
        "agentgw.yaml:1: require_signature: true, but no trusted_keys are listed",
    ),
    Case(
        "host-trusted-key-garbage",
        host("trusted_keys:\n  - not-a-key\n"),
        "agentgw.yaml:2: trusted_keys[0]: 'not-a-key' is neither an absolute path nor an Ed25519 "
        "public key",
    ),
    Case(
        "host-trusted-key-short-b64",
        host("trusted_keys: [AAAA]\n"),
        "agentgw.yaml:1: trusted_keys[0]: 'AAAA' is neither an absolute path nor an Ed25519 "
        "public key",
    ),
    Case(
        "host-exposure",
        host("exposure_threshold: 11\n"),
        "agentgw.yaml:1: exposure_threshold: must be at most 10, got 11",
    ),
    Case(
        "host-admin-group",
        host("admin_group: Admins\n"),
        "agentgw.yaml:1: admin_group: 'Admins' is not a valid group name",
    ),
    Case(
        "host-pool-size",
        host("sandbox:\n  pool_size: 9\n"),
        "agentgw.yaml:2: sandbox.pool_size: must be at most 8, got 9",
    ),
    Case(
        "host-memory-mb",
        host("sandbox:\n  memory_mb: 16\n"),
        "agentgw.yaml:2: sandbox.memory_mb: must be at least 64, got 16",
    ),
    Case(
        "host-registry-tcp",
        host("registry:\n  tcp: 127.0.0.1:9177\n"),
        "agentgw.yaml:2: registry.tcp: 127.0.0.1 is the shared loopback address",
    ),
    Case(
        "host-token-relative",
        host("registry:\n  token_file: token\n"),
        "agentgw.yaml:2: registry.token_file: 'token' is not an absolute path",
    ),
    Case(
        "host-python-relative",
        host("python: python3\n"),
        "agentgw.yaml:1: python: 'python3' is not an absolute path",
    ),
    Case(
        "host-list",
        host("- production\n"),
        "agentgw.yaml:1: must be a mapping of settings, got a list",
    ),
    Case(
        "host-yaml",
        host("sandbox:\n  pool_size: [1\n"),
        "agentgw.yaml:3: invalid YAML: expected ',' or ']', but got '<stream end>'",
    ),
    # several problems: the earliest line wins
    Case(
        "earliest-line-wins",
        base("resources:\n  tasks_max: 0\negress: [10.0.0.0/33]\n"),
        "gateways/api.yaml:4: resources.tasks_max: must be at least 1, got 0",
    ),
]


def test_enough_cases() -> None:
    """The table covers at least 35 distinct bad configs, each with its own id."""
    assert len(CASES) >= 35
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_config(case: Case, tmp_path: Path) -> None:
    """One ``error: file:line: field: what`` line, one hint line, exit 2, no traceback."""
    write(tmp_path, case.files)
    code, out, err = agentgw("--root", str(tmp_path), "config", "check")
    lines = err.splitlines()
    assert (code, lines[0]) == (2, f"error: {case.error}")
    assert len(lines) == 2
    assert lines[1].startswith("hint: ") and len(lines[1]) > len("hint: ")
    assert out == ""
    assert "Traceback" not in err


def test_missing_etc(tmp_path: Path) -> None:
    """A config directory that does not exist is bad input naming the directory, not a crash."""
    etc = tmp_path / "nowhere"
    code, _, err = agentgw("config", "check", "--etc", str(etc))
    assert (code, err.splitlines()[0]) == (2, f"error: {etc}: no such config directory")
