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

.PHONY: run test lint sysdeps audit unit integration e2e cluster bench protos clean console

$(VENV)/bin/python:
	python3 -m venv $(VENV)

# CPU torch first (the wheel on disk here), so the project's torch range is already met and
# pip never pulls a CUDA build.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q "torch==2.13.0" 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install -q -e ".[dev]" 2>&1 | $(QUIET_PIP)
	$(PY) -c "import kiki, ray, torch; assert torch.__version__.startswith('2.13.0')"
	touch $(STAMP)

# System packages from Debian, installed once: `prometheus` (promtool for the alert rules'
# unit tests, the server for tests/integration/test_prometheus.py) and `chromium` (the browser
# the console's tests drive through Playwright, which downloads none). Only what is missing is
# installed, so it runs quickly (and needs no root) on a machine that has them.
sysdeps:
	@missing=""; \
	command -v promtool >/dev/null && command -v prometheus >/dev/null || missing="prometheus"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The console's front-end dependencies (npm, pinned by package-lock.json), copied as ES
# modules into the package's static files: nothing loads from a CDN at run time. axe-core is
# not loaded by the pages: the console's tests inject it to check accessibility.
CONSOLE := deployments/console
VENDOR  := $(CONSOLE)/static/vendor/.built
$(VENDOR): $(CONSOLE)/package-lock.json
	cd $(CONSOLE) && npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(CONSOLE)/static/vendor
	cp $(CONSOLE)/node_modules/uplot/dist/uPlot.esm.js $(CONSOLE)/node_modules/uplot/dist/uPlot.min.css \
	   $(CONSOLE)/node_modules/uplot/LICENSE $(CONSOLE)/static/vendor/
	cp $(CONSOLE)/node_modules/axe-core/axe.min.js $(CONSOLE)/static/vendor/
	cp $(CONSOLE)/node_modules/axe-core/LICENSE $(CONSOLE)/static/vendor/axe-core.LICENSE
	touch $@

console: $(VENDOR)

run: $(STAMP) $(VENDOR)
	$(VENV)/bin/kiki up

# tests/cluster starts Ray clusters of its own: a pytest process of its own, after the rest.
test: lint $(VENDOR)
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

integration: $(STAMP) $(VENDOR) sysdeps
	$(PY) -m pytest tests/integration -q

e2e: $(STAMP) $(VENDOR) sysdeps
	$(PY) -m pytest tests/e2e -q

cluster: $(STAMP)
	$(PY) -m pytest tests/cluster -q

bench: $(STAMP)
	$(VENV)/bin/kiki bench shield

protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. protos/kiki.proto

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
