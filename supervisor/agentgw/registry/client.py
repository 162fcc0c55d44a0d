"""agentgw's own client of the registry's unix socket (``agentgw status`` asks it first).

One HTTP/1.0 GET to agentgw's own server (uvicorn, which answers an HTTP/1.0 request with a
``Content-Length`` body and closes): written out here rather than through ``http.client``,
whose import (email parser, ssl) costs 15-30 ms, a third of a whole ``agentgw status``. Kept
free of starlette, pydantic and the config loader too. Anything but a complete ``200`` answer
is ``None``, never an error: the caller then computes the same answer itself.
"""

from __future__ import annotations

import socket
from pathlib import Path

TIMEOUT_S = 5.0
MAX_BYTES = 64 << 20


def get_current(path: Path, url: str, *, timeout: float = TIMEOUT_S) -> bytes | None:
    """The body of ``GET url`` answered from a current snapshot (``Cache-Control: no-cache``),
    or None when nothing answers on ``path`` or the answer is not a complete 200."""
    return get(path, url, timeout=timeout, no_cache=True)


def get(path: Path, url: str, *, timeout: float = TIMEOUT_S, no_cache: bool = False
        ) -> bytes | None:
    """The body of ``GET url`` (from the registry's cached snapshot unless ``no_cache``), or
    None when nothing answers on ``path`` or the answer is not a complete 200."""
    cache = "Cache-Control: no-cache\r\n" if no_cache else ""
    request = (f"GET {url} HTTP/1.0\r\nHost: registry\r\n{cache}"
               "Accept: application/json\r\n\r\n").encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(request)
            chunks, size = [], 0
            while chunk := sock.recv(1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BYTES:
                    return None
    except OSError:
        return None
    return parse_response(b"".join(chunks))


def parse_response(raw: bytes) -> bytes | None:
    """The body of a complete ``HTTP/1.x 200`` response, else None."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    status_line, *header_lines = head.split(b"\r\n")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or parts[1] != b"200":
        return None
    for line in header_lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return None
            return body if len(body) == length else None
        if name.strip().lower() == b"transfer-encoding":
            return None  # not sent to an HTTP/1.0 client; refuse rather than misread
    return body
