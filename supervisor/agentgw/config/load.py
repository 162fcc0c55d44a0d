"""Read ``agentgw.yaml`` and ``gateways/*.yaml`` into the frozen models of ``agentgw.model``.

Any problem becomes one ``AgentgwError`` (exit 2) that names the file, the line and the field:
``gateways/api.yaml:7: egress[1]: '10.0.0.0/33' is not an IP network``. Lines come from the YAML
node tree, fields from pydantic's error locations; when a file has several problems, the one on
the earliest line is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agentgw.config.explain import (
    Loc,
    Source,
    explain,
    field_name,
    line_of,
    shown_value,
)
from agentgw.errors import die, no_profile, usage
from agentgw.model import HostConfig, Profile, want_profile_name

HOST_FILE = "agentgw.yaml"
GATEWAYS_DIR = "gateways"
PROFILE_SUFFIX = ".yaml"

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Config:
    """The validated host settings and profiles, and the file each came from.

    ``profiles`` is sorted by name. ``host_file`` is ``None`` when agentgw.yaml is absent and the
    defaults apply.
    """

    etc: Path
    host: HostConfig
    host_file: Path | None
    profiles: Mapping[str, Profile]
    profile_files: Mapping[str, Path]
    # Every profile with a file in gateways/, loaded or not (see ``load_config(only=...)``).
    names: tuple[str, ...] = ()

    def profile(self, name: str) -> Profile:
        """The loaded profile ``name``; a usage error naming the configured ones if none."""
        try:
            return self.profiles[name]
        except KeyError:
            raise no_profile(name, self.names or self.profiles, self.etc) from None

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form: every setting, defaults included, with files relative to etc."""
        return {
            "etc": str(self.etc),
            "host": {
                "file": _shown(self.etc, self.host_file) if self.host_file else None,
                **self.host.model_dump(mode="json"),
            },
            "profiles": {
                name: {
                    "file": _shown(self.etc, self.profile_files[name]),
                    **profile.model_dump(mode="json"),
                }
                for name, profile in self.profiles.items()
            },
        }


def load_config(etc: Path, *, only: str | None = None) -> Config:
    """Load and validate ``etc/agentgw.yaml`` (optional) and every ``etc/gateways/*.yaml``.

    With ``only``, of the profiles just that one is read and validated (the others are only
    listed in ``names``): a command acting on one profile is neither slowed down by a hundred
    others nor blocked by a mistake in another's file. ``config check`` and ``apply`` load all,
    and they also check that no two profiles share an address.
    """
    if not etc.is_dir():
        raise usage(
            f"{etc}: no such config directory",
            hint="pass --etc DIR, or --root ROOT to use ROOT/etc/agentgw",
        )
    host_path = etc / HOST_FILE
    host_file = host_path if host_path.exists() else None
    host, host_source = HostConfig(), None
    if host_file is not None:
        host_source = _read_yaml(etc, host_file)
        data = {} if host_source.data is None else host_source.data
        host = _validate(
            HostConfig, _mapping(host_source, data, "isolation: production"), host_source
        )

    profiles: dict[str, Profile] = {}
    files: dict[str, Path] = {}
    sources: dict[str, Source] = {}
    paths = _profile_files(etc)
    names = tuple(path.name.removesuffix(PROFILE_SUFFIX) for path in paths)
    for path, name in zip(paths, names, strict=True):
        if only is not None and name != only:
            continue
        source = _read_yaml(etc, path)
        profiles[name] = _load_profile(name, source)
        files[name] = path
        sources[name] = source
    _check_addresses(profiles, sources, host, host_source)
    return Config(
        etc=etc,
        host=host,
        host_file=host_file,
        profiles=MappingProxyType(dict(sorted(profiles.items()))),
        profile_files=MappingProxyType(dict(sorted(files.items()))),
        names=names,
    )


def _shown(etc: Path, path: Path) -> str:
    return path.relative_to(etc).as_posix()


def _profile_files(etc: Path) -> list[Path]:
    """Every ``gateways/<name>.yaml``; anything else in gateways/ is an error, not skipped."""
    gateways = etc / GATEWAYS_DIR
    if not gateways.exists():
        return []
    if not gateways.is_dir():
        raise usage(f"{GATEWAYS_DIR}: not a directory", hint="gateways/ holds one file per profile")
    found = []
    for path in sorted(gateways.iterdir()):
        shown = _shown(etc, path)
        if not path.name.endswith(PROFILE_SUFFIX):
            hint = "gateways/ holds only <profile>.yaml files; move this one elsewhere"
            if path.suffix == ".yml":
                other = path.with_suffix(PROFILE_SUFFIX)
                hint = f"rename it to {_shown(etc, other)}"
                if other.exists():
                    hint = f"remove it: {_shown(etc, other)} already defines profile {other.stem}"
            raise usage(f"{shown}: profile files must end in {PROFILE_SUFFIX}", hint=hint)
        if not path.is_file():
            raise usage(
                f"{shown}: not a regular file",
                hint="gateways/ holds one <profile>.yaml per profile",
            )
        name = path.name.removesuffix(PROFILE_SUFFIX)
        if not want_profile_name(name):
            raise usage(
                f"{shown}: {name!r} is not a valid profile name",
                hint="the file name is the profile name: a lowercase letter, then up to 24 "
                "lowercase letters or digits",
            )
        found.append(path)
    return found


