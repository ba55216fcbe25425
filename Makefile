# Two commands on a fresh machine: `make run` and `make test`. Both bootstrap .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run admin test test-quick lint format openapi bench register coze-standin clean image test-image

# the development venv: the service's requirements.txt plus tests, lint and tooling (requirements-dev.txt);
# the project itself goes in editable and without dependencies, for its console command (session-admin)
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gunicorn -c gunicorn.conf.py app.wsgi:application

# the admin CLI on the configured database (the embedded one when MONGODB_URI is unset), e.g.
# make admin ARGS="export --out backups/sessions.jsonl". A convenience: make exits 2 on any failure and
# prints the command's own code ("Error 1"); scripts call .venv/bin/session-admin, whose code is 0/1/2.
admin: $(STAMP)
	$(BIN)/session-admin $(ARGS)

# The suite runs in parallel (pytest-xdist): each worker starts its own nx-27017 on a free port.
# One worker more than the cores: the tests spend much of their time waiting on servers (the quick
# suite on 2 cores: 63 s with 2 workers, 52 s with 3, 57 s with 4). TEST_WORKERS=0 runs it in this
# one process (e.g. for pdb).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

test-quick: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow"

# ruff, then mypy on app/ and scripts/ (settings in pyproject.toml, [tool.mypy])
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

openapi: $(STAMP)
	$(BIN)/python scripts/gen_openapi.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

register: $(STAMP)
	$(BIN)/python scripts/register_plugin.py $(ARGS)

# a local stand-in for Coze's plugin API, to rehearse `make register` (docs/coze.md); COZE_STANDIN_PORT, 8888
coze-standin: $(STAMP)
	$(BIN)/python -m tests.coze_standin

bench: $(STAMP)
	$(BIN)/python scripts/bench.py

# the container image (podman, else docker), tagged coze-session-node:dev; see docs/container.md
image:
	scripts/container.sh image

# installs podman from Debian's packages if missing (root), builds the image, runs it and checks it
test-image: $(STAMP)
	scripts/container.sh host
	scripts/container.sh image
	$(BIN)/python -m pytest -m image tests/image_checks.py
