"""promote, rollback and restart of one profile over D-Bus, with proofs and automatic rollback.

promote = verify release -> lock -> intent -> record siblings -> flip ``current`` (keeping
``previous``) -> restart -> ready (active, launch record of the new pid) -> alignment proof ->
health -> commit. Any failure after the flip flips back, restarts, proves the previous release
aligned and records ``rolled_back``. A command that finds an intent left by a killed one undoes
it first (the profile returns to the release it ran before), and says so.

The steps and their order are plan/promote.py's (pure); apply/promote.py runs them. This module
checks what the operation may do, takes the lock and records the outcome.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

from agentgw.apply.intent import clear_intent, read_intent
from agentgw.apply.lock import profile_lock, releases_lock
from agentgw.apply.outcome import (
    Run,
    SiblingCheck,
    Summary,
    intent_ident,
    record_outcome,
    record_recovery,
    render_outcome,
)
from agentgw.apply.poll import Control, Failed, Probe, check_aligned
from agentgw.apply.promote import Executor, Journal, Move, link_name
from agentgw.apply.siblings import SiblingWatch, changed_siblings, describe_siblings
from agentgw.config.load import Config
from agentgw.errors import AgentgwError, Exit, die, usage
from agentgw.logroll import Retention
from agentgw.model.control import Outcome
from agentgw.model.history import Intent
from agentgw.model.profile import Profile
from agentgw.model.release import ReleasePolicy
from agentgw.paths import Layout, unit_name
from agentgw.plan.promote import Observed, as_phase
from agentgw.store.release import (
    check_promotable,
    current_manifest,
    find_release,
    read_manifest,
)


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


class Controller:
    def __init__(
        self,
        layout: Layout,
        config: Config,
        sd: Control,
        probe: Probe,
        out: Callable[[str], None],
    ) -> None:
        """``sd`` acts on the units; ``probe`` reads the gateways (observe.gateway.GatewayProbe:
        the caller passes it, as apply does not import observe)."""
        self.layout = layout
        self.config = config
        self.sd = sd
        self.probe = probe
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
            siblings = SiblingWatch.listed(self.sd, name)
            # A restart changes no link: it starts where a promote is after its flip.
            move = Move("restart", profile, current, current)
            executor = Executor(self.layout, self.sd, self.probe, move,
                                Journal(self.layout.intents), run)
            executor.meanwhile = siblings.read_meanwhile
            try:
                executor.drive(move.course("flipped"), Observed("ok"))
            except Failed as exc:
                raise AgentgwError(
                    f"restart of {name} failed: {exc}", hint=f"agentgw status {name}"
                ) from exc
            summary = Summary("restart", name, current, current, "ok", recovered=recovered)
            return self.finish(run, summary, siblings)

    # -- the switch ------------------------------------------------------------------------
    def switch(self, op: Literal["promote", "rollback"], profile: Profile, target: str) -> Outcome:
        name = profile.name
        with profile_lock(self.layout.locks, name, op):
            journal = Journal(self.layout.intents)
            journal.mark("locked")
            recovered = self.recover(profile)
            if not self.layout.env_file(name).is_file():
                raise usage(f"profile {name} is not applied on this host", hint="agentgw apply")
            move = Move(op, profile, target, previous=link_name(self.layout.current(name)),
                        prior_previous=link_name(self.layout.previous(name)))
            journal.begin(move)
            run = Run(self.out)
            siblings = SiblingWatch.listed(self.sd, name)
            executor = Executor(self.layout, self.sd, self.probe, move, journal, run)
            executor.meanwhile = siblings.read_meanwhile
            ending = executor.drive(move.course("intent"), Observed("ok"))
            ident = intent_ident(journal.intent) if journal.intent is not None else None
            summary = Summary(move.op, name, target, move.previous, ending.result,
                              ending.reason, ending.start, ident, recovered)
            return self.finish(run, summary, siblings)

    def finish(self, run: Run, summary: Summary, watch: SiblingWatch) -> Outcome:
        """Check the siblings, record the outcome in the history, drop the intent."""
        with run.phase("siblings") as d:
            changed, own = changed_siblings(self.sd, self.layout, watch, run.started)
            siblings = watch.read()
            d.append(describe_siblings(siblings, changed, own))
        outcome = render_outcome(run, summary, SiblingCheck(siblings, changed, own))
        record_outcome(self.layout.history, run, summary, not changed, self.retention())
        clear_intent(self.layout.intents, summary.profile)
        return outcome

    # -- the way back ----------------------------------------------------------------------
    def recover(self, profile: Profile) -> str:
        """Repair what a killed command left: finish a committed one, undo any other."""
        intent = read_intent(self.layout.intents, profile.name)
        if intent is None:
            return ""
        phase = as_phase(intent.phase)
        untouched = False
        if intent.phase != "committed":
            self.out(
                f"recovering: a {intent.op} to {intent.target} was interrupted at "
                f"{intent.phase}; returning to {intent.previous or 'no release'}"
            )
            untouched = self.untouched(profile, intent)
        move = Move.of_intent(intent, profile)
        journal = Journal(self.layout.intents, intent)
        executor = Executor(self.layout, self.sd, self.probe, move, journal, Run(self.out))
        ending = executor.drive(move.course(phase), Observed("killed", untouched=untouched))
        message = record_recovery(self.layout.history, intent, ending.result, self.retention())
        clear_intent(self.layout.intents, profile.name)
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
            check_aligned(self.probe, profile, self.sd.service_status(unit_name(name)))
        except Failed:
            return False
        return True

    # -- helpers ---------------------------------------------------------------------------
    def profile(self, name: str) -> Profile:
        return self.config.profile(name)

    def retention(self) -> Retention:
        return self.config.host.rotation.retention()

    def policy(self) -> ReleasePolicy:
        return ReleasePolicy.of_host(self.config.host)


def exit_code(outcome: Outcome) -> int:
    if outcome.result != "ok":
        return int(Exit.FAILED)
    if not outcome.siblings_unchanged:
        return int(Exit.VERIFY)
    return int(Exit.OK)
