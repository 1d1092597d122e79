"""The ESL model of an analysis tool: config read like mmseg's tools read it, checkpoint loaded strictly.

``Config.fromfile`` + ``--cfg-options``; default scope ``mmseg``; ``custom_imports`` imported; SyncBN turned into BN
without CUDA; the model built with mmseg's ``MODELS`` and the checkpoint loaded with
``mmengine.runner.load_checkpoint(..., strict=True)``: a checkpoint that does not fit the config is an error, never a
silently half-loaded model.
"""
from __future__ import annotations

import os.path as osp
from collections import Counter
from typing import List, Optional, Sequence

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.utils import import_modules_from_strings
from torch import nn

from .errors import AnalysisError


def set_data_roots(node, data_root: str) -> int:
    """Sets every ``data_root`` key in a (nested) config to ``data_root``, in place; returns how many."""
    changed = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'data_root' and isinstance(value, str):
                node[key] = data_root
                changed += 1
            else:
                changed += set_data_roots(value, data_root)
    elif isinstance(node, (list, tuple)):
        changed += sum(set_data_roots(value, data_root) for value in node)
    return changed


def load_config(config: str, cfg_options: Optional[dict] = None, *, data_root: Optional[str] = None) -> Config:
    """Reads a config as mmseg's tools do, imports its ``custom_imports`` and sets the default scope.

    Args:
        config: Config file.
        cfg_options: ``--cfg-options`` merged into it.
        data_root: ``--data-root``: every ``data_root`` of the config becomes this folder (after the options).

    Returns:
        The config (SyncBN norms converted to BN when CUDA is unavailable).

    Raises:
        AnalysisError: If the file does not exist.
    """
    if not osp.isfile(config):
        raise AnalysisError(f'config file {config!r} does not exist; give the config the checkpoint was trained '
                            'with (tools/train.py copies it into the work dir, e.g. work_dirs/<name>/<name>.py)')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if data_root is not None:
        set_data_roots(cfg._cfg_dict, data_root)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    import mmseg_esl  # noqa: F401  (registers ESL's components even if the config forgets custom_imports)
    if not torch.cuda.is_available():
        from mmseg_esl.utils import convert_sync_bn_cfg
        convert_sync_bn_cfg(cfg, warn=False)
    return cfg


def require_esl(cfg: Config, config: str, tool: str) -> None:
    """Raises a clear :class:`AnalysisError` unless the config builds an ``ESLSegmentor``."""
    model_type = cfg.model.get('type')
    if model_type != 'ESLSegmentor':
        raise AnalysisError(
            f'{tool} needs an ESL model (a teacher and, for parts, prototypes), but {config} builds '
            f"model.type={model_type!r}. Give an ESLSegmentor config and a checkpoint it trained, e.g. "
            'configs/esl/esl_effnet-lite0_demo.py with work_dirs/esl_demo/ESL/iter_600.pth (make demo); '
            'a plain mmseg checkpoint has no teacher and no part prototypes.')


def load_model(cfg: Config, config: str, checkpoint: str, *, device: str = 'cpu') -> nn.Module:
    """Builds ``cfg.model`` with mmseg's ``MODELS`` and loads the checkpoint with ``strict=True``; eval mode.

    Args:
        cfg: Loaded config (:func:`load_config`).
        config: Its path (for messages).
        checkpoint: Checkpoint path.
        device: Torch device.

    Returns:
        The model on ``device``, in eval mode.

    Raises:
        AnalysisError: If the checkpoint is missing or does not fit the config.
    """
    from mmseg.registry import MODELS
    if not osp.isfile(checkpoint):
        raise AnalysisError(f'checkpoint {checkpoint!r} does not exist; tools/train.py writes them into the work '
                            'dir (e.g. work_dirs/esl_demo/ESL/iter_600.pth after make demo)')
    model = MODELS.build(cfg.model)
    try:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
    except RuntimeError as error:
        raise AnalysisError(
            f'checkpoint {checkpoint} does not fit the model of {config} ({_mismatch_summary(str(error))}). Give the '
            'config the checkpoint was trained with (its work dir holds a copy); an ESL config needs an ESL '
            'checkpoint (student.*, teacher.*, and contrast_loss.* when num_parts > 0).') from None
    return model.to(device).eval()


def _mismatch_summary(message: str) -> str:
    """``missing keys: student.projector.* (10), ...`` from the message of a failed strict load."""
    summary = []
    for line in message.splitlines():
        for kind in ('missing keys', 'unexpected key'):
            if line.startswith(f'{kind} in source state_dict: '):
                keys = [k.strip() for k in line.split(': ', 1)[1].split(',') if k.strip()]
                groups = Counter('.'.join(k.split('.')[:2]) for k in keys)
                summary.append(f'{kind}: ' + ', '.join(f'{g}.* ({n})' for g, n in groups.items()))
        if line.startswith('size mismatch'):
            summary.append(line.strip()[:300])
    return '; '.join(summary) or message.strip().splitlines()[0]


def class_names(cfg: Config, num_classes: int) -> List[str]:
    """Class names of the config's datasets, else ``class 0`` ... ``class C-1``.

    Looks at ``metainfo.classes`` of the val / test / train datasets (and ConcatDataset members), then at the
    ``METAINFO`` of their registered dataset classes (e.g. ``CityscapesDataset``); only a list of ``num_classes``
    names is used.
    """
    from mmseg.registry import DATASETS
    candidates = []
    for key in ('val_dataloader', 'test_dataloader', 'train_dataloader'):
        dataset = (cfg.get(key) or {}).get('dataset') or {}
        candidates += [dataset, *dataset.get('datasets', [])]
    for candidate in candidates:
        classes = (candidate.get('metainfo') or {}).get('classes')
        if classes and len(classes) == num_classes:
            return list(classes)
    for candidate in candidates:
        dataset_cls = DATASETS.get(candidate['type']) if isinstance(candidate.get('type'), str) else None
        classes = getattr(dataset_cls, 'METAINFO', {}).get('classes')
        if classes and len(classes) == num_classes:
            return list(classes)
    return [f'class {i}' for i in range(num_classes)]


def select_classes(names: Sequence[str], wanted: Optional[Sequence[str]]) -> np.ndarray:
    """Indices of the classes named by ``--classes`` (names or indices), sorted; all classes when not given.

    Raises:
        AnalysisError: For an unknown name or index (the message lists the classes).
    """
    if not wanted:
        return np.arange(len(names))
    chosen = []
    for item in wanted:
        if item in names:
            chosen.append(list(names).index(item))
        elif item.isdigit() and int(item) < len(names):
            chosen.append(int(item))
        else:
            raise AnalysisError(f'--classes: unknown class {item!r}; the classes are {list(names)}')
    return np.array(sorted(set(chosen)))
