# Every target that runs code first runs the (idempotent) environment setup, tools/setup_env.sh, which
# installs into the current interpreter $(PYTHON): activate your conda env / venv before calling make.
PYTHON ?= python3
export PYTHON

.PHONY: setup test test-fast test-onedl setup-onedl lint demo smoke bench-ssl

setup:
	bash tools/setup_env.sh

lint: setup
	$(PYTHON) -m ruff check .

# The README's test command: ruff, the whole pytest suite on the default (upstream) stack, then the named subset
# ONEDL_TESTS on the maintained OpenMMLab fork (MMSEG_STACK=onedl) in its own environment.
test: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest
	$(MAKE) test-onedl

# The fork in a separate venv (the two stacks share import names): created once, set up like the default one.
ONEDL_VENV ?= $(HOME)/.cache/mmseg-esl/venvs/onedl
ONEDL_PYTHON = $(ONEDL_VENV)/bin/python
# Training, resume, DDP, the test / benchmark tools and the demo configs, and the compatibility fixes.
ONEDL_TESTS ?= tests/test_compat.py tests/test_tools/test_train_test.py tests/test_tools/test_exact_resume.py \
	tests/test_tools/test_ddp_consistency.py tests/test_tools/test_mmseg_tools.py \
	tests/test_tools/test_benchmarks_train_step.py tests/test_tools/test_demo.py tests/test_tools/test_own_dataset.py \
	tests/test_engine/test_hooks/test_rng_state_hook.py \
	tests/test_tools/test_setup_env.py::test_the_other_stack_in_this_environment_is_refused_before_anything_is_installed

setup-onedl:
	test -x $(ONEDL_PYTHON) || $(PYTHON) -m venv $(ONEDL_VENV)
	MMSEG_STACK=onedl PYTHON=$(ONEDL_PYTHON) bash tools/setup_env.sh

test-onedl: setup-onedl
	$(ONEDL_PYTHON) -m pytest $(ONEDL_TESTS)

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
