"""A profile's sandbox socket, relayed to the broker (``agentgw-sandbox-relay@<p>.service``).

systemd makes each profile's socket (``agentgw-sandbox-relay@<p>.socket``: 0660
root:<the profile's group>) and hands it to this relay; the relay accepts each caller and
passes the connection itself to the broker over its control socket (``control.sock``, 0600
root, ``agentgw-sandbox.socket``) with SCM_RIGHTS, beside the profile's name, then closes its
copy. The broker answers the caller on that connection as if it had accepted it, and
authorises it by the caller's SO_PEERCRED, which the kernel recorded at connect() and the
passing does not change. So systemd, not the broker, owns and chowns the sockets (the broker
holds no capability), and a profile added by ``agentgw apply`` is served without restarting
the broker: systemd cannot hand a new listening socket to a running service, but a relay can
hand it every connection.

Run as ``python -I -m agentgw.sandbox.relay PROFILE CONTROL``: the standard library only, no
agentgw import (this runs as root, though with no capability).
"""

from __future__ import annotations

import os
import re
import socket
import sys

LISTEN_FDS_START = 3
PROFILE_RE = re.compile(r"[a-z][a-z0-9]{0,24}")  # agentgw.model.fields.PROFILE_NAME_RE
CONNECT_TIMEOUT_S = 30.0


def listening_socket() -> socket.socket:
    """The one socket systemd passed (sd_listen_fds(3): $LISTEN_PID is us, $LISTEN_FDS 1)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        raise SystemExit("agentgw relay: no socket from systemd (run by "
                         "agentgw-sandbox-relay@<profile>.socket)")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return socket.socket(fileno=LISTEN_FDS_START)


def hand_over(conn: socket.socket, profile: str, control: str) -> None:
    """Pass ``conn`` to the broker: the profile's name and the descriptor, one message."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as ctl:
        ctl.settimeout(CONNECT_TIMEOUT_S)
        ctl.connect(control)
        socket.send_fds(ctl, [profile.encode() + b"\n"], [conn.fileno()])


def relay(listener: socket.socket, profile: str, control: str) -> None:
    while True:
        conn, _ = listener.accept()
        try:
            hand_over(conn, profile, control)
        except OSError as exc:  # the caller sees its connection closed: the broker is down
            print(f"agentgw relay {profile}: cannot reach the broker at {control}: {exc}",
                  file=sys.stderr, flush=True)
        finally:
            conn.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not PROFILE_RE.fullmatch(argv[0]):
        print("usage: python -I -m agentgw.sandbox.relay PROFILE CONTROL_SOCKET",
              file=sys.stderr)
        return 2
    relay(listening_socket(), argv[0], argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
