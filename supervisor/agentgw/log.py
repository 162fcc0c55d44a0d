"""Logging: structlog, human-readable on a TTY, JSON lines otherwise; always to stderr.

structlog is imported on the first event, not at start-up: most commands log nothing at the
default level, and the import is a large share of a short command's run time (``status``).
"""

from __future__ import annotations

import logging
import os
import sys
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


def configure(*, debug: bool = False, json: bool | None = None) -> None:
    """Choose the level and format. ``json=None`` picks JSON unless stderr is a TTY."""
    global _configured
    _settings.update(debug=debug, json=json)
    if _configured:
        _apply()


def _apply() -> None:
    import structlog

    json = _settings["json"]
    use_json = (not sys.stderr.isatty()) if json is None else json
    # NO_COLOR (no-color.org): set and not empty, no colour codes.
    colors = not os.environ.get("NO_COLOR")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json
        else structlog.dev.ConsoleRenderer(colors=colors)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if _settings["debug"] else logging.WARNING
        ),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
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

    def warning(self, event: str, **kw: Any) -> None:
        self._get().warning(event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._get().error(event, **kw)

    def exception(self, event: str, **kw: Any) -> None:
        self._get().exception(event, **kw)


def get_logger(name: str) -> Logger:
    return Logger(name)
