"""What promote, rollback and restart read of the gateway they just restarted: its alignment,
why it did not start, its health answers.

apply's executor asks through the ``Probe`` protocol (apply/poll.py); the command that builds the
executor (cli, proofs) passes a :class:`GatewayProbe`, so apply never imports observe.

Every read here comes after the restart, so the modules behind them (the status judges, the
start-up diagnosis, the HTTP client) are imported by :meth:`GatewayProbe.warm_up`, which the
executor runs in a thread while the restart job runs (apply.promote.warm_up), not by the
command's start-up: ~12 ms less before the restart (bench_control's "promote overhead" row).
"""

from __future__ import annotations

from agentgw.bus import ServiceStatus, StartFacts
from agentgw.fsio import read_json
from agentgw.model.profile import Profile
from agentgw.model.status import Alignment, HealthAnswer, StartFailure
from agentgw.paths import Layout


class GatewayProbe:
    """Reads of one host's gateways (``layout``) for the promote executor."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def alignment(self, profile: Profile, status: ServiceStatus) -> Alignment:
        """Whether the process ``status`` names runs exactly the release ``current`` points at."""
        from agentgw.observe.status import (
            LAUNCH_RECORD,
            judge_alignment,
            read_environ,
            read_release,
        )

        layout, name = self.layout, profile.name
        return judge_alignment(
            current=str(layout.current(name)),
            unit=status,
            unit_problem="",
            release=read_release(layout.current(name), layout.releases),
            environ=read_environ(status.main_pid),
            launch=read_json(layout.logs(name) / LAUNCH_RECORD),
        )

    def start_failure(self, profile: Profile, facts: StartFacts, since_usec: int) -> StartFailure:
        """Why the unit did not start (readiness waited for, what was seen, the fix), with its
        journal lines since ``since_usec``."""
        from agentgw.observe.startup import READY_RECORD, ReadyRecord, journal_tail, judge_start

        name = profile.name
        ready = ReadyRecord.parse(read_json(self.layout.logs(name) / READY_RECORD).data)
        failure = judge_start(profile, facts, ready)
        return failure.model_copy(update={"log": journal_tail(name, since_usec=since_usec)})

    def health(self, profile: Profile, expect_sha: str | None) -> HealthAnswer:
        """Poll the profile's health check until it answers 200 or its timeout passes."""
        from agentgw.observe.health import wait_healthy

        return wait_healthy(
            str(profile.listen.host),
            profile.listen.port,
            profile.health.path,
            timeout=profile.health.timeout_s,
            expect_sha=expect_sha,
        )

    def warm_up(self) -> None:
        """Import what the reads above use ahead of their use (see the module's doc)."""
        import agentgw.observe.health  # noqa: F401 - imported for their module load only
        import agentgw.observe.startup  # noqa: F401
        import agentgw.observe.status  # noqa: F401
