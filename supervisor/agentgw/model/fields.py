"""The validated atoms of the config models: field checks, annotated types, ``Frozen``, ``Listen``.

Every check raises ``invalid(message, hint)`` so the config loader can print the message and hint
unchanged.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

PROFILE_NAME_RE = re.compile(r"[a-z][a-z0-9]{0,24}")


ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


CREDENTIAL_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


TOOL_NAME_RE = re.compile(r"[A-Za-z0-9_.+-]+")


SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([KMGT]?)")


PERCENT_RE = re.compile(r"([0-9]+)%")


LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


SHARED_LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


MIN_MEMORY = 16 * 1024**2


LISTEN_HINT = "an address in 127.0.0.0/8 and a port, e.g. 127.77.0.2:8080"


# The runtime of a profile is declared once, by agentgw, in the profile's env file; letting a
# profile's env override any of these is exactly the stale-runtime failure agentgw prevents.
RESERVED_ENV = frozenset(
    {
        "PYTHONPATH",
        "PYTHONHOME",
        "AGENT_ROOT",
        "AGENT_PROFILE",
        "AGENT_HOME",
        "AGENT_GATEWAY_MODE",
        "AGENT_PROFILE_EXEC",
        "AGENT_LAUNCH_DRYRUN",
        "AGENT_LOGS",
        "AGENT_LISTEN",
        "AGENT_HEALTH_PATH",
        "AGENT_DRAIN_S",
        "AGENT_PYTHON",
    }
)


RESERVED_ENV_PREFIX = "LD_"


# PYTHON* settings a profile may set: none of them names a file or directory the runtime would
# load code or write from. Every other PYTHON* is reserved (PYTHONSTARTUP, PYTHONUSERBASE,
# PYTHONPYCACHEPREFIX, PYTHONPLATLIBDIR, PYTHONWARNINGS ... put writable paths or imports back
# into the runtime).
PYTHON_ALLOWED = frozenset(
    {
        "PYTHONUNBUFFERED",
        "PYTHONHASHSEED",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONIOENCODING",
        "PYTHONFAULTHANDLER",
        "PYTHONUTF8",
        "PYTHONOPTIMIZE",
        "PYTHONTRACEMALLOC",
        "PYTHONASYNCIODEBUG",
        "PYTHONDEVMODE",
        "PYTHONNODEBUGRANGES",
        "PYTHONINTMAXSTRDIGITS",
    }
)


# Other names that make a process load code or data from a path: reserved too.
RESERVED_LOADERS = frozenset(
    {"PATH", "GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES", "RESOLV_HOST_CONF", "MALLOC_CONF",
     "TMPDIR", "GLIBC_TUNABLES", "SSL_CERT_FILE", "SSL_CERT_DIR", "OPENSSL_CONF",
     "OPENSSL_MODULES", "PERL5LIB", "NODE_OPTIONS", "NODE_PATH", "BASH_ENV", "ENV"}
)


ERROR_TYPE = "agentgw"


def invalid(message: str, hint: str = "", *, field: str = "") -> PydanticCustomError:
    """A validation error whose message and hint reach the user verbatim.

    ``field`` names the offending key when the check runs on the whole model (cross-field rules),
    so the error still points at that key's line.
    """
    context = {"message": message, "hint": hint, "field": field}
    return PydanticCustomError(ERROR_TYPE, "{message}", context)


def want_profile_name(name: str) -> bool:
    """Whether ``name`` is a valid profile name (fits ``agent-<name>`` and needs no escaping)."""
    return PROFILE_NAME_RE.fullmatch(name) is not None


def _short(value: str, limit: int = 60) -> str:
    shown = value if len(value) <= limit else value[:limit] + "..."
    return repr(shown)


def _control_char(value: str) -> str | None:
    """The first character systemd or a terminal could treat as a line break or control code."""
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs"):
            return ch
    return None


def _check_text(value: str, what: str) -> None:
    bad = _control_char(value)
    if bad is not None:
        raise invalid(
            f"{what} contains the control character {bad!r}",
            "systemd ends a line at LF or a bare CR, so a control character would inject lines",
        )


def _check_path_parts(value: str) -> None:
    _check_text(value, "path")
    if ".." in PurePosixPath(value).parts:
        raise invalid(f"{_short(value)} contains '..'", "write the path without '..' components")


def check_abs_path(text: str) -> Path:
    """An absolute path without '..' or control characters, else ``invalid``."""
    _check_path_parts(text)
    if not text.startswith("/"):
        raise invalid(f"{_short(text)} is not an absolute path", "write the full path, from /")
    return Path(text)


def _abs_path(value: object) -> object:
    return check_abs_path(str(value)) if isinstance(value, str | Path) else value


def _release_path(value: object) -> object:
    if not isinstance(value, str | PurePosixPath):
        return value
    text = str(value)
    _check_path_parts(text)
    if text.startswith("/"):
        raise invalid(
            f"{_short(text)} is an absolute path",
            "exec is relative to the release tree, e.g. agent_cli/mcp_server.py",
        )
    if text in ("", ".") or text.endswith("/"):
        raise invalid(f"{_short(text)} is not a file path", "name a file inside the release")
    return PurePosixPath(text)


def _network(value: object) -> object:
    hint = "write a network in CIDR form, e.g. 203.0.113.0/24 or 2001:db8::/32"
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        value = str(value)
    if not isinstance(value, str):
        raise invalid(f"{value!r} is not an IP network", hint)
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ipaddress.ip_network(value, strict=False)
            hint = f"host bits are set; the network is {fixed}"
        raise invalid(f"{value!r} is not an IP network", hint) from exc
    if net.overlaps(LOOPBACK) if net.version == 4 else net.overlaps(ipaddress.ip_network("::1")):
        raise invalid(
            f"{value} includes loopback",
            "IP filtering ignores ports, so loopback egress reaches sibling profiles and the "
            "registry; a profile's own listen address is allowed automatically",
        )
    return net


def _denied_tool(value: str) -> str:
    _check_text(value, "tool")
    if value.startswith("/"):
        _check_path_parts(value)
        return value
    if TOOL_NAME_RE.fullmatch(value) is None or value in (".", ".."):
        raise invalid(
            f"{_short(value)} is neither an absolute path nor a tool name",
            "write /usr/bin/curl or a bare name such as curl (resolved on the host)",
        )
    return value


def _env_key(key: str) -> str:
    if ENV_KEY_RE.fullmatch(key) is None:
        raise invalid(
            f"{_short(key)} is not a valid variable name",
            "names are letters, digits and '_', not starting with a digit",
        )
    if key in RESERVED_ENV or key.startswith(RESERVED_ENV_PREFIX):
        raise invalid(
            f"{key} is reserved",
            "the runtime is declared once by agentgw (AGENT_ROOT, PYTHONPATH, AGENT_* in the "
            "profile's env file); LD_* and PYTHON* paths would change what the gateway loads",
        )
    if key.startswith("PYTHON") and key not in PYTHON_ALLOWED:
        raise invalid(
            f"{key} is reserved: it can make the interpreter load code or write from a path "
            "the gateway controls",
            "PYTHON* settings allowed: " + ", ".join(sorted(PYTHON_ALLOWED)),
        )
    if key in RESERVED_LOADERS:
        raise invalid(
            f"{key} is reserved: it makes the gateway load code or data from a path",
            "leave it to the unit and the launcher (the runtime and its tools are declared "
            "once, by agentgw)",
        )
    return key


def _env_value(value: str) -> str:
    _check_text(value, "value")
    return value


def _credential_name(name: str) -> str:
    if CREDENTIAL_NAME_RE.fullmatch(name) is None or name in (".", ".."):
        raise invalid(
            f"{_short(name)} is not a valid credential name",
            "names are letters, digits, '_', '.' and '-' (systemd LoadCredential=)",
        )
    return name


def _size(value: str) -> str:
    if value == "infinity":
        return value
    size = size_bytes(value)
    if size is None:
        raise invalid(f"{_short(value)} is not a size", "a systemd size such as 512M or 2G")
    if size < MIN_MEMORY:
        raise invalid(f"{value} is below the 16M a gateway needs to start", "e.g. 512M or 2G")
    return value


def size_bytes(value: str) -> int | None:
    """Bytes of a systemd size (``512M``, ``1.5G``); ``None`` for ``infinity``."""
    match = SIZE_RE.fullmatch(value)
    if match is None:
        return None
    number, unit = match.groups()
    return int(float(number) * 1024 ** " KMGT".index(unit or " "))


def _limit(value: str) -> str:
    """A per-process rlimit size (LimitFSIZE=, LimitDATA=); unlike MemoryMax= any size is valid."""
    if size_bytes(value) is None:
        raise invalid(f"{_short(value)} is not a size", "a systemd size such as 64M or 1G")
    return value


def _journal_size(value: str) -> str:
    """SystemMaxUse= of a profile's journal: a size of at least 1M (no 'infinity': the cap is
    the point)."""
    size = size_bytes(value)
    if size is None:
        raise invalid(f"{_short(value)} is not a size", "a size such as 256M or 1G")
    if size < 1024**2:
        raise invalid(f"{value} is too small for a journal", "at least 1M, e.g. 256M")
    return value


def _percent(value: str) -> str:
    match = PERCENT_RE.fullmatch(value)
    if match is None or not 1 <= int(match.group(1)) <= 10000:
        raise invalid(
            f"{_short(value)} is not a CPU quota",
            "a percentage from 1% to 10000%, where 100% is one CPU",
        )
    return value


def _http_path(value: str) -> str:
    _check_text(value, "path")
    if not value.startswith("/") or " " in value:
        raise invalid(f"{_short(value)} is not an HTTP path", "e.g. /health")
    return value


AbsPath = Annotated[Path, BeforeValidator(_abs_path)]


ReleasePath = Annotated[PurePosixPath, BeforeValidator(_release_path)]


Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_network)]


DeniedTool = Annotated[str, AfterValidator(_denied_tool)]


EnvKey = Annotated[str, AfterValidator(_env_key)]


EnvValue = Annotated[str, AfterValidator(_env_value)]


CredentialName = Annotated[str, AfterValidator(_credential_name)]


Size = Annotated[str, AfterValidator(_size)]


Limit = Annotated[str, AfterValidator(_limit)]


JournalSize = Annotated[str, AfterValidator(_journal_size)]


Percent = Annotated[str, AfterValidator(_percent)]


HttpPath = Annotated[str, AfterValidator(_http_path)]


Seconds = Annotated[StrictFloat, Field(gt=0)]


class Frozen(BaseModel):
    """Base of every config model: immutable, and an unknown key is an error, not ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Listen(Frozen):
    """A loopback ``address:port`` of its own, written ``127.77.0.2:8080`` in YAML."""

    host: ipaddress.IPv4Address = Field(description="an address in 127.0.0.0/8")
    port: StrictInt = Field(ge=1, le=65535, description="a TCP port, 1 to 65535")

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return value
        if not isinstance(value, str):
            raise invalid("must be a string like 127.77.0.2:8080", LISTEN_HINT)
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit():
            raise invalid(f"{value!r} is not an address:port", LISTEN_HINT)
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            raise invalid(f"{host!r} is not an IPv4 address", LISTEN_HINT) from None
        return {"host": address, "port": int(port)}

    @model_validator(mode="after")
    def _check_loopback(self) -> Listen:
        if self.host not in LOOPBACK or self.host in (LOOPBACK[0], LOOPBACK[-1]):
            raise invalid(f"{self.host} is not a loopback address", LISTEN_HINT)
        if self.host == SHARED_LOOPBACK:
            raise invalid(
                f"{self.host} is the shared loopback address",
                "every process on the host can reach 127.0.0.1; use an address of its own, "
                "e.g. 127.77.0.2",
            )
        return self

    @model_serializer
    def _text(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"
