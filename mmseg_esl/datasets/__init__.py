"""Data pieces for semi-supervised training: datasets, transforms and samplers."""
from . import samplers, transforms  # noqa: F401
