#!/usr/bin/env bash
# The main job, run inside the lab by `make demo`: every step prints what it shows.
set -euo pipefail
VENV=${VENV:-/opt/agentgw/venv}
AGENTGW="$VENV/bin/agentgw"
step() { printf '\n== %s\n' "$*"; }

step "the lab is a real systemd"
systemctl is-system-running
readlink /proc/1/exe
systemctl --version | head -1

step "agentgw answers inside it"
"$AGENTGW" --version
"$AGENTGW" --help
