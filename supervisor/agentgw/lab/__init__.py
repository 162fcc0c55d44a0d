"""The lab: a disposable systemd + D-Bus booted by systemd-nspawn over an overlay of the host root.

See ../shared/LAB.md. Every write inside lands in a tmpfs and is thrown away on ``down``.
"""

from agentgw.lab.machine import Lab
from agentgw.lab.spec import LabSpec, check_available, why_unavailable

__all__ = ["Lab", "LabSpec", "check_available", "why_unavailable"]
