"""Host settings: ``/etc/agentgw/agentgw.yaml``. Every field has a default; the file is optional."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, StrictBool, StrictFloat, StrictInt, model_validator

from agentgw.logroll import Retention
from agentgw.model.fields import AbsPath, Frozen, Listen, Seconds, check_abs_path, invalid
from agentgw.paths import user_name
from agentgw.signing import inline_key

SHARED_USER = "agent-shared"
GROUP_NAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
def _trusted_key(value: str) -> str:
    """A key file's absolute path, or the key itself (PEM, or raw base64 of its 32 bytes)."""
    if inline_key(value):
        return value
    if value.startswith("/"):
        check_abs_path(value)
        return value
    shown = value if len(value) <= 40 else value[:40] + "..."
    raise invalid(
        f"{shown!r} is neither an absolute path nor an Ed25519 public key",
        "give the path of a key file, or the key as PEM or as base64 of its 32 bytes",
    )


def _group(value: str) -> str:
    if GROUP_NAME_RE.fullmatch(value) is None:
        raise invalid(f"{value!r} is not a valid group name", "e.g. agentgw or wheel")
    return value


def _webhook(value: str) -> str:
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        host = None
    if host is None or parts.scheme not in ("http", "https") or not value.isprintable():
        raise invalid(f"{value!r} is not an http(s) URL", "e.g. https://hooks.example.com/agentgw")
    return value


TrustedKey = Annotated[str, AfterValidator(_trusted_key)]
GroupName = Annotated[str, AfterValidator(_group)]
WebhookUrl = Annotated[str, AfterValidator(_webhook)]


class Registry(Frozen):
    """Where the read-only registry endpoint listens."""

    socket: StrictBool = Field(default=True, description="serve on /run/agentgw/registry.sock")
    tcp: Listen | None = Field(
        default=None,
        description="also serve on this loopback address, e.g. 127.77.0.1:9177, or null",
    )
    token_file: AbsPath | None = Field(
        default=None, description="absolute path of a bearer token required on TCP, or null"
    )


class Sandbox(Frozen):
    """Limits of the microVM sandbox that runs untrusted code for the gateways."""

    pool_size: StrictInt = Field(
        default=1, ge=0, le=8, description="job units prepared ahead, one job each, 0 to 8"
    )
    spare_units: StrictInt = Field(
        default=2, ge=0, le=16,
        description="job units started ahead without a sandbox, 0 to 16: a job that finds no "
        "prepared unit of its shape starts its sandbox in one (no unit start on its path)",
    )
    memory_mb: StrictInt = Field(
        default=256, ge=64, le=16384, description="MiB per VM, 64 to 16384"
    )
    vcpus: StrictInt = Field(default=1, ge=1, le=16, description="vCPUs per VM, 1 to 16")
    timeout_s: Seconds = Field(default=10.0, le=3600, description="seconds per run, at most 3600")
    max_output_bytes: StrictInt = Field(
        default=1048576,
        ge=1,
        le=64 * 1024**2,
        description="stdout/stderr bytes kept per run, up to 64M",
    )
    max_concurrent_per_profile: StrictInt = Field(
        default=1, ge=1, le=64,
        description="runs at once per profile, 1 to 64; below max_concurrent_host (unless that "
        "is 1), so one profile never holds every slot",
    )
    max_concurrent_host: StrictInt = Field(
        default=2, ge=1, le=256, description="runs at once on the host, 1 to 256"
    )
    allow_emulation: StrictBool = Field(
        default=False,
        description="use QEMU TCG when neither KVM nor gVisor works (TCG is not a security "
        "boundary); false refuses to run jobs then",
    )

    @model_validator(mode="after")
    def _fair_share(self) -> Sandbox:
        if self.max_concurrent_host > 1 and (
            self.max_concurrent_per_profile >= self.max_concurrent_host
        ):
            raise ValueError(
                f"max_concurrent_per_profile ({self.max_concurrent_per_profile}) must be below "
                f"max_concurrent_host ({self.max_concurrent_host}): one profile must not be "
                "able to hold every slot"
            )
        return self


class Rotation(Frozen):
    """When history.jsonl and the sandbox's execs.jsonl rotate, and how many old files stay."""

    max_bytes: StrictInt = Field(
        default=8 * 1024 * 1024, ge=4096, le=1024 * 1024 * 1024,
        description="rotate a log once it is over this many bytes, 4096 to 1 GiB",
    )
    keep: StrictInt = Field(
        default=8, ge=1, le=1000, description="rotated files kept per log (.1 newest), 1 to 1000"
    )

    def retention(self) -> Retention:
        return Retention(self.max_bytes, self.keep)


class HostConfig(Frozen):
    """Host-wide settings: isolation mode, release trust, registry, sandbox, interpreter."""

    isolation: Literal["production", "convenience"] = Field(
        default="production",
        description="production: one user per profile; convenience: one shared user, "
        "reported as not isolated",
    )
    require_signature: StrictBool = Field(
        default=False, description="refuse releases without a valid Ed25519 signature"
    )
    trusted_keys: tuple[TrustedKey, ...] = Field(
        default=(),
        description="Ed25519 public keys: file paths, PEM, or base64 of the 32 key bytes",
    )
    exposure_threshold: StrictFloat = Field(
        default=1.5,
        ge=0,
        le=10,
        description="highest systemd-analyze security score accepted, 0 to 10",
    )
    admin_group: GroupName = Field(
        default="agentgw", description="the group that sees every profile"
    )
    registry: Registry = Field(default_factory=Registry, description="socket, tcp and token_file")
    sandbox: Sandbox = Field(default_factory=Sandbox, description="limits of the microVM sandbox")
    rotation: Rotation = Field(
        default_factory=Rotation, description="size bound and retention of history and exec logs"
    )
    python: AbsPath = Field(
        default=Path("/usr/bin/python3"),
        description="absolute path of the interpreter gateways use",
    )
    interpreters: tuple[AbsPath, ...] = Field(
        default=(),
        description="more interpreters a release's own virtualenv (.venv/bin/python) may link "
        "to; python is always allowed",
    )
    webhook: WebhookUrl | None = Field(
        default=None,
        description="http(s) URL that gets a JSON POST when a gateway fails, or null",
    )

    @model_validator(mode="after")
    def _check_keys(self) -> HostConfig:
        if self.require_signature and not self.trusted_keys:
            raise invalid(
                "true, but no trusted_keys are listed",
                "add the public key that signs releases to trusted_keys",
                field="require_signature",
            )
        return self

    @property
    def isolated(self) -> bool:
        """Whether profiles run as separate users (convenience mode is never called isolated)."""
        return self.isolation == "production"

    def user(self, profile: str) -> str:
        """The Linux user a profile's gateway runs as in this isolation mode."""
        return user_name(profile) if self.isolated else SHARED_USER
