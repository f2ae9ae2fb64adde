# The two entry points of the README: `make demo` and `make test`. Both run `make setup` first,
# which is idempotent (apt packages, the venv at .venv, generated stubs, images).
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test unit integration e2e lint bench clean vagrant-box vagrant-up vagrant-kubeconfig \
	vagrant-test vagrant-destroy

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

# Real VMs (vagrant/, docs/vagrant.md): not part of `make test`, they take tens of minutes under TCG.
VAGRANT_BUILD := build/vagrant

vagrant-box:
	./scripts/vagrant-box.sh

# one VM at a time (--no-parallel): the agents wait for the server, and TCG guests share two cores
vagrant-up: vagrant-box
	./scripts/vagrant-host.sh libvirtd
	./scripts/vagrant-host.sh domain-type
	./scripts/vagrant-lab.sh up

vagrant-kubeconfig:
	./scripts/vagrant-lab.sh kubeconfig

vagrant-test: setup vagrant-box
	./scripts/vagrant-lab.sh test $(PYTEST_ARGS)

vagrant-destroy:
	./scripts/vagrant-lab.sh destroy

clean:
	-$(PY) -m nodeagent cluster down --all 2>/dev/null
	rm -rf build
