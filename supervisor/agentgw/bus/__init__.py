"""The only importer of pystemd: systemd over D-Bus with str values, named methods, one error map.

``with Systemd() as sd:`` opens one system-bus connection used for every call.
"""

from agentgw.bus import lean

lean.ensure()  # before the first pystemd import: skip pystemd's introspection layer

from agentgw.bus.errmap import bus_error, error_name, mapped  # noqa: E402
from agentgw.bus.facts import ServiceStatus, StartFacts, TransientRun, UnitInfo  # noqa: E402
from agentgw.bus.props import set_properties  # noqa: E402
from agentgw.bus.systemd import SERVICE, UNIT, Systemd  # noqa: E402

__all__ = [
    "SERVICE",
    "UNIT",
    "ServiceStatus",
    "StartFacts",
    "Systemd",
    "TransientRun",
    "UnitInfo",
    "bus_error",
    "error_name",
    "mapped",
    "set_properties",
]
