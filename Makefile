# The two commands: `make run` starts the platform, `make test` runs lint and every test.
# Both create .venv and install the project when needed; nothing else to set up.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip on this machine warns about every missing local mirror entry; keep its real output.
QUIET_PIP := { grep -v "^WARNING: Location" || true; }

.PHONY: run test lint sysdeps audit unit integration e2e cluster bench protos clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)

# CPU torch first (the wheel on disk here), so the project's torch range is already met and
# pip never pulls a CUDA build.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q "torch==2.13.0" 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install -q -e ".[dev]" 2>&1 | $(QUIET_PIP)
	$(PY) -c "import kiki, ray, torch; assert torch.__version__.startswith('2.13.0')"
	touch $(STAMP)

# System packages from Debian, installed once: promtool (the alert rules' unit tests) and the
# Prometheus server (tests/integration/test_prometheus.py) come with `prometheus`. Only what
# is missing is installed, so it runs quickly (and needs no root) on a machine that has it.
sysdeps:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
		apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; }

run: $(STAMP)
	$(VENV)/bin/kiki up

# tests/cluster starts Ray clusters of its own: a pytest process of its own, after the rest.
test: lint
	$(PY) -m pytest tests --ignore=tests/cluster
	$(PY) -m pytest tests/cluster

lint: $(STAMP) sysdeps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/bandit -c pyproject.toml -q -r kiki launcher actors deployments training benchmarks

# Known vulnerabilities in the installed packages, from PyPI's advisory records (needs the
# internet, so not part of `make test`). The project itself is skipped: it is not on PyPI.
# --strict: a package that could not be looked up fails the audit instead of passing unseen.
audit: $(STAMP)
	$(VENV)/bin/pip-audit --local --skip-editable --strict --progress-spinner off

unit: $(STAMP) sysdeps
	$(PY) -m pytest tests/unit -q

integration: $(STAMP) sysdeps
	$(PY) -m pytest tests/integration -q

e2e: $(STAMP)
	$(PY) -m pytest tests/e2e -q

cluster: $(STAMP)
	$(PY) -m pytest tests/cluster -q

bench: $(STAMP)
	$(VENV)/bin/kiki bench shield

protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. protos/kiki.proto

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
