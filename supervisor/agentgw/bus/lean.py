"""Import pystemd's D-Bus core without running its package ``__init__``.

``import pystemd.dbuslib`` first executes ``pystemd/__init__.py``, which imports the
introspection layer (``systemd1``, ``machine1``, ``base`` and with it lxml): ~30 ms of every
agentgw command, for classes agentgw never uses (it calls methods by name, see
:mod:`agentgw.bus.systemd`). :func:`ensure` registers the package module *unexecuted* — its
``__path__`` is all a submodule import needs — so ``pystemd.dbuslib`` and ``pystemd.dbusexc``
load alone. When pystemd is already imported (fully), nothing changes.

Start-up trick (STYLE.md), called once, from ``agentgw/bus/__init__.py``. Benchmark row:
bench_control's "agentgw status --json, 100 profiles (registry)" (every command that talks to
systemd). It relies on pystemd's package layout, so tests/unit/test_startup_hacks.py pins
pystemd's minor version, checks that the introspection layer stays unloaded, and checks
:data:`agentgw.bus.wire.SIGNATURES` (which stands in for pystemd's signature table) against it.
"""

from __future__ import annotations

import importlib.util
import sys


def ensure() -> None:
    """Make ``pystemd`` importable as a bare package; no-op once it is in ``sys.modules``."""
    if "pystemd" in sys.modules:
        return
    spec = importlib.util.find_spec("pystemd")
    if spec is None or spec.submodule_search_locations is None:
        return  # not installed: the real import below raises the usual ImportError
    sys.modules["pystemd"] = importlib.util.module_from_spec(spec)
