"""agentgw: a supervisor for hosts that run several AI-agent gateways, one per profile."""

__version__ = "0.1.0"
