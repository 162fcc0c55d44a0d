#!/usr/bin/env bash
# The main job, run inside the lab by `make demo` (a disposable systemd; nothing reaches the
# host). Every step prints what it shows.
set -euo pipefail
VENV=${VENV:-/opt/agentgw/venv}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$VENV/bin:$PATH"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
# Commands whose non-zero exit is the point of the step.
expect() { local want=$1; shift; printf '$ %s   # expect exit %s\n' "$*" "$want"; set +e; "$@"; local rc=$?; set -e
  [ "$rc" = "$want" ] || { echo "demo: expected exit $want, got $rc" >&2; exit 1; }; }

step "the lab is a real systemd"
run systemctl is-system-running
systemctl --version | head -1

step "init: template unit, launcher, state dirs, default config"
run agentgw init
mkdir -p /etc/agentgw/secrets/core /etc/agentgw/secrets/api
echo "demo-chat-token" > /etc/agentgw/secrets/core/chat-token
echo "demo-provider-key" > /etc/agentgw/secrets/api/provider-key
chmod -R go-rwx /etc/agentgw/secrets

step "signed releases: a signing key, trusted by the host"
run agentgw release keygen --out /etc/agentgw/keys/release-signing.key
cat > /etc/agentgw/agentgw.yaml <<YAML
isolation: production
require_signature: true
trusted_keys:
  - /etc/agentgw/keys/release-signing.key.pub
# No sandbox: settings. KVM does not work on these machines, so the broker runs each job under
# gVisor in a unit of its own (agentgw-job@.service); QEMU TCG, which is not a security
# boundary, stays off (allow_emulation: false, the default).
YAML
cp "$REPO"/gateways/{core,api,mcp}.yaml /etc/agentgw/gateways/
run agentgw config check

step "build the demo runtime and its broken variants, add them as signed releases"
BUILD=$(mktemp -d)
"$REPO/scripts/build-releases" --out "$BUILD" | tee "$BUILD/list"
cp -a "$BUILD/good" "$BUILD/good2"; echo "second build" > "$BUILD/good2/CHANGES"
KEY=/etc/agentgw/keys/release-signing.key
SHA_A=$(awk '$1=="good"{print $2}' "$BUILD/list")
SHA_B=$(printf '%s-b' "$SHA_A" | sha1sum | cut -c1-12)   # a second commit id for the second build
run agentgw release add "$BUILD/good" --sha "$SHA_A" --label a --sign-key $KEY
run agentgw release add "$BUILD/good2" --sha "$SHA_B" --label b --sign-key $KEY
for v in crash unhealthy wrongsha; do
  run agentgw release add "$BUILD/$v" --sha "$(awk -v v=$v '$1==v{print $2}' "$BUILD/list")" --label "$v" --sign-key $KEY
done
expect 2 agentgw release add "$BUILD/good" --sha "not-a-sha" --label x
run agentgw release list

step "plan and apply the three profiles (users, dirs, env files, drop-ins)"
run agentgw plan
run agentgw apply
run agentgw apply   # a second apply: no changes
echo "PYTHONPATH lines in api's env file: $(grep -c '^PYTHONPATH=' /opt/agent/gateways/api/env)"
echo "PYTHONPATH in 'systemctl cat agent-gateway@api': $(systemctl cat agent-gateway@api.service | grep -c PYTHONPATH || true)"

step "promote every profile to release A (through the CLI fork server, agentgw-cli.socket)"
run systemctl enable --now agentgw-cli.socket
for p in core api mcp; do run agentgw promote $p "$SHA_A"; done
echo "commands the fork server ran: $(journalctl -u agentgw-cli.service -o cat --no-pager | grep -c '^pid ')"
run agentgw status

step "AGENT_LAUNCH_DRYRUN=1: what the launcher would exec for api"
run /opt/agent/_lib/launch --env-file /opt/agent/gateways/api/env
run agentgw logs api -o cat --no-pager | grep agentgw-launch | tail -1

