# Every target does its own set-up on a fresh Debian 12 machine (as root); fast when already done.
SHELL := /bin/bash
VENV ?= /opt/agentgw/venv
PY := $(VENV)/bin/python
AGENTGW := $(VENV)/bin/agentgw
APT_PACKAGES := systemd-container libsystemd-dev pkg-config python3-venv python3-dev gcc \
	qemu-system-x86 busybox-static lz4 dbus iproute2 bubblewrap chromium runsc sudo polkitd \
	debhelper dh-virtualenv lintian libyaml-dev libxml2-dev libxslt1-dev

.PHONY: setup apt venv sandbox-image wheels bench-wheels test lint unit integration demo bench soak clean-lab help \
	fleet fleet-venv sshd promtool deb package

help:
	@echo "make demo   - set up, boot the lab and run the demo inside it"
	@echo "make test   - set up, lint (ruff, mypy --strict), unit tests, fleet (ansible), integration in the lab"
	@echo "make bench  - set up and run benchmarks/ (prints a table)"
	@echo "make soak   - faults in one profile vs its sibling, 200 promote/rollback cycles (lab)"
	@echo "make fleet  - ansible-lint, and the Ansible collection over real ssh against 3 labs"
	@echo "make deb    - agentgw_<version>_amd64.deb (debian/, dh-virtualenv), lintian-clean"
	@echo "make package - two builds of the .deb installed, upgraded and purged in a lab"

setup: apt venv sandbox-image wheels promtool

# The third-party runtime of the demo and tests (datasette, pinned), fetched once: they then
# build its release offline (agentgw release build --wheelhouse). A no-op when complete.
WHEELS := /var/cache/agentgw/wheels/datasette
DATASETTE_REQ := releases/thirdparty/datasette/requirements.txt
wheels: venv
	@if ! $(PY) -m pip download -q --no-index --find-links $(WHEELS) --only-binary=:all: \
		-d $(WHEELS) -r $(DATASETTE_REQ) >/dev/null 2>&1; then \
		echo "fetching the wheels of $(DATASETTE_REQ) into $(WHEELS)"; \
		$(PY) -m pip download -q --only-binary=:all: -d $(WHEELS) -r $(DATASETTE_REQ) 2>&1 \
			| grep -v '^WARNING: Location' || true; \
	fi

# The microVM kernel + initramfs (cached under /var/cache/agentgw/sandbox; a no-op when current).
sandbox-image: venv
	@$(AGENTGW) sandbox build >/dev/null

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The venv is built from Debian's /usr/bin/python3 outside /root, so hardened units can run it.
# agentgw is installed as a regular (not editable) package: the registry, broker and verify
# units run it with PrivateTmp=/ProtectHome=, which hide a checkout under /tmp, /var/tmp or
# /home. scripts/install-venv reinstalls it whenever the sources change.
venv:
	@VENV=$(VENV) scripts/install-venv

lint: venv
	$(VENV)/bin/ruff check supervisor tests benchmarks launcher releases
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest -m 'not integration' --ignore=tests/unit/fleet --ignore=tests/package tests

# The Debian package (README "Install on a server"): production dependencies only, in a venv at
# /usr/lib/agentgw; lintian runs on it and any error fails. DEB_VERSION picks the version.
DEB_VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
deb: apt venv
	@VENV=$(VENV) scripts/build-deb $(DEB_VERSION)

# tests/package: the .deb and a newer build of it installed, upgraded and purged in a lab whose
# /opt/agentgw is hidden (a host that never saw this venv).
PACKAGE_DEBS := dist/package-debs
package: setup
	@rm -rf $(PACKAGE_DEBS) && mkdir -p $(PACKAGE_DEBS)
	@VENV=$(VENV) scripts/build-deb $(DEB_VERSION) $(PACKAGE_DEBS)
	@VENV=$(VENV) LINTIAN=0 scripts/build-deb $(DEB_VERSION)+1 $(PACKAGE_DEBS)
	AGENTGW_DEBS=$(CURDIR)/$(PACKAGE_DEBS) $(VENV)/bin/pytest tests/package

