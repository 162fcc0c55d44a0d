"""The systemd manager over one D-Bus connection: unit lists, properties, jobs, transient units.

Every call goes through one connection opened once: like systemctl, as root the manager's
private socket (peer-to-peer, no dbus-daemon hop: ~3x less latency per call), otherwise the
system bus. Nothing here introspects an object (pystemd's ``Unit(name).load()`` does, at ~5 ms
per unit): methods are called by name with explicit signatures, and properties are read with
plain ``org.freedesktop.DBus.Properties.Get``/``GetAll`` on the unit's object path, which is
derived from the unit name (systemd loads the unit on access, as ``systemctl show`` relies on).

Jobs (start, stop, restart, transient units) are waited for by their ``JobRemoved`` signal.
systemd sends it to the client that queued the job (and to every private-socket client), so no
``Subscribe`` is needed.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pystemd.dbuslib import DBus, DBusAddress, path_encode

from agentgw.bus import wire
from agentgw.bus.errmap import mapped
from agentgw.bus.facts import (
    MAIN_CODES,
    ServiceStatus,
    StartFacts,
    TransientRun,
    UnitInfo,
    as_int,
    as_str,
)
from agentgw.errors import AgentgwError
from agentgw.log import get_logger
from agentgw.paths import profile_of

log = get_logger(__name__)

DEST = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
PROPERTIES = "org.freedesktop.DBus.Properties"
UNIT_PATH_PREFIX = "/org/freedesktop/systemd1/unit"
PRIVATE_SOCKET = "/run/systemd/private"

# systemd reports "no value" for 64-bit counters (MemoryCurrent, ...) as UINT64_MAX.
UINT64_MAX = 2**64 - 1
DEFAULT_JOB_TIMEOUT = 90.0
JOB_WAKE_SLICE_S = 0.01  # the longest a job's end may go unseen (see _wait_job)


class Systemd:
    """The system manager, on one connection. Use as ``with Systemd() as sd: ...``.

    ``private=None`` picks the private socket when running as root and it exists; ``False``
    forces the system bus (where D-Bus policy applies, e.g. for non-root callers).
    """

    def __init__(self, *, private: bool | None = None) -> None:
        if private is None:
            private = os.geteuid() == 0 and os.path.exists(PRIVATE_SOCKET)
        self.private = private
        self._bus: Any = None
        # Job paths being waited for -> result once their JobRemoved arrived.
        self._jobs: dict[str, str | None] = {}
        # pystemd keeps only a raw pointer to a signal callback: holding it here keeps it alive.
        self._on_job_removed: Any = None

    # -- connection ------------------------------------------------------------------------
    def open(self) -> Systemd:
        if self._bus is None:
            if self.private:
                bus = DBusAddress(f"unix:path={PRIVATE_SOCKET}".encode(), True)
                action = f"connect to systemd at {PRIVATE_SOCKET}"
            else:
                bus = DBus()
                action = "connect to the system bus"
            with mapped(action):
                bus.open()
            self._bus = bus
        return self

    def close(self) -> None:
        if self._bus is not None:
            self._bus.close()
            self._bus = None
            self._on_job_removed = None
            self._jobs.clear()

    def __enter__(self) -> Systemd:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def bus(self) -> Any:
        if self._bus is None:
            raise AgentgwError(
                "the systemd connection is not open", hint="use 'with Systemd() as sd:'"
            )
        return self._bus

    # -- plumbing --------------------------------------------------------------------------
    def call(
        self,
        path: str,
        interface: str,
        method: str,
        signature: str = "",
        *values: Any,
        action: str,
        unit: str | None = None,
    ) -> Any:
        """Call a method by name with an explicit signature; the reply decoded to str/int/list."""
        encoded = wire.args(signature, *values) if signature else []
        with mapped(action, unit):
            reply = self.bus.call_method(
                DEST.encode(), path.encode(), interface.encode(), method.encode(), encoded
            )
        return wire.decode(reply.body)

    def _manager(self, method: str, signature: str = "", *values: Any, **kw: Any) -> Any:
        return self.call(MANAGER_PATH, MANAGER, method, signature, *values, **kw)

    @staticmethod
    def object_path(name: str) -> str:
        """The unit's object path, computed locally (the same escaping systemd uses)."""
        return str(path_encode(UNIT_PATH_PREFIX.encode(), name.encode()).decode())

    # -- reading ---------------------------------------------------------------------------
    def version(self) -> str:
        """The manager's version string, e.g. ``252.39-1~deb12u2``."""
        reply = self.call(
            MANAGER_PATH, PROPERTIES, "Get", "ss", MANAGER, "Version", action="read the version"
        )
        return as_str(reply)

    def list_units(self, patterns: Sequence[str], states: Sequence[str] = ()) -> list[UnitInfo]:
        """Loaded units matching shell-style ``patterns`` (and ``states``, if any), one call."""
        rows = self._manager(
            "ListUnitsByPatterns", "asas", list(states), list(patterns), action="list units"
        )
        return [
            UnitInfo(name=r[0], description=r[1], load_state=r[2], active_state=r[3],
                     sub_state=r[4], path=r[6])
            for r in rows or []
        ]

    def unit_path(self, name: str) -> str:
        """The object path of a unit, loading it if needed (LoadUnit).

        A unit that has no file still gets a path (its LoadState is ``not-found``).
        """
        return as_str(self._manager("LoadUnit", "s", name, action="load", unit=name))

    def unit_properties(
        self, name: str, interface: str = UNIT, names: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Properties of ``interface`` on a unit, decoded to str/int/bool/list.

        With ``names``, one ``Get`` per name (~0.1 ms each); without, one ``GetAll`` (a
        Service has ~300 properties, ~1.6 ms to decode).
        """
        path = self.object_path(name)
        action = "read properties of"
        if names is None:
            values = self.call(path, PROPERTIES, "GetAll", "s", interface, action=action, unit=name)
            # pystemd decodes an empty a{sv} as [].
            return dict(values) if values else {}
        return {
            prop: self.call(path, PROPERTIES, "Get", "ss", interface, prop, action=action,
                            unit=name)
            for prop in names
        }

    def unit_states(self, names: Sequence[str]) -> dict[str, tuple[str, str]]:
        """(ActiveState, UnitFileState) of each unit, e.g. ``("active", "enabled")``.

        A unit without a file reads as ``("inactive", "")``.
        """
        states = {}
        for name in names:
            props = self.unit_properties(name, UNIT, ["ActiveState", "UnitFileState"])
            states[name] = (as_str(props["ActiveState"]), as_str(props["UnitFileState"]))
        return states

    def main_pid(self, name: str) -> int:
        """The service's main PID, 0 when it has none (not running)."""
        return as_int(self.unit_properties(name, SERVICE, ["MainPID"])["MainPID"])

    def service_status(self, name: str) -> ServiceStatus:
        """State, pid, start time, restarts, memory and invocation of one service."""
        unit = self.unit_properties(name, UNIT, ["LoadState", "ActiveState", "SubState"])
        return self._status(name, unit["LoadState"], unit["ActiveState"], unit["SubState"])

    def service_statuses(self, patterns: Sequence[str]) -> list[ServiceStatus]:
        """:meth:`service_status` of every *loaded* service matching ``patterns``.

        One ListUnitsByPatterns for the states plus five property reads per unit. systemd
        unloads inactive units nothing refers to: ask :meth:`service_status` for names that
        are expected but missing here.
        """
        return [
            self._status(u.name, u.load_state, u.active_state, u.sub_state)
            for u in self.list_units(patterns)
            if u.name.endswith(".service")
        ]

    def _status(self, name: str, load: Any, active: Any, sub: Any) -> ServiceStatus:
        svc = self.unit_properties(
            name, SERVICE, ["MainPID", "ExecMainStartTimestamp", "NRestarts", "MemoryCurrent"]
        )
        invocation = self.unit_properties(name, UNIT, ["InvocationID"])["InvocationID"]
        memory = as_int(svc["MemoryCurrent"])
        return ServiceStatus(
            name=name,
            load_state=as_str(load),
            active_state=as_str(active),
            sub_state=as_str(sub),
            main_pid=as_int(svc["MainPID"]),
            started_usec=as_int(svc["ExecMainStartTimestamp"]),
            n_restarts=as_int(svc["NRestarts"]),
            memory_bytes=None if memory == UINT64_MAX else memory,
            invocation_id=bytes(invocation).hex(),
        )

    def start_facts(self, name: str) -> StartFacts:
        """Why the last start of a service did (not) succeed: result, main exit, STATUS=."""
        unit = self.unit_properties(name, UNIT, ["ActiveState", "SubState"])
        svc = self.unit_properties(
            name,
            SERVICE,
            [
                "Result", "ExecMainCode", "ExecMainStatus", "ExecMainPID", "StatusText",
                "ExecMainStartTimestamp", "ExecMainExitTimestamp", "NRestarts",
            ],
        )
        return StartFacts(
            active_state=as_str(unit["ActiveState"]),
            sub_state=as_str(unit["SubState"]),
            result=as_str(svc["Result"]),
            main_code=MAIN_CODES.get(as_int(svc["ExecMainCode"]), ""),
            main_status=as_int(svc["ExecMainStatus"]),
            main_pid=as_int(svc["ExecMainPID"]),
            status_text=as_str(svc["StatusText"]),
            main_start_usec=as_int(svc["ExecMainStartTimestamp"]),
            main_exit_usec=as_int(svc["ExecMainExitTimestamp"]),
            n_restarts=as_int(svc["NRestarts"]),
        )

    # -- unit files ------------------------------------------------------------------------
    def daemon_reload(self) -> None:
        """Reload unit files; systemd answers once the reload is complete."""
        self._manager("Reload", action="reload systemd")

    def enable(self, names: Sequence[str]) -> None:
        """Enable unit files (create their [Install] symlinks); reload to pick up new files."""
        self._manager(
            "EnableUnitFiles", "asbb", list(names), False, False,
            action="enable", unit=", ".join(names),
        )

    def disable(self, names: Sequence[str]) -> None:
        self._manager(
            "DisableUnitFiles", "asb", list(names), False, action="disable", unit=", ".join(names)
        )

    def reset_failed(self, name: str) -> None:
        """Forget a unit's failed state (and unload it, if transient)."""
        self._manager("ResetFailedUnit", "s", name, action="reset the failed state of", unit=name)

    # -- jobs ------------------------------------------------------------------------------
    def start(self, name: str, *, timeout: float = DEFAULT_JOB_TIMEOUT) -> str:
        """Start a unit; return the job result ("done", "failed", "dependency", …) once finished."""
        return self._job("StartUnit", "start", name, timeout)

    def stop(self, name: str, *, timeout: float = DEFAULT_JOB_TIMEOUT) -> str:
        return self._job("StopUnit", "stop", name, timeout)

    def restart(self, name: str, *, timeout: float = DEFAULT_JOB_TIMEOUT,
                meanwhile: Callable[[], None] | None = None) -> str:
        """``meanwhile`` (must not raise) runs once the job is queued, while systemd works."""
        return self._job("RestartUnit", "restart", name, timeout, meanwhile)

    def _job(self, method: str, action: str, name: str, timeout: float,
             meanwhile: Callable[[], None] | None = None) -> str:
        self._watch_jobs()
        job = self._manager(method, "ss", name, "replace", action=action, unit=name)
        if meanwhile is not None:
            meanwhile()  # the job's JobRemoved, if it comes now, waits in sd-bus's queue
        return self._wait_job(as_str(job), action, name, timeout)

    def _watch_jobs(self) -> None:
        """Match the manager's JobRemoved signal once per connection (before queueing a job)."""
        if self._on_job_removed is not None:
            return
        jobs = self._jobs

        # A plain function, not a bound method: pystemd sets an attribute on the callback.
        def on_job_removed(msg: Any, error: Any = None, userdata: Any = None) -> None:
            msg.process_reply(False)
            job, result = wire.decode(msg.body[1]), wire.decode(msg.body[3])
            if job in jobs:
                jobs[job] = result

        with mapped("watch systemd jobs"):
            self.bus.match_signal(
                DEST.encode(), MANAGER_PATH.encode(), MANAGER.encode(), b"JobRemoved",
                on_job_removed,
            )
        self._on_job_removed = on_job_removed

    def _wait_job(self, job: str, action: str, name: str, timeout: float) -> str:
        """Dispatch bus messages until ``job`` is removed; its result, or an error on timeout.

        The JobRemoved signal cannot have been dispatched yet: replies and signals queue up
        while a call waits, and only ``process()`` runs the callback.
        """
        self._jobs[job] = None
        deadline = time.monotonic() + timeout
        try:
            while (result := self._jobs[job]) is None:
                with mapped(f"wait for the {action} job of", name):
                    msg = self.bus.process()
                # pystemd drops sd_bus_process's return value; a message came back (it is not
                # empty) when something was processed, so there may be more without waiting.
                if not msg.is_empty():
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AgentgwError(
                        f"{action} {name} did not finish within {timeout:g}s ({job} is still "
                        "queued or running)",
                        hint=f"see 'systemctl status {name}' and {logs_command(name)}",
                    )
                # Empty is also what process() returns after it handed a signal to a callback;
                # ours may then sit in sd-bus's queue, unseen by select(): short slices
                # (0.25 s ones cost a restart ~100 ms at the median in bench_control).
                # select(), not pystemd's wait(): it releases the GIL, so other threads run
                # while systemd works (control warms up the proof phases meanwhile).
                select.select([self.bus.get_fd()], [], [], min(remaining, JOB_WAKE_SLICE_S))
        finally:
            self._jobs.pop(job, None)
        log.debug("bus_job_removed", action=action, unit=name, job=job, result=result)
        return result

    # -- transient units -------------------------------------------------------------------
    def start_transient(
        self,
        name: str,
        properties: Mapping[str, object],
        argv: Sequence[str],
        *,
        wait: bool = True,
        timeout: float = DEFAULT_JOB_TIMEOUT,
    ) -> str:
        """Create and start a transient service running ``argv`` under typed ``properties``.

        See :data:`wire.SIGNATURES` for the accepted properties (``IPAddressDeny=["any"]``,
        ``ReadWritePaths=[...]``, ``User="..."``, ``ProtectSystem="strict"`` …). With ``wait``,
        returns the start job's result once it finished (for ``Type=oneshot`` that is after
        the command exited); otherwise the job path.
        """
        props = {"ExecStart": wire.exec_command(argv), **properties}
        encoded = wire.args("ss", name, "fail") + wire.unit_properties(props)
        encoded += wire.args("a(sa(sv))", [])
        self._watch_jobs()
        with mapped("start the transient unit", name):
            reply = self.bus.call_method(
                DEST.encode(), MANAGER_PATH.encode(), MANAGER.encode(), b"StartTransientUnit",
                encoded,
            )
        job = as_str(wire.decode(reply.body))
        if not wait:
            return job
        return self._wait_job(job, "start", name, timeout)

    def run_transient(
        self,
        name: str,
        argv: Sequence[str],
        properties: Mapping[str, object] | None = None,
        *,
        timeout: float = 30.0,
        read_back: Sequence[str] = (),
    ) -> TransientRun:
        """Run ``argv`` to completion in a transient service; its exit status and output.

        Runs as ``Type=oneshot`` with ``RemainAfterExit`` so the exit status can be read after
        the job ends; stdout/stderr go to files this process opened, so they are captured
        whatever the sandbox forbids. ``read_back`` names Service properties to read before
        the unit is stopped and forgotten (what systemd actually applied).
        """
        import tempfile  # here: with shutil, ~5 ms of every command that talks to systemd

        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            props: dict[str, object] = {
                "Type": "oneshot",
                "RemainAfterExit": True,
                "StandardOutputFileDescriptor": out.fileno(),
                "StandardErrorFileDescriptor": err.fileno(),
                "TimeoutStartUSec": int(timeout * 1_000_000),
                # A probe that ignores SIGTERM at the timeout is killed soon after.
                "TimeoutStopUSec": 5_000_000,
                **(properties or {}),
            }
            # Started outside the try: when the start itself fails (a unit of that name
            # exists), there is nothing of ours to clean up.
            job = self.start_transient(name, props, argv, wait=False)
            try:
                result = self._wait_job(job, "start", name, timeout + 10)
                svc = self.unit_properties(
                    name, SERVICE, ["ExecMainCode", "ExecMainStatus", *read_back]
                )
            finally:
                self._forget(name)
            out.seek(0)
            err.seek(0)
            return TransientRun(
                unit=name,
                result=result,
                code=MAIN_CODES.get(as_int(svc["ExecMainCode"]), "unknown"),
                status=as_int(svc["ExecMainStatus"]),
                stdout=out.read().decode(errors="replace"),
                stderr=err.read().decode(errors="replace"),
                properties={k: svc[k] for k in read_back},
            )

    def _forget(self, name: str) -> None:
        """Stop a finished transient unit and clear its failed state, so its name is free."""
        state = self.unit_properties(name, UNIT, ["ActiveState", "LoadState"])
        if state["LoadState"] == "not-found":
            return
        if state["ActiveState"] not in ("inactive", "failed"):
            self.stop(name)
        if self.unit_properties(name, UNIT, ["ActiveState"])["ActiveState"] == "failed":
            self.reset_failed(name)


def logs_command(unit: str) -> str:
    """Where a unit's output is read: a gateway's is in its profile's own journal."""
    if unit.startswith("agent-gateway@"):
        return f"'agentgw logs {profile_of(unit)}'"
    return f"'journalctl -u {unit}'"
