"""agentgw: a supervisor for hosts that run several AI-agent gateways, one per profile."""

import os

__version__ = "0.1.0"

# Start-up trick (STYLE.md), the only one at package import: pydantic looks for third-party
# plugins through importlib.metadata entry points the first time a model is built, ~13 ms of
# every command, and agentgw uses no pydantic plugin. Benchmark row: bench_control's
# "agentgw status --json, 100 profiles (registry)". The switch is pydantic's own (docs:
# "Pydantic Plugins"); an operator who sets it keeps their value. Pinned by
# tests/unit/test_startup_hacks.py.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
