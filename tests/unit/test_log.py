"""Console logs (stderr not JSON) carry colour codes unless NO_COLOR is set (no-color.org)."""

from __future__ import annotations

import io
import sys

import pytest
import structlog

from agentgw import log


@pytest.fixture(autouse=True)
def restore() -> object:
    """Each test configures structlog; the previous configuration is put back after."""
    saved = structlog.get_config()
    yield None
    structlog.configure(**saved)
    log.configure(debug=False, json=None)


def warning_text(monkeypatch: pytest.MonkeyPatch, no_color: str | None) -> str:
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    log.configure(debug=False, json=False)
    log._apply()  # noqa: SLF001 - the renderer is chosen here, from the environment
    log.get_logger("t").warning("disk_low", free_mb=12)
    return err.getvalue()


@pytest.mark.parametrize(("no_color", "coloured"), [(None, True), ("", True), ("1", False)])
def test_no_color_turns_colour_codes_off(
    monkeypatch: pytest.MonkeyPatch, no_color: str | None, coloured: bool
) -> None:
    """Unset or empty NO_COLOR: ANSI codes; set to anything: none, same words."""
    text = warning_text(monkeypatch, no_color)
    assert "disk_low" in text and "free_mb" in text
    assert ("\x1b[" in text) is coloured