def _read_yaml(etc: Path, path: Path) -> Source:
    shown = _shown(etc, path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise die(
            f"{shown}: cannot read: {exc.strerror}",
            hint="it must be a regular file this user can read (run as root)",
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise usage(f"{shown}:{line}: not UTF-8 text", hint="save the file as UTF-8") from exc
    fast = _parse_fast(text)
    if fast is not None:
        node, data = fast
        if node is not None:
            _check_duplicate_keys(node, shown, (), set())
        return Source(shown, data, node)
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise usage(
            f"{shown}:{line}: invalid YAML: control character {chr(exc.character)!r}",
            hint='write control characters as escapes in a double-quoted string, e.g. "\\t"',
        ) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        hint = "indent with spaces and quote values that contain ': ', '#' or start with '*&!'"
        if isinstance(exc, yaml.constructor.ConstructorError):
            hint = "plain YAML only: remove the '!' tag"
        elif isinstance(exc, yaml.composer.ComposerError) and "document" in problem:
            hint = "one document per file: remove the extra '---'"
        raise usage(f"{shown}:{line}: invalid YAML: {problem}", hint=hint) from exc
    finally:
        if loader is not None:
            loader.dispose()
    if node is not None:
        _check_duplicate_keys(node, shown, (), set())
    return Source(shown, data, node)


def _parse_fast(text: str) -> tuple[yaml.Node | None, object] | None:
    """Parse with libyaml (about 10x faster over 100 profiles); None on any problem, so the
    pure-Python parser reports it with its (clearer) message."""
    if not yaml.__with_libyaml__:
        return None
    loader = yaml.CSafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()
    return node, data


def _check_duplicate_keys(node: yaml.Node, shown: str, loc: Loc, seen: set[int]) -> None:
    """PyYAML silently keeps the last of two equal keys; a config file must not hide one."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                line = key.start_mark.line + 1
                if key.value in first:
                    raise usage(
                        f"{shown}:{line}: {field_name(loc + (key.value,))}: duplicate key "
                        f"(first at line {first[key.value]})",
                        hint="YAML would keep only the last one; remove one of them",
                    )
                first[key.value] = line
                _check_duplicate_keys(value, shown, loc + (key.value,), seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(item, shown, loc + (index,), seen)


def _mapping(source: Source, data: object, example: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        line = source.node.start_mark.line + 1 if source.node is not None else 1
        raise usage(
            f"{source.shown}:{line}: must be a mapping of settings, got {shown_value(data)}",
            hint=f"write one 'key: value' per line, e.g. '{example}'",
        )
    return data


def _load_profile(name: str, source: Source) -> Profile:
    if source.data is None:
        raise usage(
            f"{source.shown}:1: empty profile",
            hint="a minimal profile is 'mode: cli' and 'listen: 127.77.0.2:8080'",
        )
    data = _mapping(source, source.data, "mode: cli")
    if "name" in data:
        line = line_of(source.node, ("name",), at_key=True)
        raise usage(
            f"{source.shown}:{line}: name: the profile name comes from the file name ({name})",
            hint="remove the key, or rename the file",
        )
    return _validate(Profile, {**data, "name": name}, source)


def _validate(model: type[M], data: dict[str, Any], source: Source) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [explain(model, error, source) for error in exc.errors()]
        line, message, hint = min(errors, key=lambda e: e[0])
        raise usage(f"{source.shown}:{line}: {message}", hint=hint) from None


def _check_addresses(
    profiles: Mapping[str, Profile],
    sources: Mapping[str, Source],
    host: HostConfig,
    host_source: Source | None,
) -> None:
    """Each profile needs a loopback address of its own: IP filtering ignores ports."""
    owners: dict[IPv4Address, str] = {}
    if host.registry.tcp is not None:
        line = line_of(host_source.node if host_source else None, ("registry", "tcp"), at_key=False)
        owners[host.registry.tcp.host] = f"the registry ({HOST_FILE}:{line})"
    for name, profile in profiles.items():
        source = sources[name]
        line = line_of(source.node, ("listen",), at_key=False)
        address = profile.listen.host
        if address in owners:
            raise usage(
                f"{source.shown}:{line}: listen: {address} is already used by {owners[address]}",
                hint="give each profile its own loopback address, e.g. 127.77.0.N: IP filtering "
                "ignores ports, so a shared address lets one profile reach another",
            )
        owners[address] = f"profile {name} ({source.shown}:{line})"
