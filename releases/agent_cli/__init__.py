"""agent_cli: the demo agent runtime that agentgw's demos and tests ship as releases (stdlib only).

``python -m agent_cli.main gateway run --replace`` serves a profile's gateway over HTTP on
AGENT_LISTEN; ``agent_cli/mcp_server.py`` is the script-mode entrypoint of the ``mcp`` profile.
"""
