# Every target that runs code first runs the (idempotent) environment setup, tools/setup_env.sh, which
# installs into the current interpreter $(PYTHON): activate your conda env / venv before calling make.
PYTHON ?= python3
export PYTHON

.PHONY: setup test test-fast lint demo smoke bench-ssl

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

# The README's main job: Sup vs MT-hard vs ESL on the generated demo data, with a table of mIoU and time.
demo: setup
	$(PYTHON) tools/demo.py

# The tiny supervised smoke run (train, resume, mmseg's own test.py) in about a minute.
smoke: setup
	bash tools/smoke_demo.sh

# The evidence benchmark of docs/benchmarks.md (Sup, MT-hard, MT-DSL, ESL, Full x 5 seeds, about 100 min on 2 CPU cores).
bench-ssl: setup
	$(PYTHON) tools/benchmarks/ssl_gain.py --seeds 5
