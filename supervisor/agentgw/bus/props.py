"""Setting properties of a unit that exists (``systemctl set-property``), on a
:class:`agentgw.bus.systemd.Systemd` connection.

A function beside that class rather than a method of it: the class's module is at the size
limit. Properties are typed by :data:`agentgw.bus.wire.SIGNATURES`, as for transient units.
"""

from __future__ import annotations

from collections.abc import Mapping

from agentgw.bus import wire
from agentgw.bus.errmap import mapped
from agentgw.bus.systemd import DEST, MANAGER, MANAGER_PATH, Systemd


def set_properties(
    sd: Systemd, name: str, properties: Mapping[str, object], *, runtime: bool = True
) -> None:
    """SetUnitProperties: ``runtime`` ones last until the unit is unloaded (``--runtime``: a
    drop-in under /run); polkit's action is ``org.freedesktop.systemd1.manage-units`` with
    ``verb`` ``set-property`` for callers other than root."""
    encoded = wire.args("sb", name, runtime) + wire.unit_properties(properties)
    with mapped("set properties of", name):
        sd.bus.call_method(
            DEST.encode(), MANAGER_PATH.encode(), MANAGER.encode(), b"SetUnitProperties",
            encoded,
        )
