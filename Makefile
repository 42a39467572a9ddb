# Set-up and checks. `make demo` and `make test` install first when .venv is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-all lint demo bench lock clean

# The stamp is newer than the lock and pyproject when the venv matches them.
$(STAMP): requirements.lock pyproject.toml
	@$(BIN)/python -c "" 2>/dev/null || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The default run: everything but tests that need a GPU.
test: lint
	$(BIN)/pytest -m "not gpu" --timeout=900

demo: install
	$(BIN)/cafe demo

bench: install
	$(BIN)/python bench/shard_io.py

# Re-resolve requirements.in into the pinned lock (run after changing a top-level pin).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -r requirements.in
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
