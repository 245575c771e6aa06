# The two commands of the README, and what they stand on.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: up test check npm-tools promtool bench bench-ab clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("muster needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

up: $(STAMP)
	$(BIN)/muster up

check: $(STAMP)
	$(BIN)/ruff check shared services muster demo tests bench
	$(BIN)/ruff format --check shared services muster demo tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

npm-tools: $(STAMP)
	$(BIN)/python -m tests.conformance.tools
	$(BIN)/python -m tests.oidc

# promtool (Debian's prometheus package, unpacked into .cache/promtool) checks and unit-tests the alert rules.
promtool: $(STAMP)
	$(BIN)/python -m tests.monitoring.promtool

# The checks (mypy from a cold cache takes about a minute of CPU) run while npm and promtool download.
test: $(STAMP)
	$(MAKE) --no-print-directory -j3 --output-sync=target check npm-tools promtool
	$(BIN)/python -m pytest -n 4 --dist loadfile --durations=15

bench: $(STAMP) npm-tools
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(BIN)/python -m bench

# Two revisions in one run, interleaved: make bench-ab BASE=414b5ad^1 HEAD=414b5ad [ROUNDS=5] [NAME=ab]
bench-ab: $(STAMP)
	@test -n "$(BASE)" -a -n "$(HEAD)" || { echo "usage: make bench-ab BASE=<rev> HEAD=<rev> [ROUNDS=5] [NAME=ab]"; exit 2; }
	$(BIN)/python -m bench.ab --base '$(BASE)' --head '$(HEAD)' --rounds $(or $(ROUNDS),5) --name $(or $(NAME),ab)

clean:
	rm -rf $(VENV) .muster .cache
