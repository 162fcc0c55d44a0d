"""Pure, frozen pydantic models of agentgw's configuration (no I/O; unknown keys are errors)."""

from agentgw.model.fields import RESERVED_ENV, RESERVED_ENV_PREFIX, Listen, want_profile_name
from agentgw.model.host import SHARED_USER, HostConfig, Registry, Sandbox
from agentgw.model.profile import Health, Profile, Resources

__all__ = [
    "RESERVED_ENV",
    "RESERVED_ENV_PREFIX",
    "SHARED_USER",
    "Health",
    "HostConfig",
    "Listen",
    "Profile",
    "Registry",
    "Resources",
    "Sandbox",
    "want_profile_name",
]
