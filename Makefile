# The two entry points of the README: `make demo` and `make test`. Both run `make setup` first,
# which is idempotent (apt packages, the venv at .venv, generated stubs, images).
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test unit integration e2e lint bench clean

setup:
	./scripts/setup.sh

demo: setup
	$(PY) -m nodeagent demo

test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider tests $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

integration: setup
	$(PY) -m pytest -q tests/integration $(PYTEST_ARGS)

e2e: setup
	$(PY) -m pytest -q tests/e2e $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check nodeagent tests benchmarks
	.venv/bin/mypy nodeagent
	.venv/bin/lint-imports

bench: setup
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	-$(PY) -m nodeagent cluster down --all 2>/dev/null
	rm -rf build