# The Ansible side (issue 17): ansible-core and ansible-lint, pinned in fleet/requirements.txt,
# live in their own venv so the main venv's install stays as it is.
FLEET_VENV ?= /opt/agentgw/fleet-venv
fleet-venv:
	@if ! $(FLEET_VENV)/bin/python -m pip install -q --dry-run --no-index --find-links /nonexistent \
		-r fleet/requirements.txt >/dev/null 2>&1; then \
		[ -x $(FLEET_VENV)/bin/python ] || /usr/bin/python3 -m venv $(FLEET_VENV); \
		$(FLEET_VENV)/bin/python -m pip install -q -r fleet/requirements.txt 2>&1 \
			| grep -v '^WARNING: Location' || true; \
	fi

# The labs' sshd: Debian's openssh-server (and libwrap0) unpacked, not installed (installing
# would start an sshd on this machine). A no-op when present.
SSHD_CACHE := /var/cache/agentgw/sshd
sshd:
	@if [ ! -x $(SSHD_CACHE)/root/usr/sbin/sshd ] || \
		[ ! -e $(SSHD_CACHE)/root/usr/lib/x86_64-linux-gnu/libwrap.so.0 ]; then \
		mkdir -p $(SSHD_CACHE) && cd $(SSHD_CACHE) && \
		apt-get download openssh-server libwrap0 2>&1 | grep -v '^W: Download is performed unsandboxed' ; \
		for deb in $(SSHD_CACHE)/*.deb; do dpkg-deb -x $$deb $(SSHD_CACHE)/root; done; \
	fi

# promtool (tests/integration/day2 checks the registry's /metrics with `promtool check metrics`):
# Debian's prometheus package unpacked, not installed (installing would start a Prometheus
# server; no Debian package ships promtool alone). A no-op when present.
PROMTOOL_CACHE := /var/cache/agentgw/promtool
promtool:
	@if [ ! -x $(PROMTOOL_CACHE)/root/usr/bin/promtool ]; then \
		mkdir -p $(PROMTOOL_CACHE) && cd $(PROMTOOL_CACHE) && \
		apt-get download prometheus 2>&1 | grep -v '^W: Download is performed unsandboxed' ; \
		for deb in $(PROMTOOL_CACHE)/prometheus_*.deb; do dpkg-deb -x $$deb $(PROMTOOL_CACHE)/root; done; \
	fi

# ansible-lint at the production profile, then three labs with a network link and an sshd:
# bootstrap over real ssh, rolling promotes of a good and a broken release (tests/unit/fleet).
fleet: setup fleet-venv sshd
	cd fleet && PATH=$(FLEET_VENV)/bin:$$PATH ansible-lint --profile production playbooks ansible_collections
	$(VENV)/bin/pytest tests/unit/fleet

# Boots a disposable systemd (the lab), runs the integration tests inside it, tears it down.
integration: setup
	VENV=$(VENV) scripts/integration

test: lint unit fleet integration package
	@if findmnt -rn -o TARGET | grep -q '/run/agentgw-lab/'; then echo "lab mounts left behind"; exit 1; fi
	@if pgrep -x systemd-nspawn >/dev/null; then echo "nspawn processes left behind"; exit 1; fi
	@if ip netns list | grep -q '^agentgw-'; then echo "network namespaces left behind"; exit 1; fi
	@echo "make test: lint, unit and integration passed"

demo: setup
	$(AGENTGW) lab run --name agentgw-demo -- bash $(CURDIR)/scripts/demo.sh

# The bench's big runtime tree (bench_runtime): litellm and its pinned dependencies.
BENCH_WHEELS := /var/cache/agentgw/wheels/bench-runtime
bench-wheels: venv
	@$(PY) -m pip download -q --only-binary=:all: -d $(BENCH_WHEELS) \
		-r benchmarks/runtime-requirements.txt 2>&1 | grep -v '^WARNING: Location' || true

bench: setup bench-wheels
	$(PY) benchmarks/run.py

# The long version of tests/integration/blast: every fault, 200 cycles. SOAK_ARGS passes options
# (e.g. SOAK_ARGS='--cycles 50 --seed 7').
soak: setup
	$(AGENTGW) lab run --cgroups hybrid --name agentgw-soak-$$$$ -- $(PY) $(CURDIR)/benchmarks/soak.py $(SOAK_ARGS)

clean-lab: setup
	$(AGENTGW) lab down --all
