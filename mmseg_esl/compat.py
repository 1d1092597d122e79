"""Compatibility fixes for the pinned OpenMMLab stack on current PyTorch, each applied only where needed.

Every fix lives here, is applied once when ``mmseg_esl`` is imported (directly, or through a config's
``custom_imports=dict(imports=['mmseg_esl'])``, which is how mmseg's own ``tools/train.py`` and
``tools/test.py`` pick it up), changes as little as possible, and has a test in ``tests/test_compat.py``
that fails without it.

Fixes:

1. ``torch.load`` under torch >= 2.6 (mmengine 0.10.7). PyTorch 2.6 changed the default of
   ``torch.load(weights_only=...)`` from ``False`` to ``True``. mmengine's local checkpoint loader calls
   ``torch.load(filename, map_location=...)`` without the argument, and the checkpoints mmengine itself
   writes hold a pickled ``MessageHub`` state (``HistoryBuffer`` objects, numpy arrays and scalars), so
   resume, ``load_from`` and ``tools/test.py`` all fail with ``UnpicklingError: Weights only load
   failed``. We re-register the local-file scheme of mmengine's ``CheckpointLoader`` (its public
   extension point, ``register_scheme(..., force=True)``) with a loader that passes
   ``weights_only=False`` -- the behaviour mmengine was written for, and the fix upstream proposes
   (open-mmlab/mmengine#1650). As with any pickle, load only checkpoints you trust.
   Remote schemes are untouched: ``http(s)://`` and ``open-mmlab://`` go through
   ``torch.hub.load_state_dict_from_url``, which still defaults to ``weights_only=False``.
   Needed only where mmengine lacks its own handling: the maintained fork (onedl-mmengine >= 0.10.8,
   ``MMSEG_STACK=onedl``) loads with an allow-list of mmengine's types and falls back to ``weights_only=False``
   itself (its ``_safe_torch_load``), so there the fix is not applied.

2. ``mmseg::`` base configs on the maintained fork. mmengine resolves ``mmseg::_base_/default_runtime.py`` (which
   every config here inherits) through ``MODULE2PACKAGE['mmseg'] = 'mmsegmentation'``, the upstream
   distribution name; the fork installs the same ``mmseg`` module as ``onedl-mmsegmentation``, and onedl-mmengine
   0.10.12 still maps to the old name, so loading any such config fails with "mmsegmentation is not installed".
   Where a package of that table is missing and its ``onedl-`` distribution is installed, the entry is pointed
   at the latter (in place: mmengine's config loader reads the same dict).

Each applied fix says so once per process (one INFO line: fix 1 when it first loads a checkpoint, fix 2 when it is
applied); :data:`APPLIED` lists them.
"""
from __future__ import annotations

import inspect
import logging
import os.path as osp
from typing import Any, Callable, List, Optional, Union

import mmengine
import torch
from mmengine.logging import print_log
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

#: Whether this torch's ``torch.load`` refuses arbitrary pickles by default (torch >= 2.6).
TORCH_LOAD_DEFAULTS_TO_WEIGHTS_ONLY: bool = (
    inspect.signature(torch.load).parameters.get('weights_only') is not None
    and inspect.signature(torch.load).parameters['weights_only'].default in (None, True))

#: Whether mmengine's local checkpoint loader handles that default itself (the fork's ``_safe_torch_load``).
MMENGINE_LOADS_SAFELY: bool = hasattr(mmengine_checkpoint, '_safe_torch_load')
#: Whether fix 1 is needed here.
NEEDS_TORCH_LOAD_FIX: bool = TORCH_LOAD_DEFAULTS_TO_WEIGHTS_ONLY and not MMENGINE_LOADS_SAFELY
#: Names of the fixes applied in this process.
APPLIED: List[str] = []
_SAID: List[bool] = []  # fix 1 has said so

MapLocation = Optional[Union[str, torch.device, Callable[..., Any], dict]]


def load_from_local_trusted(filename: str, map_location: MapLocation = None) -> Any:
    """Loads a local checkpoint the way mmengine expects, with ``weights_only=False``.

    Drop-in replacement for ``mmengine.runner.checkpoint.load_from_local``.

    Args:
        filename: Path of a checkpoint written by ``torch.save`` (``~`` is expanded).
        map_location: Same as :func:`torch.load`.

    Returns:
        The unpickled checkpoint (usually a dict with ``state_dict``, ``meta``, ``message_hub``...).

    Raises:
        FileNotFoundError: If ``filename`` is not a file.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if not _SAID:
        _SAID.append(True)
        print_log(f'mmseg_esl.compat: mmengine {mmengine.__version__} on torch {torch.__version__}: local '
                  'checkpoints load with weights_only=False (mmengine#1650).', logger='current', level=logging.INFO)
    return torch.load(filename, map_location=map_location, weights_only=False)


def _onedl_packages() -> dict:
    """``{module: 'onedl-<package>'}`` for mmengine's scope table entries served by the fork here."""
    from importlib import metadata

    from mmengine.config.utils import MODULE2PACKAGE

    def installed(name: str) -> bool:
        try:
            metadata.version(name)
            return True
        except metadata.PackageNotFoundError:
            return False

    return {module: f'onedl-{package}' for module, package in MODULE2PACKAGE.items()
            if not package.startswith('onedl-') and not installed(package) and installed(f'onedl-{package}')}


def apply_compat_fixes() -> None:
    """Applies every fix this stack needs; calling it again is harmless (and silent)."""
    if NEEDS_TORCH_LOAD_FIX:
        CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_trusted, force=True)
        if 'torch_load' not in APPLIED:
            APPLIED.append('torch_load')  # said when it first loads a checkpoint (nothing printed on import)
    remapped = _onedl_packages()
    if remapped:
        from mmengine.config.utils import MODULE2PACKAGE
        MODULE2PACKAGE.update(remapped)
        if 'onedl_scopes' not in APPLIED:
            APPLIED.append('onedl_scopes')
            print_log('mmseg_esl.compat: config scopes resolved to the OneDL fork: '
                      + ', '.join(f'{m}:: -> {p}' for m, p in sorted(remapped.items())), logger='current',
                      level=logging.INFO)
