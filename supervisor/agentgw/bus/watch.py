"""A change counter for the gateway instances, fed by systemd's own signals.

systemd emits ``PropertiesChanged`` on a unit's object whenever its state, MainPID or restart
count changes, and ``UnitNew``/``UnitRemoved`` on the manager. :class:`UnitWatch` listens on a
connection of its own and counts those that concern ``agent-gateway@*`` instances: a snapshot
taken at generation *g* still describes every instance while the count is *g*. The registry
uses it to answer ``agentgw status`` from a warm snapshot without ever serving a stale state.

systemd sends every signal to each private-socket client, and to system-bus clients that called
``Subscribe``; the watch does both. Signals queue on the connection until :meth:`UnitWatch.poll`
dispatches them (the registry calls it when the socket is readable, and before it decides that
a snapshot is current), so a change that systemd announced before a caller's request reached
the registry is always counted first.
"""

from __future__ import annotations

from typing import Any

from agentgw.bus.errmap import mapped
from agentgw.bus.systemd import DEST, MANAGER, MANAGER_PATH, PROPERTIES, Systemd
from agentgw.errors import AgentgwError
from agentgw.log import get_logger

log = get_logger(__name__)

# Object paths of agent-gateway@<p>.service: systemd escapes '-' as _2d and '@' as _40.
GATEWAY_PATH_PREFIX = b"/org/freedesktop/systemd1/unit/agent_2dgateway_40"
# Dispatching more than this many messages in one poll yields back to the caller's loop.
POLL_BATCH = 10_000


class UnitWatch:
    """Counts changes of gateway units; :attr:`generation` moves on every one."""

    def __init__(self, systemd: Systemd | None = None) -> None:
        self._sd = systemd if systemd is not None else Systemd()
        self.generation = 0
        # pystemd keeps raw pointers to signal callbacks: holding them keeps them alive.
        self._callbacks: list[Any] = []

    def open(self) -> UnitWatch:
        self._sd.open()
        bus = self._sd.bus

        def on_properties(msg: Any, error: Any = None, userdata: Any = None) -> None:
            path = msg.get_path()
            if path is not None and bytes(path).startswith(GATEWAY_PATH_PREFIX):
                self.generation += 1

        def on_manager(msg: Any, error: Any = None, userdata: Any = None) -> None:
            self.generation += 1

        with mapped("watch the gateway units"):
            bus.match_signal(DEST.encode(), None, PROPERTIES.encode(), b"PropertiesChanged",
                             on_properties)
            for member in (b"UnitNew", b"UnitRemoved", b"Reloading"):
                bus.match_signal(DEST.encode(), MANAGER_PATH.encode(), MANAGER.encode(), member,
                                 on_manager)
        self._callbacks = [on_properties, on_manager]
        self._sd.call(MANAGER_PATH, MANAGER, "Subscribe", action="subscribe to unit changes")
        return self

    def close(self) -> None:
        self._sd.close()
        self._callbacks = []

    def fileno(self) -> int:
        """The connection's socket, to wait for readability in an event loop."""
        return int(self._sd.bus.get_fd())

    def poll(self) -> int:
        """Dispatch every message already received, without blocking; the generation after.

        A broken connection (systemd re-executed, say) counts as a change on every poll, so a
        caller never trusts a snapshot it cannot vouch for; reopen with :meth:`close` +
        :meth:`open`.
        """
        try:
            for _ in range(POLL_BATCH):
                with mapped("read systemd's unit signals"):
                    msg = self._sd.bus.process()
                if msg.is_empty():
                    break
        except AgentgwError as exc:
            self.generation += 1
            log.warning("unit_watch_broken", error=exc.message)
            raise
        return self.generation
