"""SyncBN → BN in a config, so that the paper's SyncBN configs run on machines without a GPU.

The paper configs (``configs/esl/*_r101_*.py``), like mmseg's own, use ``norm_cfg=dict(type='SyncBN')``.
mmengine reverts SyncBN layers to BN by itself in a *non-distributed* run, but a multi-process run on CPU
(gloo, ``tools/dist_train.sh CONFIG 2`` without CUDA) builds ``torch.nn.SyncBatchNorm`` layers, whose forward
needs CUDA. :func:`convert_sync_bn_cfg` rewrites the config before the model is built; ``tools/train.py`` and
``tools/test.py`` call it when ``torch.cuda.is_available()`` is False, so the same config file runs in a CPU
smoke test. On CPU, each process then normalises with its own batch statistics (as plain BN does).
"""
from __future__ import annotations

import logging
from typing import Any, Union

from mmengine.config import Config
from mmengine.logging import print_log

__all__ = ['convert_sync_bn_cfg']

#: Norm types this module converts, and what they become.
_SYNC_TO_PLAIN = {'SyncBN': 'BN', 'MMSyncBN': 'BN'}


def _convert(node: Any) -> int:
    """Converts SyncBN norm dicts inside ``node`` in place; returns how many it changed."""
    changed = 0
    if isinstance(node, dict):
        norm_type = node.get('type')
        if isinstance(norm_type, str) and norm_type in _SYNC_TO_PLAIN:
            node['type'] = _SYNC_TO_PLAIN[norm_type]
            changed += 1
        for value in node.values():
            changed += _convert(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            changed += _convert(value)
    return changed


def convert_sync_bn_cfg(cfg: Union[Config, dict], *, warn: bool = True) -> int:
    """Replaces every ``dict(type='SyncBN', ...)`` in a config tree by ``type='BN'``, recursively and in place.

    Every dict whose ``type`` is ``'SyncBN'`` (or mmcv's ``'MMSyncBN'``) is changed, wherever it sits: the
    model's ``norm_cfg`` entries (backbone, decode and auxiliary heads, the ESL projector) and top-level
    variables such as mmseg's ``norm_cfg``. Other keys of the dict (``requires_grad``, ``eps``, ...) are kept.
    Tuples cannot be changed in place; dicts inside them are (dicts are mutable).

    Args:
        cfg: An mmengine ``Config`` or a (nested) dict; modified in place.
        warn: Log one WARNING (mmengine's ``print_log``, logger ``'current'``) naming the config when at least
            one norm was converted.

    Returns:
        How many norm dicts were converted (0 if there was no SyncBN).
    """
    if isinstance(cfg, Config):
        tree = cfg._cfg_dict  # the ConfigDict behind the Config; changed in place
        name = cfg.filename or '<config>'
    elif isinstance(cfg, dict):
        tree, name = cfg, '<config dict>'
    else:
        raise TypeError(f'convert_sync_bn_cfg expects an mmengine Config or a dict, got {type(cfg).__name__}.')
    changed = _convert(tree)
    if changed and warn:
        print_log(
            f'{name}: no CUDA device, so {changed} SyncBN norm config(s) were converted to BN (SyncBN needs CUDA; '
            'under a CPU process group each process now normalises with its own batch statistics). Results of '
            'such a run are a smoke test, not the paper setting.',
            logger='current', level=logging.WARNING)
    return changed
