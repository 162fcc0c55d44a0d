"""agentgw's own client of the registry's unix socket (``agentgw status`` asks it first).

Kept free of starlette, pydantic and the config loader: a command that gets its answer here
never imports them. Any failure to get a 200 answer is ``None``, never an error: the caller
then computes the same answer itself.
"""

from __future__ import annotations

import http.client
import socket
from pathlib import Path

TIMEOUT_S = 5.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("registry", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def get_current(path: Path, url: str, *, timeout: float = TIMEOUT_S) -> bytes | None:
    """The body of ``GET url`` answered from a current snapshot (``Cache-Control: no-cache``),
    or None when nothing answers on ``path`` or the answer is not a 200."""
    if not path.is_socket():
        return None
    conn = _UnixConnection(path, timeout)
    try:
        conn.request("GET", url, headers={"Cache-Control": "no-cache"})
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return body if response.status == 200 else None
