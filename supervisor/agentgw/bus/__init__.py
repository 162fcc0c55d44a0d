"""The only importer of pystemd: systemd over D-Bus with str values, named methods, one error map.

``with Systemd() as sd:`` opens one system-bus connection used for every call.
"""

from agentgw.bus.errmap import bus_error, error_name, mapped
from agentgw.bus.systemd import (
    SERVICE,
    UNIT,
    ServiceStatus,
    Systemd,
    TransientRun,
    UnitInfo,
)

__all__ = [
    "SERVICE",
    "UNIT",
    "ServiceStatus",
    "Systemd",
    "TransientRun",
    "UnitInfo",
    "bus_error",
    "error_name",
    "mapped",
]
