# Template developer commands: `make test` runs every check; `make demo` bakes and serves.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
DEMO_DIR ?= .demo
DEMO = $(DEMO_DIR)/secure-service
DEMO_VENV ?= $(DEMO_DIR)/venv
DEMO_PYTHON := $(DEMO_VENV)/bin/python
DEMO_PACKAGE = secure_service
DEMO_SCOPES = items:read items:write

OBSERVATORY_DIR = tools/observatory
OBSERVATORY = $(OBSERVATORY_DIR)/node_modules/@mdn/mdn-http-observatory

.PHONY: venv tools test lint demo demo-stop clean

K8S_TOOLS := $(VENV)/k8s-tools

venv: $(VENV)/.installed $(K8S_TOOLS)/.installed

# One venv serves the template tests and every baked project under test. The baked service's
# dependencies are installed from a throwaway bake of its own pyproject.toml (hooks skipped),
# so they are declared in one place only.
$(VENV)/.installed: requirements-dev.txt {{cookiecutter.project_slug}}/pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	rm -rf $(VENV)/deps-bake
	$(PYTHON) -m cookiecutter --no-input --accept-hooks no -o $(VENV)/deps-bake .
	$(PYTHON) -m pip install --quiet "$(VENV)/deps-bake/secure-service[dev,redis]"
	$(PYTHON) -m pip uninstall --quiet --yes secure-service
	rm -rf $(VENV)/deps-bake
	touch $@

# Mozilla's HTTP Observatory for tests/test_observatory.py, exactly as its lockfile pins it.
# Install scripts stay off: they would download Chromium's HSTS preload list and a TLD list at
# install time. The scan reads the preload list from conf/hsts-preload.json: an empty one, so
# no host is graded as preloaded.
tools: $(OBSERVATORY)/.installed

$(OBSERVATORY)/.installed: $(OBSERVATORY_DIR)/package.json $(OBSERVATORY_DIR)/package-lock.json
	npm ci --prefix $(OBSERVATORY_DIR) --ignore-scripts --no-audit --no-fund
	echo '{}' > $(OBSERVATORY)/conf/hsts-preload.json
	touch $@

# checkov and kubernetes-validate for the baked Kubernetes tests, in their own venv (checkov's
# pins clash with the dev tools). The baked tests find it beside their interpreter, as the
# baked `make k8s-tools` puts it.
$(K8S_TOOLS)/.installed: {{cookiecutter.project_slug}}/deploy/k8s/requirements-tools.txt $(VENV)/.installed
	test -x $(K8S_TOOLS)/bin/python || python3 -m venv $(K8S_TOOLS)
	$(K8S_TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(K8S_TOOLS)/bin/python -m pip install --quiet -r "{{cookiecutter.project_slug}}/deploy/k8s/requirements-tools.txt"
	touch $@

test: venv ## every template check: hooks, bakes of each option, lint of each bake, baked tests
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PYTHON) -m pytest -n auto --dist loadgroup tests

lint: venv ## lint the template's own Python (baked code is linted by the tests)
	$(PYTHON) -m ruff check hooks tests
	$(PYTHON) -m ruff format --check hooks tests
	$(PYTHON) -m mypy

# The demo runs on a venv of its own with only cookiecutter and the service's runtime
# dependencies (no test tools): ready in seconds where the test venv takes most of a minute, and
# kept across demos. The runtime dependencies are read from the template's pyproject.toml (its
# dependency list holds no template syntax), so they are declared in one place only, and one
# pip run installs everything. The bake itself is not installed: scripts/devstack puts its src/
# on gunicorn's path, and the dev token is minted by the bake's own `flask --app <package>
# dev-token`, from its src/ and in its directory (where its .env and dev key are). The token
# goes to the terminal only.
$(DEMO_VENV)/.installed: requirements-dev.txt {{cookiecutter.project_slug}}/pyproject.toml
	test -x $(DEMO_PYTHON) || python3 -m venv $(DEMO_VENV)
	$(DEMO_PYTHON) -c 'import sys, tomllib; \
		print(*tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"], sep="\n")' \
		"{{cookiecutter.project_slug}}/pyproject.toml" > $(DEMO_VENV)/requirements.txt
	grep '^cookiecutter' requirements-dev.txt >> $(DEMO_VENV)/requirements.txt
	$(DEMO_PYTHON) -m pip install --quiet -r $(DEMO_VENV)/requirements.txt
	touch $@

demo: $(DEMO_VENV)/.installed ## bake the defaults into .demo/, serve them on https://localhost:8443, print a call
	test ! -d $(DEMO) || $(MAKE) -C $(DEMO) stop VENV=$(abspath $(DEMO_VENV))
	rm -rf $(DEMO)
	$(DEMO_PYTHON) -m cookiecutter --no-input -o $(DEMO_DIR) .
	$(MAKE) -C $(DEMO) run VENV=$(abspath $(DEMO_VENV))
	@token=$$(cd $(DEMO) && PYTHONPATH=src $(abspath $(DEMO_PYTHON)) -m flask \
		--app $(DEMO_PACKAGE) dev-token --sub demo --scope "$(DEMO_SCOPES)" --ttl 3600) && \
	echo && \
	echo "Ready. An authenticated call, with a dev token for \"demo\" ($(DEMO_SCOPES), 1 hour):" && \
	echo && \
	echo "curl --cacert $(DEMO)/certs/ca.pem -H \"Authorization: Bearer $$token\" https://localhost:$${HTTPS_PORT:-8443}/api/v1/items" && \
	echo && \
	echo "Without a token: curl --cacert $(DEMO)/certs/ca.pem https://localhost:$${HTTPS_PORT:-8443}/" && \
	echo "Stop: make demo-stop"

demo-stop:
	test ! -d $(DEMO) || $(MAKE) -C $(DEMO) stop VENV=$(abspath $(DEMO_VENV))

clean: demo-stop
	rm -rf $(DEMO_DIR) $(VENV) $(OBSERVATORY_DIR)/node_modules
