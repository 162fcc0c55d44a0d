"""Notes for a profile that runs a runtime agentgw did not write (pure).

``agentgw config check`` prints them under the profile; none is an error. They point at the
README's "Deploying an existing runtime".
"""

from __future__ import annotations

import shlex

from agentgw.model.profile import Profile

GUIDE = "README: Deploying an existing runtime"


def advise(profile: Profile) -> list[str]:
    """What looks wrong for a runtime of its own (``AGENT_CLI_MODULE`` set), and the fix."""
    module = profile.env.get("AGENT_CLI_MODULE")
    if profile.mode != "cli" or not module:
        return []
    notes = []
    if profile.readiness == "notify":
        notes.append(
            f"readiness: notify waits for READY=1 from {module}; most servers send none (the "
            f"start then times out after {profile.start_timeout_s:g}s): readiness: health "
            f"starts it once GET {profile.health.path} answers ({GUIDE})"
        )
    try:
        args = shlex.split(profile.env.get("AGENT_CLI_ARGS", ""))
    except ValueError:
        args = []
    listen = profile.listen
    if str(listen.port) not in " ".join(args) or str(listen.host) not in " ".join(args):
        notes.append(
            f"AGENT_CLI_ARGS does not name {listen}: the runtime's own arguments choose where "
            f"it listens, and its health check and firewall are on {listen} ({GUIDE})"
        )
    return notes
