"""Logging: structlog, human-readable on a TTY, JSON lines otherwise; journald-native entries
when stderr is the journal (a unit's stderr: ``JOURNAL_STREAM`` names it).

structlog is imported on the first event, not at start-up: most commands log nothing at the
default level, and the import is a large share of a short command's run time (``status``).
"""

from __future__ import annotations

import json as jsonlib
import logging
import os
import re
import socket
import struct
import sys
from collections.abc import Mapping
from typing import Any, TextIO

_settings: dict[str, bool | None] = {"debug": False, "json": None}
_configured = False


class _Stderr:
    """Whatever sys.stderr is at the time of each write (tests and the CLI runner swap it)."""

    def write(self, text: str) -> int:
        stream: TextIO = sys.stderr
        return stream.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


# The native protocol of journald (systemd.journal-fields(7), sd_journal_sendv(3)): one datagram
# of KEY=VALUE lines. pystemd.journal.sendv would do it, but only bus/ may import pystemd and
# logging sits below every layer; this is the whole protocol agentgw needs.
JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "agentgw"
# syslog priorities of the levels structlog passes
PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3,
            "critical": 2, "fatal": 2}
_NOT_FIELD = re.compile(r"[^A-Z0-9_]")
_OWN = ("event", "level", "timestamp")


def want_journal() -> bool:
    """stderr is the journal: ``JOURNAL_STREAM`` is the ``device:inode`` of fd 2 (systemd.exec(5)),
    so a command whose stderr was redirected elsewhere keeps writing text there."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        return False


def field_name(key: str) -> str:
    """``AGENTGW_<KEY>``: journal field names are upper-case letters, digits and ``_``."""
    return ("AGENTGW_" + _NOT_FIELD.sub("_", key.upper()))[:64]


def render_fields(event: Mapping[str, Any]) -> dict[str, str]:
    """An event as journal fields: MESSAGE (the event and its key=values), PRIORITY, the
    identifier, AGENTGW_EVENT and one AGENTGW_<KEY> per key."""
    def text(value: Any) -> str:
        return value if isinstance(value, str) else jsonlib.dumps(value, default=str)

    extra = {k: text(v) for k, v in event.items() if k not in _OWN}
    level = str(event.get("level", "info"))
    message = " ".join([str(event.get("event", "")), *(f"{k}={v}" for k, v in extra.items())])
    fields = {
        "MESSAGE": message,
        "PRIORITY": str(PRIORITY.get(level, 6)),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "AGENTGW_EVENT": str(event.get("event", "")),
    }
    fields.update({field_name(k): v for k, v in extra.items()})
    return fields


def render_datagram(fields: Mapping[str, str]) -> bytes:
    """The native protocol: a ``KEY=value`` line per field; a value holding a newline goes as
    the key's line, its length (64-bit little-endian), the bytes and a newline."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class _Journal:
    """structlog's logger when stderr is the journal: each event one native entry. Falls back
    to a JSON line on stderr when journald does not take the datagram (too big, gone)."""

    def _send(self, fields: dict[str, str] | None = None, **_: Any) -> None:
        fields = fields or {}
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(render_datagram(fields), JOURNAL_SOCKET)
        except OSError:
            sys.stderr.write(jsonlib.dumps(fields, sort_keys=True) + "\n")

    debug = info = warning = warn = error = critical = fatal = exception = msg = _send


def _journal_renderer(_: Any, __: str, event: Any) -> dict[str, Any]:
    return {"fields": render_fields(event)}


def configure(*, debug: bool = False, json: bool | None = None) -> None:
    """Choose the level and format. ``json=None`` picks JSON unless stderr is a TTY."""
    global _configured
    _settings.update(debug=debug, json=json)
    if _configured:
        _apply()


def _apply() -> None:
    import structlog

    json = _settings["json"]
    journal = json is None and want_journal()
    use_json = (not sys.stderr.isatty()) if json is None else json
    # NO_COLOR (no-color.org): set and not empty, no colour codes.
    colors = not os.environ.get("NO_COLOR")
    renderer: structlog.typing.Processor = (
        _journal_renderer if journal
        else structlog.processors.JSONRenderer() if use_json
        else structlog.dev.ConsoleRenderer(colors=colors)
    )
    factory: Any = (
        (lambda *_: _Journal()) if journal
        else structlog.PrintLoggerFactory(file=_Stderr())  # type: ignore[arg-type]
    )
    stamp: list[structlog.typing.Processor] = (
        [structlog.processors.format_exc_info] if journal  # journald stamps its entries
        else [structlog.processors.TimeStamper(fmt="iso", utc=True)]
    )
    structlog.configure(
        processors=[structlog.processors.add_log_level, *stamp, renderer],
        # INFO passes: Logger.info gates itself on --debug, Logger.summary does not.
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if _settings["debug"] else logging.INFO
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


class Logger:
    """A structlog logger created on its first use (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._log: Any = None

    def _get(self) -> Any:
        global _configured
        if self._log is None:
            import structlog

            if not _configured:
                _configured = True
                # structlog already configured by someone else: a test's capture_logs().
                if not structlog.is_configured():
                    _apply()
            self._log = structlog.get_logger(self._name)
        return self._log

    def debug(self, event: str, **kw: Any) -> None:
        if _settings["debug"]:
            self._get().debug(event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        if _settings["debug"]:
            self._get().info(event, **kw)

    def summary(self, event: str, **kw: Any) -> None:
        """An info event logged without ``--debug`` too: the one line an operation leaves
        (e.g. a promote's result), so the journal has it."""
        self._get().info(event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._get().warning(event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._get().error(event, **kw)

    def exception(self, event: str, **kw: Any) -> None:
        self._get().exception(event, **kw)


def preload() -> None:
    """Import structlog ahead of the first event, from a thread with time to spare: a promote's
    summary line would otherwise pay ~110 ms for the import after the gateway is up
    (apply.promote.warm_up runs this during the restart; bench_control's row "promote overhead
    over bare restart + readiness")."""
    import structlog  # noqa: F401 - imported for its module load only


def get_logger(name: str) -> Logger:
    return Logger(name)
