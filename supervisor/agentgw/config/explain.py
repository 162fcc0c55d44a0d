"""A validation error told as the YAML it came from: file, line, field, what is allowed."""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from agentgw.model.fields import ERROR_TYPE
from agentgw.model.profile import Profile

Loc = tuple[str | int, ...]

# Keys the loader fills in itself, so they are not offered as allowed keys.
INJECTED: dict[type[BaseModel], set[str]] = {Profile: {"name"}}
PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]+")
EXAMPLE_HINT = "see the commented examples in the agentgw repository's gateways/"
KINDS = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
    "path_type": "a path",
}
BOUNDS = {
    "greater_than": ("gt", "above"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "below"),
    "less_than_equal": ("le", "at most"),
}


@dataclass(frozen=True)
class Source:
    """One parsed YAML file: how it is shown in errors, its data, and its node tree for lines."""

    shown: str
    data: object
    node: yaml.Node | None


def explain(model: type[BaseModel], error: ErrorDetails, source: Source) -> tuple[int, str, str]:
    """The line, ``field: what`` message and hint of one pydantic error."""
    loc: Loc = tuple(error["loc"])
    at_key = bool(loc) and loc[-1] == "[key]"
    if at_key:
        loc = loc[:-1]
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    holder, _ = _field_info(model, loc[:-1])
    _, info = _field_info(model, loc)
    hint = info.description if info is not None and info.description else EXAMPLE_HINT
    if kind == ERROR_TYPE:
        if ctx.get("field"):
            loc, at_key = loc + (ctx["field"],), True
        what, hint = str(ctx["message"]), str(ctx["hint"]) or hint
    elif kind == "extra_forbidden":
        at_key, what = True, "unknown key"
        allowed = _allowed(holder)
        import difflib  # only for this error: every command loads config (~2 ms)

        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = (f"did you mean {close[0]}? " if close else "") + f"allowed: {', '.join(allowed)}"
    elif kind == "missing":
        what = "required key is missing"
        line = line_of(source.node, loc[:-1], at_key=True)
        return line, f"{field_name(loc)}: {what}", hint
    elif kind in KINDS:
        what = f"must be {KINDS[kind]}, got {shown_value(value)}"
    elif kind == "literal_error":
        what = f"must be {ctx['expected']}, got {shown_value(value)}"
    elif kind in BOUNDS:
        bound, words = BOUNDS[kind]
        what = f"must be {words} {shown_value(ctx[bound])}, got {shown_value(value)}"
    else:
        what = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
        what = f"{what}, got {shown_value(value)}"
    line = line_of(source.node, loc, at_key=at_key)
    return line, f"{field_name(loc)}: {what}" if loc else what, hint


def _field_info(
    model: type[BaseModel], loc: Loc
) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model the value at ``loc`` is validated as (None for a mapping, list or scalar), and
    the last model field on the way (``env.FOO`` gives the ``env`` field, for its description).
    """
    current: type[BaseModel] | None = model
    info: FieldInfo | None = None
    for part in loc:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            current = None
            continue
        info = current.model_fields[part]
        current = _submodel(info.annotation)
    return current, info


def _submodel(annotation: object) -> type[BaseModel] | None:
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _allowed(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    hidden = INJECTED.get(model, set())
    return [name for name in model.model_fields if name not in hidden]


def _walk(node: yaml.Node, loc: Loc) -> tuple[yaml.Node | None, yaml.Node, bool]:
    """Follow ``loc`` down the node tree: the deepest key and value nodes, and if all matched."""
    key: yaml.Node | None = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]
            found = [(k, v) for k, v in match if k.value == str(part)]
            if not found:
                return key, node, False
            key, node = found[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return key, node, False
            key, node = None, node.value[part]
        else:
            return key, node, False
    return key, node, True


def line_of(root: yaml.Node | None, loc: Loc, *, at_key: bool) -> int:
    """1-based line of the value at ``loc``; of its key for unknown keys and nested mappings."""
    if root is None:
        return 1
    key, value, found = _walk(root, loc)
    anchor = value
    if key is not None and (at_key or not found or not isinstance(value, yaml.ScalarNode)):
        anchor = key
    return int(anchor.start_mark.line) + 1


def field_name(loc: Loc) -> str:
    """``egress[1]``, ``resources.memory_max``, ``env.FOO``, ``env['bad key']``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def shown_value(value: object) -> str:
    """A value as the user wrote it in YAML, short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:60] + "...")
    if isinstance(value, float):
        return format(value, "g")
    return str(value)
