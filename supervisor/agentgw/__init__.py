"""agentgw: a supervisor for hosts that run several AI-agent gateways, one per profile."""

import os

__version__ = "0.1.0"

# pydantic looks for third-party plugins through importlib.metadata entry points the first time
# a model is built: ~13 ms of every command, and agentgw uses no pydantic plugin. The switch is
# pydantic's own (docs: "Pydantic Plugins"); an operator who sets it keeps their value.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
