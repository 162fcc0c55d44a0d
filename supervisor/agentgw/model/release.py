"""Releases: the manifest every release tree carries, its signature, and how the host sees it.

A release is ``/opt/agent/releases/<sha>-<label>/``: the runtime's files plus ``manifest.json``
(every path with its type, installed mode, size and sha256) and, when signed, ``manifest.sig``.
The launcher reads ``sha`` and ``label`` from the top level of ``manifest.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentgw.model.host import HostConfig

SHA_PATTERN = r"^[0-9a-f]{7,40}$"
LABEL_PATTERN = r"^[a-z0-9._-]{1,40}$"
CREATED_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
MODE_PATTERN = r"^0[0-7]{3}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
FINGERPRINT_PATTERN = r"^[0-9a-f]{16}$"

EntryType = Literal["file", "dir", "symlink"]
Slot = Literal["current", "previous"]
ProblemKind = Literal[
    "changed",
    "missing",
    "extra",
    "type",
    "mode",
    "owner",
    "target",
    "manifest",
    "signature",
    "unsigned",
    "untrusted",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class FileEntry(_Frozen):
    """One path of a release tree as installed: regular files carry sha256, symlinks a target."""

    path: str = Field(min_length=1)
    type: EntryType
    mode: str = Field(pattern=MODE_PATTERN)
    size: int = Field(ge=0)
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    target: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _check_kind_fields(self) -> FileEntry:
        if (self.sha256 is not None) != (self.type == "file"):
            raise ValueError(f"{self.path}: sha256 is required for files and only for files")
        if (self.target is not None) != (self.type == "symlink"):
            raise ValueError(f"{self.path}: target is required for symlinks and only for them")
        return self


class Manifest(_Frozen):
    """``manifest.json``: what a release is, and the exact tree it must consist of."""

    format: Literal[1] = 1
    sha: str = Field(pattern=SHA_PATTERN)
    label: str = Field(pattern=LABEL_PATTERN)
    version: int = Field(ge=1, description="host-wide counter: a later add has a higher version")
    created: str = Field(pattern=CREATED_PATTERN, description="ISO 8601 UTC, seconds")
    files: tuple[FileEntry, ...]

    @property
    def name(self) -> str:
        """The release's directory name under ``releases/``."""
        return f"{self.sha}-{self.label}"

    @property
    def size(self) -> int:
        """Bytes of the regular files and symlink targets the release holds."""
        return sum(entry.size for entry in self.files)


class ManifestSignature(_Frozen):
    """``manifest.sig``: an Ed25519 signature over the canonical manifest bytes.

    The public key travels with the signature so an untrusted signer is reported by fingerprint
    instead of as an unreadable signature; trust always comes from the host's trusted keys.
    """

    format: Literal[1] = 1
    algorithm: Literal["ed25519"] = "ed25519"
    key: str = Field(pattern=FINGERPRINT_PATTERN, description="fingerprint of public_key")
    public_key: str = Field(min_length=1, description="base64 of the 32 raw public key bytes")
    signature: str = Field(min_length=1, description="base64 of the 64 signature bytes")


class ReleasePolicy(_Frozen):
    """The host's trust rules for releases (from agentgw.yaml's host settings).

    ``trusted_keys`` holds what the host config holds: absolute paths of public key files, or
    keys inline as PEM or base64 of their 32 bytes.
    """

    require_signature: bool = False
    trusted_keys: tuple[str, ...] = ()
    # Interpreters a release's .venv/bin/python* may link to (as configured, not resolved).
    interpreters: tuple[str, ...] = ()

    @classmethod
    def of_host(cls, host: HostConfig) -> ReleasePolicy:
        return cls(
            require_signature=host.require_signature,
            trusted_keys=host.trusted_keys,
            interpreters=tuple(str(p) for p in (host.python, *host.interpreters)),
        )


class Problem(_Frozen):
    """One way a release on disk differs from what its manifest and the policy demand."""

    kind: ProblemKind
    path: str = Field(description="the path inside the release, '.' for the release itself")
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.detail}"


class ProfileUse(_Frozen):
    """A profile whose ``current`` or ``previous`` symlink points at a release."""

    profile: str
    slot: Slot


class ReleaseRef(_Frozen):
    """One release as ``release list`` shows it; ``problem`` is set if its manifest is unusable."""

    name: str
    sha: str
    label: str
    path: Path
    version: int | None = None
    created: str | None = None
    size: int = 0
    files: int = 0
    signed: bool = False
    key: str | None = None
    used_by: tuple[ProfileUse, ...] = ()
    problem: str | None = None
