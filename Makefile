# Every target that runs code first runs the (idempotent) environment setup, tools/setup_env.sh, which
# installs into the current interpreter $(PYTHON): activate your conda env / venv before calling make.
PYTHON ?= python3
export PYTHON

.PHONY: setup test test-fast lint demo

setup:
	bash tools/setup_env.sh

lint: setup
	$(PYTHON) -m ruff check .

# The README's test command: ruff, then the whole pytest suite.
test: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest

# The quick loop while working: everything except tests marked slow.
test-fast: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -m "not slow"

# The README's main job (today: the foundation smoke demo, see README "Status").
demo: setup
	bash tools/smoke_demo.sh
