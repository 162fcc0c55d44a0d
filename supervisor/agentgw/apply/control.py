"""promote, rollback and restart of one profile over D-Bus, with proofs and automatic rollback.

promote = verify release -> lock -> intent -> record siblings -> flip ``current`` (keeping
``previous``) -> restart -> ready (active, launch record of the new pid) -> alignment proof ->
health -> commit. Any failure after the flip flips back, restarts, proves the previous release
aligned and records ``rolled_back``. A command that finds an intent left by a killed one undoes
it first (the profile returns to the release it ran before), and says so.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

from agentgw.apply.history import append_history, read_history
from agentgw.apply.intent import clear_intent, read_intent, set_phase, write_intent
from agentgw.apply.lock import is_locked, profile_lock
from agentgw.apply.release import releases_lock
from agentgw.bus import ServiceStatus, StartFacts, UnitInfo
from agentgw.config.load import Config
from agentgw.errors import AgentgwError, Exit, die, usage
from agentgw.fsio import clean, flip_symlink, fsync_dir, parse_iso, read_json
from agentgw.log import get_logger
from agentgw.model.control import Outcome, PhaseTime, Sibling
from agentgw.model.history import Intent
from agentgw.model.profile import Profile
from agentgw.model.release import ReleasePolicy
from agentgw.model.status import StartFailure
from agentgw.observe.release import (
    check_promotable,
    current_manifest,
    find_release,
    read_manifest,
)
from agentgw.observe.startup import READY_RECORD, ReadyRecord, journal_tail, judge_start
from agentgw.observe.status import judge_alignment, read_environ, read_release
from agentgw.paths import Layout, profile_of, unit_name
from agentgw.plan.units import STOP_MARGIN_S

log = get_logger(__name__)

# Set to a phase name to make the command stop there (for the kill -9 recovery tests).
FAULT_PAUSE_ENV = "AGENTGW_FAULT_PAUSE"
READY_GRACE_S = 30.0


class Control(Protocol):
    """What control needs from bus/ (the Systemd object)."""

    def service_status(self, name: str) -> ServiceStatus: ...
    def list_units(self, patterns: Sequence[str], states: Sequence[str] = ()) -> list[UnitInfo]: ...
    def main_pid(self, name: str) -> int: ...
    def restart(self, name: str, *, timeout: float = 90.0) -> str: ...
    def start(self, name: str, *, timeout: float = 90.0) -> str: ...
    def stop(self, name: str, *, timeout: float = 90.0) -> str: ...
    def reset_failed(self, name: str) -> None: ...
    def start_facts(self, name: str) -> StartFacts: ...
    def enable(self, names: list[str]) -> None: ...


class Failed(Exception):
    """A step of the forward path failed; the caller rolls back.

    ``start`` says why the unit did not start, when that was the step (with its log lines).
    """

    def __init__(self, message: str, start: StartFailure | None = None) -> None:
        super().__init__(message)
        self.start = start


def release_target(name: str) -> str:
    """What ``current`` points at: relative, so the tree can be inspected from another root."""
    return f"../../releases/{name}"


def link_name(link: Path) -> str | None:
    """The release dir name a current/previous symlink points at (None when absent)."""
    if not link.is_symlink():
        return None
    return Path(os.readlink(link)).name


def check_links(layout: Layout, name: str) -> None:
    """``current`` and ``previous`` are agentgw's symlinks or absent; anything else was made by
    hand, and is neither replaced nor deleted (it may hold someone's work): say how to repair."""
    for link in (layout.current(name), layout.previous(name)):
        if link.is_symlink() or not os.path.lexists(link):
            continue
        kind = "a directory" if link.is_dir() else "a file" if link.is_file() else "not a symlink"
        raise die(
            f"{link} is {kind}, not agentgw's symlink to a release (made by hand?)",
            hint=f"move it aside (mv {link} {link}.by-hand), then run the command again: "
            f"agentgw never deletes it",
        )


def fault_pause(phase: str) -> None:
    if os.environ.get(FAULT_PAUSE_ENV) == phase:
        print(f"agentgw: paused at {phase}", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)


def warm_up() -> None:
    """Import and build what the phases after the restart need (the HTTP client of the health
    check, the outcome and history records), in a thread, while the restart job runs: the wait
    for it releases the GIL, and a promote spends ~200 ms there. Joined before those phases."""
    # An error here is not reported: it resurfaces where the module or model is used.
    with contextlib.suppress(Exception):
        import agentgw.observe.health  # noqa: F401 - imported for its module load only
        from agentgw.model.history import HistoryRecord

        Outcome.model_rebuild(force=True)
        HistoryRecord.model_rebuild(force=True)


@dataclass
class Run:
    """The phases of one operation, timed, reported as they finish."""

    out: Callable[[str], None]
    phases: list[PhaseTime] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    @contextmanager
    def phase(self, name: str) -> Iterator[list[str]]:
        detail: list[str] = []
        t0 = time.perf_counter()
        yield detail
        ms = (time.perf_counter() - t0) * 1000
        text = "; ".join(detail)
        self.phases.append(PhaseTime(name=name, ms=round(ms, 1), detail=text))
        self.out(f"  {name:<10} {ms:8.1f} ms  {text}")


class Controller:
    def __init__(
        self, layout: Layout, config: Config, sd: Control, out: Callable[[str], None]
    ) -> None:
        self.layout = layout
        self.config = config
        self.sd = sd
        self.out = out

    # -- entry points ------------------------------------------------------------------------
    def promote(self, name: str, ref: str, *, allow_downgrade: bool = False) -> Outcome:
        profile = self.profile(name)
        check_links(self.layout, name)
        release = find_release(self.layout, ref)
        manifest = read_manifest(release)
        # Shared: gc cannot remove the release between its verification and the flip.
        with releases_lock(self.layout, shared=True):
            check_promotable(
                self.layout,
                manifest,
                self.policy(),
                current_manifest(self.layout, name),
                allow_downgrade,
            )
            return self.switch("promote", profile, release.name)

    def rollback(self, name: str, to: str | None = None) -> Outcome:
        profile = self.profile(name)
        check_links(self.layout, name)
        if to is None:
            target = link_name(self.layout.previous(name))
            if target is None:
                raise usage(
                    f"profile {name} has no previous release to roll back to",
                    hint=f"name one: agentgw rollback {name} --to SHA",
                )
            release = self.layout.releases / target
            if not release.is_dir():
                raise die(
                    f"previous -> {target}, which is no longer in {self.layout.releases} "
                    "(removed by hand?)",
                    hint=f"roll back to a release that is there: agentgw rollback {name} --to "
                    "SHA (agentgw release list)",
                )
        else:
            release = find_release(self.layout, to)
        manifest = read_manifest(release)
        with releases_lock(self.layout, shared=True):
            check_promotable(self.layout, manifest, self.policy(), None, True)
            return self.switch("rollback", profile, release.name)

    def restart(self, name: str) -> Outcome:
        profile = self.profile(name)
        check_links(self.layout, name)
        current = link_name(self.layout.current(name))
        if current is None:
            raise usage(f"profile {name} has no release promoted", hint="agentgw promote")
        if not (self.layout.releases / current).is_dir():
            raise die(
                f"current -> {current}, which is no longer in {self.layout.releases} "
                "(removed by hand?)",
                hint=f"promote a release that is there: agentgw promote {name} SHA",
            )
        with profile_lock(self.layout.locks, name, "restart"):
            recovered = self.recover(profile)
            run = Run(self.out)
            siblings = self.siblings(name)
            try:
                self.start_and_prove(run, profile, current)
            except Failed as exc:
                raise AgentgwError(
                    f"restart of {name} failed: {exc}", hint=f"agentgw status {name}"
                ) from exc
            return self.finish(
                run, "restart", profile, current, current, "ok", "", siblings, recovered
            )

    # -- the switch ------------------------------------------------------------------------
    def switch(self, op: str, profile: Profile, target: str) -> Outcome:
        name = profile.name
        with profile_lock(self.layout.locks, name, op):
            fault_pause("locked")
            recovered = self.recover(profile)
            current_link, previous_link = self.layout.current(name), self.layout.previous(name)
            previous = link_name(current_link)
            if not self.layout.env_file(name).is_file():
                raise usage(f"profile {name} is not applied on this host", hint="agentgw apply")
            intent = write_intent(
                self.layout.intents,
                op=op,
                profile=name,
                target=target,
                previous=previous,
                prior_previous=link_name(previous_link),
                phase="intent",
            )
            fault_pause("intent")
            run = Run(self.out)
            siblings = self.siblings(name)
            with run.phase("flip") as d:
                if previous is not None and previous != target:
                    flip_symlink(previous_link, release_target(previous))
                flip_symlink(current_link, release_target(target))
                if previous == target:
                    d.append(f"current already -> {target} (restart and prove it again)")
                else:
                    d.append(f"current -> {target}"
                             + (f", previous -> {previous}" if previous else ""))
            intent = set_phase(self.layout.intents, intent, "flipped")
            fault_pause("flipped")
            try:
                self.start_and_prove(run, profile, target, intent=intent)
            except Exception as exc:  # noqa: BLE001 - after the flip, anything rolls back
                reason = failure_reason(exc)
                start = exc.start if isinstance(exc, Failed) else None
                self.out(f"  failed: {reason}; rolling back")
                if start is not None and start.log:
                    self.out(f"  last log lines of {unit_name(name)}:")
                    for line in start.log:
                        self.out(f"    | {line}")
                result = self.undo(run, profile, intent)
                outcome = self.finish(
                    run,
                    op,
                    profile,
                    target,
                    previous,
                    result,
                    reason,
                    siblings,
                    recovered,
                    intent=intent,
                    start=start,
                )
                return outcome
            set_phase(self.layout.intents, intent, "committed")
            return self.finish(
                run, op, profile, target, previous, "ok", "", siblings, recovered, intent=intent
            )

    def start_and_prove(
        self, run: Run, profile: Profile, release: str, intent: Intent | None = None
    ) -> None:
        """Restart the unit and prove it: ready, aligned to ``release``, healthy."""
        unit = unit_name(profile.name)
        # The restart job includes the stop, and a draining (or SIGTERM-ignoring) gateway may
        # take the unit's whole TimeoutStopSec before the new one even starts.
        stop_s = profile.stop_timeout_s + STOP_MARGIN_S
        timeout = stop_s + profile.start_timeout_s + READY_GRACE_S
        with run.phase("restart") as d:
            warm = threading.Thread(target=warm_up, name="warm-up", daemon=True)
            try:
                self.sd.enable([unit])
                self.reset_failed(unit)
                warm.start()
                result = self.sd.restart(unit, timeout=timeout)
            except AgentgwError as exc:
                raise Failed(exc.message) from exc
            finally:
                if warm.ident is not None:
                    warm.join()
            d.append(f"job {result}")
        if intent is not None:
            intent = set_phase(self.layout.intents, intent, "restarted")
        fault_pause("restarted")
        if result != "done":
            raise self.start_failed(profile, run.started, f"restart job {result}")
        with run.phase("ready") as d:
            status = self.wait_ready(profile, run.started, timeout)
            d.append(f"pid {status.main_pid}")
        with run.phase("aligned") as d:
            alignment = self.alignment(profile, status)
            d.append(alignment)
        if intent is not None:
            set_phase(self.layout.intents, intent, "health-wait")
        fault_pause("health-wait")
        with run.phase("healthy") as d:
            from agentgw.observe.health import wait_healthy

            manifest = read_manifest(self.layout.releases / release)
            health = wait_healthy(
                str(profile.listen.host),
                profile.listen.port,
                profile.health.path,
                timeout=profile.health.timeout_s,
                expect_sha=manifest.sha,
            )
            d.append(health.reason)
        if not health.ok:
            raise Failed(f"health check: {health.reason}")
        if profile.health.settle_s > 0:
            with run.phase("settle") as d:
                d.append(self.settle(profile, unit, status, manifest.sha))

    def settle(self, profile: Profile, unit: str, ready: ServiceStatus, sha: str) -> str:
        """Hold ``health.settle_s``: the process must stay (same MainPID, no restart) and
        answer again at the end, so a release that dies right after its first answer is
        rolled back instead of committed."""
        from agentgw.observe.health import wait_healthy

        settle = profile.health.settle_s
        deadline = time.monotonic() + settle
        while True:
            now = self.sd.service_status(unit)
            if now.main_pid != ready.main_pid or now.n_restarts != ready.n_restarts:
                raise Failed(
                    f"did not settle: pid {ready.main_pid} -> {now.main_pid or 'none'} "
                    f"({now.active_state}/{now.sub_state}, restarts {now.n_restarts}) within "
                    f"{settle:g}s of its first healthy answer"
                )
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        health = wait_healthy(
            str(profile.listen.host), profile.listen.port, profile.health.path,
            timeout=profile.health.timeout_s, expect_sha=sha,
        )
        if not health.ok:
            raise Failed(f"health check after settling {settle:g}s: {health.reason}")
        return f"pid {ready.main_pid} kept running {settle:g}s and answers again"

    def reset_failed(self, unit: str) -> None:
        """Reset the failed state and the start rate limit, so a crash loop of the release we
        are leaving cannot block the restart of the one we are going to. A unit systemd has not
        loaded has neither: nothing to reset."""
        with contextlib.suppress(AgentgwError):
            self.sd.reset_failed(unit)

    def wait_ready(self, profile: Profile, since: float, timeout: float) -> ServiceStatus:
        """Active, and the launcher's record names the new MainPID."""
        name, unit = profile.name, unit_name(profile.name)
        deadline = time.monotonic() + timeout
        launch = self.layout.logs(name) / "launch.json"
        while True:
            status = self.sd.service_status(unit)
            if status.active_state in ("failed", "inactive") or status.sub_state == "auto-restart":
                raise self.start_failed(
                    profile, since, f"unit {status.active_state}/{status.sub_state}"
                )
            if status.active_state == "active" and status.main_pid:
                record = read_json(launch).data
                if isinstance(record, dict) and record.get("pid") == status.main_pid:
                    return status
            if time.monotonic() > deadline:
                raise Failed(
                    f"not ready within {timeout:g}s ({status.active_state}/"
                    f"{status.sub_state}, no launch record of the new pid)"
                )
            time.sleep(0.02)

    def alignment(self, profile: Profile, status: ServiceStatus) -> str:
        name = profile.name
        verdict = judge_alignment(
            current=str(self.layout.current(name)),
            unit=status,
            unit_problem="",
            release=read_release(self.layout.current(name), self.layout.releases),
            environ=read_environ(status.main_pid),
            launch=read_json(self.layout.logs(name) / "launch.json"),
        )
        if verdict.state != "yes":
            raise Failed(f"alignment: {verdict.reason}")
        return verdict.reason

    def start_failed(self, profile: Profile, since: float, what: str) -> Failed:
        """The unit did not start: why (readiness waited for, what was seen, the fix), with
        its last journal lines."""
        name = profile.name
        try:
            facts = self.sd.start_facts(unit_name(name))
        except AgentgwError as exc:
            return Failed(f"{what}: {exc.message}")
        ready = ReadyRecord.parse(read_json(self.layout.logs(name) / READY_RECORD).data)
        failure = judge_start(profile, facts, ready)
        start = facts.main_start_usec or int(since * 1e6)
        failure = failure.model_copy(update={"log": journal_tail(name, since_usec=start)})
        return Failed(f"{what}: {failure.render()}", failure)

    # -- the way back ----------------------------------------------------------------------
    def undo(self, run: Run, profile: Profile, intent: Intent) -> str:
        """Put back ``current`` and ``previous`` as they were and prove the old release."""
        name = profile.name
        with run.phase("flip-back") as d:
            self.restore_links(intent)
            d.append(f"current -> {intent.previous or '(none)'}")
        if intent.previous is None:
            with run.phase("stop"):
                self.sd.stop(unit_name(name))
            return "rolled_back"
        try:
            self.start_and_prove(run, profile, intent.previous)
        except Exception as exc:  # noqa: BLE001 - reported, and recorded as failed
            self.out(f"  the previous release {intent.previous} did not come back: "
                     f"{failure_reason(exc)}")
            return "failed"
        return "rolled_back"

    def restore_links(self, intent: Intent) -> None:
        current = self.layout.current(intent.profile)
        previous = self.layout.previous(intent.profile)
        if intent.previous is None:
            current.unlink(missing_ok=True)
            fsync_dir(current.parent)
        else:
            flip_symlink(current, release_target(intent.previous))
        if intent.prior_previous is None:
            previous.unlink(missing_ok=True)
        else:
            flip_symlink(previous, release_target(intent.prior_previous))

    def recover(self, profile: Profile) -> str:
        """Repair what a killed command left: finish a committed one, undo any other."""
        intent = read_intent(self.layout.intents, profile.name)
        if intent is None:
            return ""
        ident = f"{intent.pid}:{intent.started}"
        if intent.phase == "committed":
            done = any(
                r.detail.get("intent") == ident
                for r in read_history(self.layout.history, profile.name)
            )
            if not done:
                append_history(
                    self.layout.history,
                    intent.op,
                    "ok",
                    profile.name,
                    release=intent.target,
                    previous=intent.previous,
                    intent=ident,
                    note="committed by recovery",
                )
            clear_intent(self.layout.intents, profile.name)
            message = f"recovered: finished the interrupted {intent.op} to {intent.target}"
        else:
            run = Run(self.out)
            self.out(
                f"recovering: a {intent.op} to {intent.target} was interrupted at "
                f"{intent.phase}; returning to {intent.previous or 'no release'}"
            )
            result = (
                "rolled_back"
                if self.untouched(profile, intent)
                else self.undo(run, profile, intent)
            )
            append_history(
                self.layout.history,
                "recover",
                result,
                profile.name,
                interrupted=intent.op,
                target=intent.target,
                phase=intent.phase,
                restored=intent.previous,
                intent=ident,
            )
            clear_intent(self.layout.intents, profile.name)
            message = (
                f"recovered: undid the interrupted {intent.op} to {intent.target} "
                f"(at {intent.phase}); {profile.name} runs {intent.previous} ({result})"
            )
        self.out(message)
        return message

    def untouched(self, profile: Profile, intent: Intent) -> bool:
        """The links are as before the interrupted command and the unit runs aligned on them,
        so there is nothing to undo (killed before its flip)."""
        name = profile.name
        if link_name(self.layout.current(name)) != intent.previous:
            return False
        if link_name(self.layout.previous(name)) != intent.prior_previous:
            return False
        if intent.previous is None:
            return True
        try:
            self.alignment(profile, self.sd.service_status(unit_name(name)))
        except Failed:
            return False
        return True

    # -- bookkeeping -----------------------------------------------------------------------
    def siblings(self, name: str) -> list[Sibling]:
        """MainPID and process start time of every other running gateway: one ListUnits call,
        then one MainPID read per running instance."""
        out = []
        for unit in self.sd.list_units(["agent-gateway@*.service"], ["active", "reloading"]):
            if unit.name == unit_name(name):
                continue
            pid = self.sd.main_pid(unit.name)
            try:
                started = psutil.Process(pid).create_time() if pid else 0.0
            except psutil.Error:
                continue
            if pid:
                out.append(Sibling(unit=unit.name, pid=pid, started=started))
        return out

    def changed_siblings(self, before: list[Sibling], since: float) -> tuple[list[str], list[str]]:
        """Siblings whose MainPID or start time moved: (ours to answer for, their own ops).

        A sibling restarted by its own agentgw operation meanwhile (it holds its profile lock,
        has an intent, or logged a history record since ``since``) was not disturbed by us:
        promotes of different profiles may run concurrently.
        """
        changed, own = [], []
        for sib in before:
            pid = self.sd.main_pid(sib.unit)
            try:
                started = psutil.Process(pid).create_time() if pid else 0.0
            except psutil.Error:
                started = 0.0
            if pid == sib.pid and started == sib.started:
                continue
            text = f"{sib.unit}: pid {sib.pid} -> {pid}"
            op = self.own_operation(profile_of(sib.unit), since)
            if op:
                own.append(f"{text} ({op})")
            else:
                changed.append(text)
        return changed, own

    def own_operation(self, name: str, since: float) -> str:
        """Which agentgw operation of profile ``name`` ran since ``since``; "" if none did."""
        if is_locked(self.layout.locks, name):
            return "its own agentgw operation holds its lock"
        intent = read_intent(self.layout.intents, name)
        if intent is not None:
            return f"its own {intent.op}, interrupted at {intent.phase}"
        for record in reversed(read_history(self.layout.history, name)):
            at = parse_iso(record.time)
            if at is None or at < since - 1:  # history times have whole seconds
                break
            return f"its own {record.action} ({record.result})"
        return ""

    def finish(
        self,
        run: Run,
        op: str,
        profile: Profile,
        release: str,
        previous: str | None,
        result: str,
        reason: str,
        siblings: list[Sibling],
        recovered: str,
        intent: Intent | None = None,
        start: StartFailure | None = None,
    ) -> Outcome:
        with run.phase("siblings") as d:
            changed, own = self.changed_siblings(siblings, run.started)
            d.append(describe_siblings(siblings, changed, own))
        outcome = Outcome.model_validate(
            {
                "op": op,
                "profile": profile.name,
                "release": release,
                "previous": previous,
                "result": result,
                "reason": reason,
                "phases": run.phases,
                "siblings_before": siblings,
                "siblings_unchanged": not changed,
                "siblings_changed": changed,
                "siblings_own_ops": own,
                "recovered": recovered,
                "alignment": next(
                    (p.detail for p in reversed(run.phases) if p.name == "aligned"), ""
                ),
                "start_failure": start,
            }
        )
        detail = {
            "release": release,
            "previous": previous,
            "reason": reason,
            "phases": {p.name: p.ms for p in run.phases},
            "siblings_unchanged": not changed,
        }
        if intent is not None:
            detail["intent"] = f"{intent.pid}:{intent.started}"
        if start is not None:
            detail["start_failure"] = start.model_dump()
        append_history(self.layout.history, op, result, profile.name, **detail)
        clear_intent(self.layout.intents, profile.name)
        fault_pause("committed")
        return outcome

    # -- helpers ---------------------------------------------------------------------------
    def profile(self, name: str) -> Profile:
        return self.config.profile(name)

    def policy(self) -> ReleasePolicy:
        return ReleasePolicy.of_host(self.config.host)


def failure_reason(exc: Exception) -> str:
    """Why a step failed, for the output and the history record: agentgw's own message, or the
    type and text of anything else (a gateway's answer can break a parser), made printable."""
    if isinstance(exc, Failed | AgentgwError):
        return str(exc)
    log.warning("promote_unexpected_error", error=type(exc).__name__, exc_info=True)
    return f"unexpected {type(exc).__name__}: {clean(str(exc), 300)}"


def describe_siblings(
    siblings: list[Sibling], changed: list[str], own: Sequence[str] = ()
) -> str:
    """The siblings phase's line: what moved under us, else what stayed (and what moved by
    its own operation, which is not counted against this one)."""
    if changed:
        return "CHANGED: " + ", ".join(changed)
    mine = "; restarted by their own operation: " + ", ".join(own) if own else ""
    kept = len(siblings) - len(own)
    if not siblings:
        return "unchanged: none running"
    if kept > 4:
        return f"unchanged: MainPID and start time of {kept} running siblings{mine}"
    same = [s for s in siblings if not any(o.startswith(f"{s.unit}:") for o in own)]
    return "unchanged: " + (", ".join(f"{s.unit} pid {s.pid}" for s in same) or "none") + mine


def exit_code(outcome: Outcome) -> int:
    if outcome.result != "ok":
        return int(Exit.FAILED)
    if not outcome.siblings_unchanged:
        return int(Exit.VERIFY)
    return int(Exit.OK)