step "promote api to B: aligned, siblings untouched"
run agentgw promote api "$SHA_B"

step "promote api to broken releases: each is rolled back automatically"
for v in crash unhealthy wrongsha; do
  expect 1 agentgw promote api "$(awk -v v=$v '$1==v{print $2}' "$BUILD/list")"
done

step "rollback api to release A"
run agentgw rollback api --to "$SHA_A"
run agentgw status
run agentgw history
run agentgw history --verify
run agentgw lint

step "a runtime agentgw did not write: datasette from PyPI (compiled deps, no READY=1, no sha)"
cp "$REPO/gateways/web.yaml" /etc/agentgw/gateways/
run agentgw config check
run agentgw release build --sha d5a7e11 --label datasette \
  -r "$REPO/releases/thirdparty/datasette/requirements.txt" \
  --wheelhouse /var/cache/agentgw/wheels/datasette --sign-key $KEY
run agentgw apply
run agentgw promote web d5a7e11
echo "readiness: health -- a plain systemctl restart returns once the health check answers:"
run systemctl restart agent-gateway@web.service
curl -sS --interface 127.77.0.5 -o /dev/null -w 'GET /-/versions.json right after -> %{http_code}\n' \
  http://127.77.0.5:8080/-/versions.json
echo "a build that lacks one of its dependencies (click) is rolled back, naming why:"
cp -a /opt/agent/releases/d5a7e11-datasette "$BUILD/noclick"
chmod -R u+w "$BUILD/noclick"; rm -rf "$BUILD/noclick/click" "$BUILD/noclick"/manifest.*
run agentgw release add "$BUILD/noclick" --sha d5a7e13 --label noclick --sign-key $KEY
expect 1 agentgw promote web d5a7e13
run agentgw logs web -n 4 -o cat --no-pager

step "isolation proofs: behavioural probes as each profile's user, signed records"
run agentgw verify
run agentgw attest verify /var/lib/agentgw/proofs/api.json

step "the read-only registry (its own hardened unit, unix socket, SO_PEERCRED)"
run systemctl start agentgw-registry.service
run curl -sS --unix-socket /run/agentgw/registry.sock http://registry/v1/profiles -o /dev/null -w 'root: GET /v1/profiles -> %{http_code}\n'
curl -sS --unix-socket /run/agentgw/registry.sock http://registry/metrics | grep -E '^agentgw_profile_(aligned|isolated)\{' | head -6
echo "as agent-api (sees only api):"
setpriv --reuid=agent-api --regid=agent-api --clear-groups \
  curl -sS --unix-socket /run/agentgw/registry.sock http://registry/v1/profiles | python3 -c 'import json,sys; d=json.load(sys.stdin); print([p["profile"] for p in d["profiles"]])'
run curl -sS -X POST --unix-socket /run/agentgw/registry.sock http://registry/v1/profiles -o /dev/null -w 'POST /v1/profiles -> %{http_code}\n'

step "untrusted code goes to a sandbox (a KVM microVM, else gVisor), never the gateway"
run agentgw sandbox selftest
run systemctl start agentgw-sandbox.service
systemctl show -P StatusText agentgw-sandbox.service
expect 3 agentgw exec api -- sh -c 'echo "hi from $(uname -r)"; id; ls /; exit 3'
echo "the api gateway's own /exec route, through its per-profile socket:"
curl -sS --interface 127.77.0.3 -X POST http://127.77.0.3:8080/exec \
  -H 'Content-Type: application/json' -d '{"argv": ["uname", "-r"]}'; echo
agentgw status | tail -1
echo "the registry's /v1/sandbox (backend, boundary):"
curl -sS --unix-socket /run/agentgw/registry.sock http://registry/v1/sandbox \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["backend"], d["boundary"])'
rm -rf "$BUILD"
