"""config check's notes for a runtime agentgw did not write: readiness and the listen address."""

from __future__ import annotations

from typing import Any

from agentgw.model.profile import Profile
from agentgw.plan.advice import advise


def profile(**fields: Any) -> Profile:
    return Profile.model_validate(
        {"name": "web", "mode": "cli", "listen": "127.77.0.5:8080", **fields}
    )


def test_the_shipped_runtime_gets_no_notes() -> None:
    """Without AGENT_CLI_MODULE the runtime is agentgw's own demo: nothing to say."""
    assert advise(profile(readiness="notify")) == []


def test_a_runtime_of_its_own_that_listens_where_the_profile_says_gets_none() -> None:
    """Health readiness and arguments naming the listen address: no note."""
    env = {"AGENT_CLI_MODULE": "datasette", "AGENT_CLI_ARGS": "serve --host 127.77.0.5 -p 8080"}
    assert advise(profile(env=env)) == []


def test_notify_and_a_foreign_address_are_pointed_out_with_the_guide() -> None:
    """notify for a server that likely sends no READY=1, and arguments that do not bind the
    profile's address, each get a note naming the fix and the README section."""
    env = {"AGENT_CLI_MODULE": "datasette", "AGENT_CLI_ARGS": "serve --port 9000"}
    notes = advise(profile(env=env, readiness="notify"))
    assert len(notes) == 2
    assert "readiness: health" in notes[0] and "Deploying an existing runtime" in notes[0]
    assert notes[1].startswith("AGENT_CLI_ARGS does not name 127.77.0.5:8080")
