"""The HTML page as a real browser renders it: Debian's chromium, headless, over HTTP.

The app is served by uvicorn on a loopback port with the caller fixed to root (a browser cannot
present unix-socket credentials); the DOM chromium builds must hold the profiles table, and a
screenshot is saved to benchmarks/out/registry-page.png for a human to look at.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import pytest
import uvicorn
from starlette.types import ASGIApp

from agentgw.registry.auth import Connection, Peer, with_connection
from tests.unit.registry.conftest import Host, running

REPO = Path(__file__).resolve().parents[3]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install chromium)"
)


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None,
                                           access_log=False))
    try:
        with running(server, [sock]):
            yield f"http://127.0.0.1:{port}"
    finally:
        sock.close()


class Table(HTMLParser):
    """The text of each cell of table#profiles, row by row, and each row's data-profile."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.rows: list[tuple[str | None, list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table" and found.get("id") == "profiles":
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append((found.get("data-profile"), []))
        elif self.inside and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            self.rows[-1][1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def chromium(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    argv = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *extra, url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, check=True)


def test_chromium_renders_the_profiles_table(host: Host, tmp_path: Path) -> None:
    """The DOM chromium builds has the header and one row per profile with its verdicts, and
    a screenshot of the page is written."""
    app = with_connection(host.app, Connection("unix", Peer(1, 0, 0)))
    shot = REPO / "benchmarks" / "out" / "registry-page.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    with serving(app) as base:
        dom = chromium(f"{base}/", tmp_path, "--dump-dom").stdout
        chromium(f"{base}/", tmp_path, f"--screenshot={shot}", "--window-size=1400,400")
    table = Table()
    table.feed(dom)
    header, *rows = table.rows
    assert ["profile", "state", "pid"] == header[1][:3]
    shown = {name: (cells[1], cells[7], cells[8].split(" (")[0]) for name, cells in rows}
    assert {
        "api": ("active/running", "yes", "isolated"),
        "core": ("active/running", "no", "unproven"),
        "mcp": ("inactive/dead", "unknown", "unproven"),
    } == shown
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 5000
