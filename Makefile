# Two commands for a fresh machine: `make demo` and `make test` (both run
# `make setup` first). See README.md.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export CONTAINERS_CONF := $(CURDIR)/sandbox/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_FORCE_COLOR := false
export PY_COLORS := 0
SANDBOX_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/private-llm-sandbox
export SANDBOX_CACHE

.PHONY: setup demo demo-destroy test lint unit molecule-default molecule-fleet molecule-vm images model wheelhouse clean help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

setup: ## Install the controller toolchain and the test harness packages (idempotent)
	@scripts/timed.sh 'make setup' scripts/setup.sh

images: setup model wheelhouse ## Build (or reuse) the cached sandbox container and VM images
	@scripts/timed.sh 'images: container' scripts/container-image.sh >/dev/null
	@scripts/timed.sh 'images: vm' scripts/vm-image.sh >/dev/null

model: setup ## Generate the tiny test model (reproducible, seconds)
	@scripts/timed.sh 'make model' python scripts/make-tiny-model.py $(SANDBOX_CACHE)/models/tiny-qwen3 >/dev/null

wheelhouse: setup ## Gather the wheels the sandbox hosts install vLLM's CPU build from
	@scripts/timed.sh 'make wheelhouse' scripts/wheelhouse.sh >/dev/null

demo: setup model ## Create a local sandbox host with the full stack and print where to chat
	@scripts/prepare-sandbox.sh
	@scripts/timed.sh 'make demo: sandbox host and site.yml' scripts/demo.sh

demo-destroy: ## Remove the demo sandbox host
	@scripts/demo.sh destroy

# The VM image is built (or found in the cache) by the VM's lane itself, as
# its first step: the container lane need not wait for it.
test: setup model ## Lint, unit tests and every Molecule scenario; ends with a summary line
	@scripts/prepare-sandbox.sh
	@scripts/run-tests.py

lint: setup ## yamllint, ansible-lint (production profile) and syntax checks only
	@scripts/run-tests.py --skip-unit --no-molecule

unit: setup ## Unit tests only
	@scripts/run-tests.py --skip-lint --no-molecule

molecule-default: images ## The podman scenario only
	@scripts/run-tests.py --skip-lint --skip-unit --scenario default

molecule-fleet: images ## The several-host scenario only (a gateway and two vLLM replicas)
	@scripts/run-tests.py --skip-lint --skip-unit --scenario fleet

molecule-vm: images ## The QEMU VM scenario only
	@scripts/run-tests.py --skip-lint --skip-unit --scenario vm

clean: demo-destroy ## Remove the sandbox hosts and the venv (caches are kept)
	-molecule destroy -s default
	-molecule destroy -s fleet
	-molecule destroy -s vm
	rm -rf $(VENV) .ansible
