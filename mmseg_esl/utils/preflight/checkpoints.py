"""Checkpoints against the model of a config: read memory-mapped, compared without copying."""
from __future__ import annotations

import logging
import os.path as osp
import re
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn

from ...models.segmentors.esl_segmentor import ESLSegmentor
from .errors import CheckpointMismatchError, _listed
from .model import _build_model


def load_checkpoint_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The state dict of a checkpoint as mmengine's runner reads it (``state_dict`` entry, ``module.`` removed).

    Local files are memory-mapped, so only the tensors compared are read.

    Raises:
        CheckpointMismatchError: If the file cannot be read as a checkpoint.
    """
    try:
        if osp.isfile(path):
            try:
                checkpoint = torch.load(path, map_location='cpu', mmap=True, weights_only=False)
            except RuntimeError:  # not the zip format: no memory map
                checkpoint = torch.load(path, map_location='cpu', weights_only=False)
        else:
            checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    except Exception as e:  # noqa: BLE001  (any reader error means: not a usable checkpoint)
        raise CheckpointMismatchError(f'Cannot read the checkpoint {path}: {type(e).__name__}: {e}. Check the path '
                                      '(a .pth file written by mmengine, or a URL).') from e
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f'{path} holds no state dict (got {type(checkpoint).__name__}).')
    revised = type(state)((re.sub(r'^module\.', '', k), v) for k, v in state.items())
    revised._metadata = getattr(state, '_metadata', {})
    return revised


def compare_checkpoint(model: nn.Module, state_dict: Dict[str, torch.Tensor], *, source: str = 'the checkpoint'
                       ) -> Tuple[List[str], List[str], List[str]]:
    """Loads ``state_dict`` into ``model`` the way ``load_state_dict`` does, without copying, and reports.

    The model's own ``_load_from_state_dict`` hooks run (``ESLSegmentor`` maps a plain checkpoint into student
    and teacher; ``PixelPartContrastLoss`` refuses a bank or prototypes of another C, K, q or L). A model on
    ``meta`` receives meta tensors, so nothing is copied.

    Args:
        model: The model (e.g. from :func:`build_model_cheaply`); on ``meta`` it is left unchanged.
        state_dict: From :func:`load_checkpoint_state_dict`.
        source: The checkpoint's path, for messages.

    Returns:
        ``(missing, unexpected, size_mismatches)``: model keys absent from the checkpoint, checkpoint keys the model
        lacks, and one line per tensor of a different shape.

    Raises:
        CheckpointMismatchError: If a module refuses the checkpoint (the message says why).
    """
    on_meta = any(t.is_meta for t in model.state_dict().values())
    state = {k: (torch.empty(v.shape, dtype=v.dtype, device='meta') if on_meta and isinstance(v, torch.Tensor) else v)
             for k, v in state_dict.items()}
    metadata = getattr(state_dict, '_metadata', {}) or {}
    missing: List[str] = []
    unexpected: List[str] = []
    errors: List[str] = []

    def load(module: nn.Module, local_state: dict, prefix: str = '') -> None:  # torch's Module.load_state_dict
        local_metadata = metadata.get(prefix[:-1], {})
        module._load_from_state_dict(local_state, prefix, local_metadata, True, missing, unexpected, errors)
        for name, child in module._modules.items():
            if child is not None:
                child_prefix = f'{prefix}{name}.'
                load(child, {k: v for k, v in local_state.items() if k.startswith(child_prefix)}, child_prefix)

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            load(model, state)
    except ValueError as e:
        raise CheckpointMismatchError(f'{source} does not fit the model of this config: {e}') from e
    mismatches = [e.replace('\n', ' ') for e in errors if 'size mismatch' in e] or errors
    return missing, unexpected, mismatches


def _training_only(model: nn.Module) -> Callable[[str], bool]:
    """Whether a state-dict key belongs to a part the predictions do not use."""
    # data_preprocessor.*: mean / std are non-persistent buffers of mmseg's preprocessor, set by the config.
    if isinstance(model, ESLSegmentor):
        other = 'student.' if model.predict_on == 'teacher' else 'teacher.'
        own = f'{model.predict_on}.'
        return lambda k: k.startswith((other, 'contrast_loss.', 'data_preprocessor.', f'{own}auxiliary_head.',
                                       f'{own}projector.'))
    return lambda k: k.startswith(('auxiliary_head.', 'projector.', 'data_preprocessor.'))


def _checkpoint_hint(model: nn.Module, state_dict: dict, checkpoint: str) -> str:
    keys = list(state_dict)
    is_esl_checkpoint = any(k.startswith(('student.', 'teacher.')) for k in keys)
    if is_esl_checkpoint and not isinstance(model, ESLSegmentor):
        return (f'{checkpoint} is an ESL checkpoint (student./teacher. keys) and the config builds a plain '
                f'{type(model).__name__}: test it with the ESL config it was trained with, or export its teacher '
                f'as a plain mmseg checkpoint first: python tools/export_checkpoint.py {checkpoint} OUT.pth '
                '--which teacher.')
    return ('Use the config the checkpoint was trained with (same model, num_classes, backbone and heads), or a '
            'checkpoint trained with this config.')


def check_test_checkpoint(cfg: Config, checkpoint: str) -> None:
    """Refuses a checkpoint whose tensors do not fit the model that ``tools/test.py`` builds from ``cfg``.

    mmengine's runner loads with ``strict=False`` and only warns, so a plain config given an ESL checkpoint (or
    a checkpoint of other classes) would be evaluated with random weights. Refused: any tensor of another shape,
    a missing tensor the predictions use, and a checkpoint tensor of a predicting module that the model lacks.
    Allowed, with a log line: keys of parts that predictions do not use (auxiliary heads, the projector, the
    memory bank and prototypes, the ESL network that does not predict), so an ESL model still loads a plain mmseg
    checkpoint (``ESLSegmentor`` maps it into student and teacher).

    Args:
        cfg: The test config (``cfg.model``; a ``--tta`` model is unwrapped).
        checkpoint: Path or URL of the checkpoint.

    Raises:
        CheckpointMismatchError: Listing the mismatched, missing and unexpected keys and the fix.
    """
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmseg')):
        model = _build_model(cfg)
    if isinstance(model, BaseTTAModel):
        model = model.module
    state_dict = load_checkpoint_state_dict(checkpoint)
    missing, unexpected, mismatched = compare_checkpoint(model, state_dict, source=checkpoint)
    training_only = _training_only(model)
    refused_missing = [k for k in missing if not training_only(k)]
    refused_unexpected = [k for k in unexpected if not training_only(k)]
    if mismatched or refused_missing or refused_unexpected:
        sections = []
        if mismatched:
            sections.append(f'{len(mismatched)} tensor(s) of another shape:\n{_listed(mismatched)}')
        if refused_missing:
            sections.append(f'{len(refused_missing)} of the model\'s {len(model.state_dict())} tensors are not in '
                            f'the checkpoint:\n{_listed(refused_missing)}')
        if refused_unexpected:
            sections.append(f'{len(refused_unexpected)} checkpoint tensor(s) the model does not have:\n'
                            f'{_listed(refused_unexpected)}')
        raise CheckpointMismatchError(
            f'The checkpoint {checkpoint} does not fit the model of this config ({type(model).__name__}); testing '
            'it would use random weights where it does not fit. ' + _checkpoint_hint(model, state_dict, checkpoint)
            + '\n' + '\n'.join(sections))
    skipped = sorted(set(missing) | set(unexpected))
    if skipped:
        print_log(f'Checkpoint {checkpoint}: {len(skipped)} key(s) of parts the predictions do not use are absent '
                  f'from the model or the checkpoint (e.g. {skipped[:3]}); they are skipped.', logger='current')


def _checkpoint_to_load(cfg: Config) -> Optional[str]:
    from ..resume import checkpoint_to_resume  # the runner's choice of the file to resume from
    if cfg.get('resume', False):
        return checkpoint_to_resume(cfg)
    return cfg.get('load_from') or None


def _check_training_checkpoint(model: nn.Module, path: str) -> List[str]:
    state_dict = load_checkpoint_state_dict(path)
    missing, unexpected, mismatched = compare_checkpoint(model, state_dict, source=path)
    if missing or unexpected:
        print_log(f'Checkpoint {path}: {len(missing)} model key(s) are not in it and {len(unexpected)} of its keys '
                  f'are not in the model (e.g. {(missing + unexpected)[:3]}); mmengine will skip them.',
                  logger='current', level=logging.WARNING)
    return [f'{path} (resume / load_from): {line}' for line in mismatched]
