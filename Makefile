# The README's two commands: `make serve` and `make test`. Both install first (idempotent).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN ?= torch==2.13.0

.PHONY: install serve test mutants lint bench audit clean train

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[train,dev]" "$(TORCH_PIN)"
	@touch $(STAMP)

serve: install
	$(BIN)/vsr serve

# lint first: CI (.ci/run) calls exactly `make test`, so ruff and strict mypy gate every run; then the mutants
test: install lint
	$(BIN)/python -m pytest -q
	$(BIN)/python scripts/mutants.py

# deliberate breakages the tests must catch, one at a time in a temporary copy (scripts/mutants.py; ~2 min)
mutants: install
	$(BIN)/python scripts/mutants.py

# mypy is strict ([tool.mypy] in pyproject.toml) on the package code
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy vsr vsr_cli service training
	# the layer picture of docs/architecture.md: no import arrow up or sideways (between packages, and inside service/),
	# no web framework below the web layer, no route importing a route, no circle, no source file over 400 lines
	$(BIN)/python scripts/layers.py

# continue every unfinished run under training/runs/ in the background, one thread each (scripts/train.sh)
train: install
	scripts/train.sh

bench: install
	$(BIN)/python -m pip install -q -e ".[bench]" "$(TORCH_PIN)"
	$(BIN)/vsr bench kernel engine cli service streams

# pip-audit over the installed environment; fails only on known vulnerabilities with a fix (scripts/audit.py)
audit: install
	$(BIN)/python scripts/audit.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
