# Set-up and checks. `make demo` and `make test` install first when .venv is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-all lint browser-deps demo toy bench lock clean

# The stamp is newer than the lock and pyproject when the venv matches them.
$(STAMP): requirements.lock pyproject.toml
	@$(BIN)/python -c "" 2>/dev/null || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# Debian's chromium for the tests marked `browser` (Playwright drives it; its own browser download,
# `playwright install`, is never used). Installed only when missing and apt-get exists; without it the
# browser tests skip and say why.
browser-deps:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		apt-get update && apt-get install -y chromium || echo "warning: apt-get could not install chromium; the browser tests will skip"; \
	else echo "warning: no /usr/bin/chromium and no apt-get; the browser tests will skip"; fi

# The default run: everything but tests that need a GPU.
test: lint browser-deps
	$(BIN)/pytest -m "not gpu" --timeout=900

demo: install
	$(BIN)/cafe demo

# The toy world end to end (data, train, a self-improvement round, retrain, held-out eval): the proof that
# the model learns to customize; resumes runs/toy when run again.
toy: install
	$(BIN)/cafe toy --output runs/toy

# Every benchmark in bench/, one after another; each prints its ratio lines last.
bench: install
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# Re-resolve requirements.in into the pinned lock (run after changing a top-level pin).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -r requirements.in
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
