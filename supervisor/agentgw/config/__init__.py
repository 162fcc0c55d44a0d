"""Load the host's configuration files into validated, frozen models."""

from agentgw.config.load import GATEWAYS_DIR, HOST_FILE, Config, load_config

__all__ = ["GATEWAYS_DIR", "HOST_FILE", "Config", "load_config"]
