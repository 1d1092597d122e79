"""mmseg-esl: Enhanced Soft Label (ESL, ICCV 2023) as an mmsegmentation 1.x plugin.

Importing this package (which every config under ``configs/esl/`` does through
``custom_imports=dict(imports=['mmseg_esl'], allow_failed_imports=False)``) applies the compatibility fixes
of :mod:`mmseg_esl.compat`, makes every checkpoint save atomic (:mod:`mmseg_esl.engine.atomic_checkpoint`) and
registers the package's components into mmseg's registries.
"""
from .compat import apply_compat_fixes
from .engine.atomic_checkpoint import use_atomic_checkpoints

apply_compat_fixes()
use_atomic_checkpoints()

from . import datasets, engine, evaluation, models, visualization  # noqa: E402,F401  (registers components; figures)
from .version import __version__  # noqa: E402

__all__ = ['__version__', 'apply_compat_fixes']
