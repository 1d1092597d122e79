"""Compatibility fixes for the pinned OpenMMLab stack on current PyTorch.

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
"""
from __future__ import annotations

import inspect
import os.path as osp
from typing import Any, Callable, Optional, Union

import torch
from mmengine.runner.checkpoint import CheckpointLoader

#: Whether this torch's ``torch.load`` refuses arbitrary pickles by default (torch >= 2.6).
TORCH_LOAD_DEFAULTS_TO_WEIGHTS_ONLY: bool = (
    inspect.signature(torch.load).parameters.get('weights_only') is not None
    and inspect.signature(torch.load).parameters['weights_only'].default in (None, True))

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
    return torch.load(filename, map_location=map_location, weights_only=False)


def apply_compat_fixes() -> None:
    """Applies every fix of this module; calling it again is harmless."""
    if TORCH_LOAD_DEFAULTS_TO_WEIGHTS_ONLY:
        CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_trusted, force=True)
