"""What the benchmark tools (``tools/benchmarks/*.py``) are built from; :mod:`.train_step` for ``train_step.py``."""
