"""Pre-flight checks: bad input fails with one clear error before training starts and before anything is written.

A semi-supervised run takes a day on 8 GPUs. A typo in a split file, a corrupt image or label maps with the wrong
values must not crash it hours later deep inside torch, and a checkpoint of another configuration must not load
silently (mmengine's runner loads with ``strict=False`` and only warns). ``tools/train.py`` calls
:func:`check_training_inputs` after the distributed set-up and before ``Runner.from_cfg`` (which creates the work
dir, dumps the config and opens the log files), so a refused run leaves nothing behind. ``tools/test.py`` calls
:func:`check_test_checkpoint` before it builds its runner.

What :func:`check_training_inputs` checks, in this order. Each step raises one :class:`ESLInputError` that lists
everything the step found (at most :data:`MAX_LISTED` entries), each naming the file, config key or value and the
fix:

1. **Model constructors** (:func:`build_model_cheaply`): the model is built on the ``meta`` device (no memory, no
   weights; ``init_weights``, which loads pretrained weights, is never called, so nothing is read or downloaded),
   which runs every constructor check: ``DSLLoss`` η, ``PixelPartContrastLoss`` K / ζ / σ / N_s / ...,
   ``ESLSegmentor``'s agreement of the heads' ``num_classes``. A model that cannot be built on ``meta`` is built
   on the CPU instead.
2. **Datasets**: every dataset of ``train_dataloader`` (each part of a ``ConcatDataset`` on its own, so the error
   names ``train_dataloader.dataset.datasets.1``) and of ``val_dataloader`` is built: a missing, empty or
   malformed split file, a split id whose files do not exist (``SplitSegDataset``) and a missing ``ann_file`` are
   reported for all datasets at once.
3. **Consistency**: ``len(metainfo['classes'])`` of every dataset equals the decode head's, the auxiliary heads'
   and the prototypes' ``num_classes``; an ``ESLSegmentor`` run has unlabeled images, and its sampler lays out
   the batch as ``semi_train_cfg.cutmix.partner`` reads it (partners, batch size); the contrastive term's
   ``num_negatives`` does not exceed the bank slots negatives come from; a checkpoint to ``--resume`` or
   ``load_from`` has the model's tensor shapes (:func:`compare_checkpoint`).
4. **Files** (the scan): every image decodes, and every label map of a labeled dataset decodes, has its image's
   size and only values in ``[0, C) ∪ {ignore_index}`` after the dataset's ``reduce_zero_label`` and
   ``label_map``, applied by the dataset's own ``LoadAnnotations`` as in training (unlabeled sets: images only).
   In a distributed run the scan is sharded (process ``r`` of ``W`` checks samples ``r, r + W, ...``) and the
   findings are gathered, so every process raises the same error. Each process logs how many files it checked and
   how long it took.

Scan modes (``tools/train.py --data-check MODE``, the ``scan`` argument of :func:`check_training_inputs`):

* ``full`` (default): decode every image and label map;
* ``labels``: decode the label maps, read only the image headers (sizes); cheaper where images are large JPEGs;
* ``off``: no file scan; steps 1-3 still run (they cost about as much as building the runner's datasets).

Cost, measured on the 2-core CPU development machine with the ESL demo config on the demo dataset
(``tools/make_demo_dataset.py``: 540 images of 128 × 128 px, 140 label maps checked): 0.7 s for ``full``, 0.65 s
for ``labels``, 0.6 s for ``off`` (building the model and the datasets), plus about 0.6 s of lazy imports in the
first call of a process. Per file on one core: a VOC JPEG (500 × 375) decodes in 2.4 ms and its label map in
1.5 ms, a Cityscapes PNG (2048 × 1024) in 47 ms and its label map in 12 ms; so VOC ``train_aug`` + val takes about
35 s in one process and 5 s in each of 8, Cityscapes about 3 min in one process and 25 s in each of 8 (``labels``:
about 3 s). Each process decodes with up to 8 threads (CPU cores / processes per node).

In a distributed run whose process group does not exist yet (CUDA with ``--launcher pytorch`` / ``slurm``),
:func:`check_training_inputs` initialises it exactly as the runner would (mmengine's ``init_dist`` with
``env_cfg.dist_cfg``); the runner then finds it initialised and skips its own ``init_dist``.
"""
from __future__ import annotations

import copy
import io
import logging
import os
import os.path as osp
import re
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio
from mmengine.config import Config
from mmengine.dataset import ConcatDataset
from mmengine.dist import all_gather_object, barrier, get_dist_info, init_dist, is_distributed
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import CheckpointLoader
from mmengine.utils.dl_utils import set_multi_processing
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import DATASETS, MODELS
from PIL import Image
from torch import nn

from ..models.losses.pixel_part_contrast_loss import CONFIG_KEY as CONTRAST_KEY
from ..models.losses.pixel_part_contrast_loss import PixelPartContrastLoss
from ..models.segmentors.esl_segmentor import ESLSegmentor

__all__ = ['MAX_LISTED', 'SCAN_MODES', 'CheckpointMismatchError', 'DataFileError', 'ESLInputError',
           'InputConfigError', 'PreflightReport', 'build_model_cheaply', 'check_test_checkpoint',
           'check_training_inputs', 'compare_checkpoint', 'exit_on_input_error', 'load_checkpoint_state_dict']

#: How many problems an error lists (the rest is counted).
MAX_LISTED = 10
#: Modes of the file scan, see the module docstring.
SCAN_MODES: Tuple[str, ...] = ('full', 'labels', 'off')
#: Prefix mmengine's registry puts before a constructor's message (``class `X` in module: ``), removed in ours.
_REGISTRY_PREFIX = re.compile(r'class `\w+` in [\w./\\-]+(?: py)?: ')
_SUPERVISED_HINT = ('to train on the labeled images only, use a supervised config instead (e.g. '
                    'configs/esl/sup_r101_voc_1-8.py, configs/esl/tiny_supervised_voc.py)')


class ESLInputError(ValueError):
    """Bad input (config, data files, checkpoint) found before training or testing; the message says the fix."""


class InputConfigError(ESLInputError):
    """The config cannot work: a constructor refuses an argument, a dataset cannot be built, values disagree."""


class DataFileError(ESLInputError):
    """Images or label maps that cannot be read, or that do not fit each other or the classes."""


class CheckpointMismatchError(ESLInputError):
    """The checkpoint's tensors do not fit the model of the config."""


@dataclass
class PreflightReport:
    """What :func:`check_training_inputs` checked.

    Attributes:
        scan: The scan mode.
        images: Images checked by this process (decoded with ``full``, headers with ``labels``).
        labels: Label maps checked by this process.
        total_images: Images checked by all processes.
        total_labels: Label maps checked by all processes.
        seconds: Wall time of the whole check on this process.
        rank: This process's rank.
        world_size: Number of processes.
    """

    scan: str
    images: int = 0
    labels: int = 0
    total_images: int = 0
    total_labels: int = 0
    seconds: float = 0.0
    rank: int = 0
    world_size: int = 1


def _listed(problems: Sequence[str], total: Optional[int] = None) -> str:
    total = len(problems) if total is None else total
    lines = '\n'.join(f'  - {p}' for p in problems[:MAX_LISTED])
    more = f'\n  ... and {total - min(len(problems), MAX_LISTED)} more' if total > MAX_LISTED else ''
    return lines + more


def _clean(error: BaseException) -> str:
    """The message of a constructor error without mmengine's ``class `X` in module:`` prefixes."""
    return _REGISTRY_PREFIX.sub('', str(error)).strip()


def _reader_error(error: BaseException) -> str:
    """A reader's exception on one line, shortened (OpenCV's span several lines)."""
    return f'{type(error).__name__}: {" ".join(str(error).split())[:160]}'


# ------------------------------------------------------------------------------------------------- model

def build_model_cheaply(model_cfg: dict) -> nn.Module:
    """Builds a model from its config without memory or weights, to run the constructor checks.

    Built on the ``meta`` device; a model whose constructor does not work there (e.g. one that calls
    ``.item()`` on a tensor) is built on the CPU. ``init_weights`` is not called, so no pretrained weights
    are read or downloaded. Call it inside the config's default scope (mmseg).

    Args:
        model_cfg: ``cfg.model``.

    Returns:
        The model (parameters on ``meta`` or the CPU).

    Raises:
        Exception: Whatever the constructors raise on the CPU (e.g. a ValueError naming a bad argument).
    """
    try:
        with torch.device('meta'), warnings.catch_warnings():
            warnings.simplefilter('ignore')  # they are emitted again by the runner's own build
            return MODELS.build(copy.deepcopy(model_cfg))
    except Exception:  # noqa: BLE001  (meta-specific failures; real errors reappear on the CPU below)
        pass
    return MODELS.build(copy.deepcopy(model_cfg))


def _build_model(cfg: Config) -> nn.Module:
    try:
        return build_model_cheaply(cfg.model)
    except (ValueError, TypeError, KeyError) as e:
        raise InputConfigError(f'The model config (model=...) is refused by its constructors:\n  {_clean(e)}\n'
                               'Fix the named key in the config or on the command line; the keys of the model '
                               'live under model. (e.g. --cfg-options model.semi_train_cfg.loss_unsup.eta=0.95).'
                               ) from e


def _segmentor_and_prefix(model: nn.Module) -> Tuple[nn.Module, str]:
    if isinstance(model, ESLSegmentor):
        return model.student, 'model.segmentor.'
    return model, 'model.'


def _heads(module: Optional[nn.Module], key: str) -> Dict[str, int]:
    if module is None:
        return {}
    if isinstance(module, nn.ModuleList):
        return {f'{key}.{i}.num_classes': head.num_classes for i, head in enumerate(module)}
    return {f'{key}.num_classes': module.num_classes}


def model_num_classes(model: nn.Module) -> Dict[str, int]:
    """Every ``num_classes`` of a model, by config key (decode head(s), auxiliary heads, prototypes)."""
    segmentor, prefix = _segmentor_and_prefix(model)
    found = _heads(getattr(segmentor, 'decode_head', None), prefix + 'decode_head')
    found.update(_heads(getattr(segmentor, 'auxiliary_head', None), prefix + 'auxiliary_head'))
    contrast = getattr(model, 'contrast_loss', None)
    if isinstance(contrast, PixelPartContrastLoss):
        found[f'model.{CONTRAST_KEY}.num_classes'] = contrast.num_classes
    return found


def _ignore_index(model: nn.Module) -> int:
    segmentor, _ = _segmentor_and_prefix(model)
    head = getattr(segmentor, 'decode_head', None)
    if isinstance(head, nn.ModuleList):
        head = head[-1]
    return int(getattr(head, 'ignore_index', 255))


# ---------------------------------------------------------------------------------------------- datasets

@dataclass
class _Part:
    """One built dataset: its config key, the dataset, and whether its labels are used in training."""

    key: str
    dataset: object
    labeled: bool


def _dataset_parts(dataset_cfg: dict, key: str) -> List[Tuple[str, dict]]:
    """``[(config key, config)]``: the parts of a ConcatDataset one by one, else the dataset itself."""
    dataset_type = dataset_cfg.get('type')
    cls = DATASETS.get(dataset_type) if isinstance(dataset_type, str) else dataset_type
    if isinstance(cls, type) and issubclass(cls, ConcatDataset):
        return [(f'{key}.datasets.{i}', part) for i, part in enumerate(dataset_cfg['datasets'])]
    return [(key, dataset_cfg)]


def _build_parts(entries: List[Tuple[str, dict]], problems: List[str], is_esl: bool) -> List[_Part]:
    parts = []
    for key, part_cfg in entries:
        unlabeled = part_cfg.get('with_labels', True) is False
        try:
            dataset = DATASETS.build(copy.deepcopy(part_cfg))
            if hasattr(dataset, 'full_init'):
                dataset.full_init()  # lazy_init=True datasets load their data list here
        except (ValueError, TypeError, KeyError, OSError, AssertionError) as e:
            hint = (f' ESLSegmentor trains on unlabeled images: list them in this split (e.g. with '
                    f'tools/make_splits.py), or {_SUPERVISED_HINT}.' if is_esl and unlabeled else '')
            problems.append(f'{key} (type={part_cfg.get("type")!r}): {_clean(e)}{hint}')
            continue
        parts.append(_Part(key, dataset, not unlabeled))
    return parts


def _dataset_source(dataset: object) -> str:
    """The split file or ann_file a dataset reads its ids from, for messages."""
    split = getattr(dataset, '_split_path', None)
    if callable(split):
        return split()
    return getattr(dataset, 'ann_file', '') or '(the image folder)'


# ----------------------------------------------------------------------------------------- consistency

def _check_num_classes(model: nn.Module, parts: List[_Part]) -> List[str]:
    found = {f'{p.key} (len(metainfo["classes"]))': len(p.dataset.metainfo['classes']) for p in parts
             if p.dataset.metainfo.get('classes')}  # a dataset without classes takes the model's
    found.update(model_num_classes(model))
    if len(set(found.values())) <= 1:
        return []
    listed = ', '.join(f'{key}={value}' for key, value in found.items())
    contrast = (f' (and model.{CONTRAST_KEY}.num_classes, or leave that one out)'
                if isinstance(getattr(model, 'contrast_loss', None), PixelPartContrastLoss) else '')
    return [f'num_classes differs: {listed}. Set the heads\' num_classes{contrast} to the dataset\'s number of '
            "classes, or select the dataset's classes with metainfo=dict(classes=...)."]


def _check_unlabeled(train_parts: List[_Part], train_key: str) -> List[str]:
    unlabeled = [p for p in train_parts if not p.labeled]
    if sum(len(p.dataset) for p in unlabeled):
        return []
    if unlabeled:
        what = ', '.join(f'{p.key} lists 0 samples ({_dataset_source(p.dataset)})' for p in unlabeled)
    else:
        what = f'no part of {train_key} is an unlabeled set (SplitSegDataset with with_labels=False)'
    return [f'ESLSegmentor needs unlabeled images, but {what}. Set {train_key} to dict(type=\'ConcatDataset\', '
            'datasets=[labeled, unlabeled]) with a non-empty unlabeled split (e.g. from tools/make_splits.py), '
            f'or {_SUPERVISED_HINT}.']


def _check_negatives(model: nn.Module) -> List[str]:
    loss = getattr(model, 'contrast_loss', None)
    if not isinstance(loss, PixelPartContrastLoss) or loss.num_negatives <= loss.negative_pool_size:
        return []
    return [f'model.{CONTRAST_KEY}.num_negatives={loss.num_negatives} exceeds the {loss.negative_pool_size} bank '
            f'slots an anchor\'s negatives can come from ({loss.describe_negative_pool()}): every anchor '
            f'would repeat negatives. Lower num_negatives to <= {loss.negative_pool_size} or raise '
            f'model.{CONTRAST_KEY}.queue_size.']


def _check_batch_layout(cfg: Config, model: ESLSegmentor) -> List[str]:
    """``SemiSupervisedSampler`` and ``semi_train_cfg.cutmix.partner`` must agree on the batch layout.

    The model reads roles from positions (``ESLSegmentor.split_batch``): ``[labeled | unlabeled | partners]``
    with ``partner='extra'``, ``[labeled | unlabeled]`` with ``'batch'``. A disagreement does not crash: with
    ``cutmix_partners=False`` and ``'extra'``, half of the unlabeled images would silently be used as partners
    only; with ``cutmix_partners=True`` and ``'batch'``, the partners would be trained on as unlabeled images.
    """
    loader = cfg.get('train_dataloader') or {}
    sampler = loader.get('sampler') or {}
    if sampler.get('type') not in ('SemiSupervisedSampler', 'mmseg.SemiSupervisedSampler'):
        return []
    key = 'train_dataloader.sampler'
    num_labeled, num_unlabeled = sampler.get('num_labeled', 1), sampler.get('num_unlabeled', 1)
    partners = sampler.get('cutmix_partners', True)
    partner = model.semi_train_cfg.cutmix.partner
    problems = []
    if partner == 'extra' and not partners:
        problems.append(
            f"model.semi_train_cfg.cutmix.partner='extra' takes each unlabeled image's CutMix partner from the "
            f'extra images of {key}, but {key}.cutmix_partners=False: half of the unlabeled images would be used '
            f"only as partners. Set {key}.cutmix_partners=True, or cutmix.partner='batch'.")
    elif partner == 'batch' and partners:
        problems.append(
            f"model.semi_train_cfg.cutmix.partner='batch' pairs the unlabeled images of the batch with each other, "
            f'but {key}.cutmix_partners=True adds partner images that would be trained on as unlabeled images. '
            f"Set {key}.cutmix_partners=False, or cutmix.partner='extra'.")
    elif partner == 'batch' and num_unlabeled < 2:
        problems.append(
            f"model.semi_train_cfg.cutmix.partner='batch' needs >= 2 unlabeled images per process to pair, got "
            f"{key}.num_unlabeled={num_unlabeled}. Raise it, or use cutmix.partner='extra' with "
            f'{key}.cutmix_partners=True.')
    expected = num_labeled + num_unlabeled * (2 if partners else 1)
    batch_size = loader.get('batch_size')
    if batch_size != expected:
        problems.append(
            f'train_dataloader.batch_size={batch_size} does not match {key}: num_labeled={num_labeled} + '
            f'num_unlabeled={num_unlabeled} * {2 if partners else 1} (cutmix_partners={partners}) = {expected}. '
            f'Set train_dataloader.batch_size={expected}.')
    return problems


# ------------------------------------------------------------------------------------------ checkpoints

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
    from .resume import checkpoint_to_resume  # the runner's choice of the file to resume from
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


# --------------------------------------------------------------------------------------------- the scan

@dataclass(frozen=True)
class _Sample:
    key: str  # config key of its dataset
    img_path: str
    seg_map_path: Optional[str]  # None: its label is not checked
    reduce_zero_label: bool
    label_map: Optional[tuple]


@dataclass
class _Loaders:
    image: LoadImageFromFile
    annotations: Optional[LoadAnnotations]
    num_classes: int
    ignore_index: int
    source: str


def _pipeline_transform(dataset: object, cls: type) -> Optional[object]:
    for transform in getattr(getattr(dataset, 'pipeline', None), 'transforms', []):
        if isinstance(transform, cls):
            return transform
    return None


def _loaders(part: _Part, num_classes: int, ignore_index: int) -> _Loaders:
    """The dataset's own loading transforms (copies), or mmcv's / mmseg's defaults if its pipeline has none."""
    image = _pipeline_transform(part.dataset, LoadImageFromFile)
    annotations = _pipeline_transform(part.dataset, LoadAnnotations) if part.labeled else None
    backend_args = getattr(part.dataset, 'backend_args', None)
    if image is None:
        image = LoadImageFromFile(backend_args=backend_args)
    if annotations is None and part.labeled:
        annotations = LoadAnnotations(backend_args=backend_args)
    return _Loaders(copy.deepcopy(image), copy.deepcopy(annotations),
                    len(part.dataset.metainfo.get('classes') or ()) or num_classes, ignore_index,
                    _dataset_source(part.dataset))


def _samples(part: _Part) -> List[_Sample]:
    samples = []
    for index in range(len(part.dataset)):
        info = part.dataset.get_data_info(index)
        label_map = info.get('label_map')
        samples.append(_Sample(part.key, info['img_path'], info.get('seg_map_path') if part.labeled else None,
                               bool(info.get('reduce_zero_label', False)),
                               tuple(sorted(label_map.items())) if label_map else None))
    return samples


def _image_size(sample: _Sample, loaders: _Loaders, mode: str) -> Tuple[Optional[Tuple[int, int]], Optional[str]]:
    """``((H, W), None)``, or ``(None, problem)`` if the image cannot be read."""
    try:
        if mode == 'full':
            results = loaders.image.transform({'img_path': sample.img_path})
            if results is None or results.get('img') is None:
                raise ValueError('the decoder returned no image')
            return tuple(results['img'].shape[:2]), None
        data = fileio.get(sample.img_path, backend_args=loaders.image.backend_args)
        with Image.open(io.BytesIO(data)) as img:
            return (img.height, img.width), None
    except Exception as e:  # noqa: BLE001  (every reader error is a problem of this file)
        empty = osp.isfile(sample.img_path) and osp.getsize(sample.img_path) == 0
        reason = 'the file is empty, 0 bytes' if empty else _reader_error(e)
        return None, (f'image {sample.img_path} cannot be read ({reason}); replace the file, or remove its id from '
                      f'{loaders.source} ({sample.key})')


def _label_problems(sample: _Sample, loaders: _Loaders, size: Optional[Tuple[int, int]]) -> List[str]:
    results = {'seg_map_path': sample.seg_map_path, 'reduce_zero_label': sample.reduce_zero_label,
               'label_map': dict(sample.label_map) if sample.label_map else None, 'seg_fields': []}
    try:
        loaders.annotations._load_seg_map(results)
        label = results['gt_seg_map']
    except Exception as e:  # noqa: BLE001
        return [f'label map {sample.seg_map_path} cannot be read ({_reader_error(e)}); replace the file, or remove '
                f'its id from {loaders.source} ({sample.key})']
    if label.ndim != 2:
        return [f'label map {sample.seg_map_path} has shape {label.shape}, not (H, W): a label map holds one class '
                'index per pixel (a palette or grayscale PNG), not RGB colours; convert it (mmseg\'s '
                'tools/dataset_converters)']
    problems = []
    if size is not None and tuple(label.shape) != tuple(size):
        problems.append(f'image {sample.img_path} is {size[0]}×{size[1]} (H×W) but its label map '
                        f'{sample.seg_map_path} is {label.shape[0]}×{label.shape[1]}; the label must have the '
                        f'image\'s size: replace one of them or remove the id from {loaders.source} ({sample.key})')
    values = np.flatnonzero(np.bincount(label.ravel(), minlength=256))  # uint8 (LoadAnnotations): faster than unique
    bad = values[(values >= loaders.num_classes) & (values != loaders.ignore_index)]
    if bad.size:
        problems.append(
            f'label map {sample.seg_map_path} has values {bad[:8].tolist()} outside [0, {loaders.num_classes}) ∪ '
            f'{{{loaders.ignore_index}}} (after reduce_zero_label={sample.reduce_zero_label}, label_map='
            f'{dict(sample.label_map) if sample.label_map else None}); convert the labels to class indices, set '
            f'reduce_zero_label=True on {sample.key} if 0 means "ignore", or fix its metainfo classes / the '
            'heads\' num_classes')
    return problems


def _scan_one(sample: _Sample, loaders: _Loaders, mode: str) -> List[str]:
    size, problem = _image_size(sample, loaders, mode)
    problems = [problem] if problem else []
    if sample.seg_map_path is not None and loaders.annotations is not None:
        problems += _label_problems(sample, loaders, size)
    return problems


def _num_threads() -> int:
    local_world = int(os.environ.get('LOCAL_WORLD_SIZE', '1'))
    return max(1, min(8, (os.cpu_count() or 1) // max(1, local_world)))


def _scan(parts: List[_Part], model: nn.Module, mode: str, rank: int, world_size: int
          ) -> Tuple[List[str], int, int, int]:
    """This process's shard of the scan: ``(problems, number of problems, images checked, labels checked)``."""
    num_classes = max(model_num_classes(model).values(), default=0)
    loaders = {p.key: _loaders(p, num_classes, _ignore_index(model)) for p in parts}
    unique: Dict[Tuple[str, Optional[str]], _Sample] = {}
    for part in parts:
        for sample in _samples(part):
            unique.setdefault((sample.img_path, sample.seg_map_path), sample)
    shard = list(unique.values())[rank::world_size]
    with ThreadPoolExecutor(max_workers=_num_threads()) as pool:
        found = list(pool.map(lambda s: _scan_one(s, loaders[s.key], mode), shard))
    problems = [p for sample_problems in found for p in sample_problems]
    labels = sum(1 for s in shard if s.seg_map_path is not None and loaders[s.key].annotations is not None)
    return problems[:MAX_LISTED], len(problems), len(shard), labels


# ------------------------------------------------------------------------------------------ entry point

def _init_distributed(cfg: Config) -> None:
    """Initialises the process group as mmengine's ``Runner.setup_env`` would, if the run is distributed."""
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or is_distributed():
        return
    env_cfg = cfg.get('env_cfg', {})
    set_multi_processing(**env_cfg.get('mp_cfg', {}), distributed=True)
    init_dist(launcher, **env_cfg.get('dist_cfg', {}))


def _raise_config_problems(problems: List[str]) -> None:
    if problems:
        raise InputConfigError('The training config cannot work:\n' + _listed(problems)
                               + '\nFix the named keys or files; nothing was written.')


def check_training_inputs(cfg: Config, *, scan: str = 'full') -> PreflightReport:
    """Checks the model config, datasets, files and checkpoint of a training run (see the module docstring).

    Call it before ``Runner.from_cfg`` and after the distributed set-up of the launcher (every process calls it).

    Args:
        cfg: The full training config (as ``tools/train.py`` has prepared it).
        scan: ``'full'``, ``'labels'`` or ``'off'`` (see the module docstring).

    Returns:
        What was checked, and how long it took.

    Raises:
        InputConfigError: Constructors refuse the model config, datasets cannot be built, ``num_classes`` disagree,
            an ESL run has no unlabeled image or a batch layout its model does not read, or ``num_negatives``
            exceeds the bank.
        CheckpointMismatchError: The checkpoint to resume or load has other shapes than the model.
        DataFileError: Images or label maps are unreadable, of another size than their image, or hold values
            outside ``[0, C) ∪ {ignore_index}``.
    """
    if scan not in SCAN_MODES:
        raise ValueError(f'scan must be one of {SCAN_MODES}, got {scan!r}')
    start = time.perf_counter()
    _init_distributed(cfg)
    rank, world_size = get_dist_info()
    report = PreflightReport(scan=scan, rank=rank, world_size=world_size)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmseg')):
        model = _build_model(cfg)
        is_esl = isinstance(model, ESLSegmentor)
        problems: List[str] = []
        train_key = 'train_dataloader.dataset'
        train_parts = _build_parts(_dataset_parts(cfg.train_dataloader.dataset, train_key), problems, is_esl)
        val_parts: List[_Part] = []
        if cfg.get('val_dataloader') and cfg.get('val_cfg') and cfg.get('val_evaluator'):
            val_parts = _build_parts(_dataset_parts(cfg.val_dataloader.dataset, 'val_dataloader.dataset'),
                                     problems, False)
        _raise_config_problems(problems)

        problems += _check_num_classes(model, train_parts + val_parts)
        if is_esl:
            problems += _check_unlabeled(train_parts, train_key)
            problems += _check_batch_layout(cfg, model)
        problems += _check_negatives(model)
        _raise_config_problems(problems)

        checkpoint = _checkpoint_to_load(cfg)
        if checkpoint:
            mismatched = _check_training_checkpoint(model, checkpoint)
            if mismatched:
                raise CheckpointMismatchError(
                    f'The checkpoint {checkpoint} does not fit the model of this config:\n{_listed(mismatched)}\n'
                    'Resume with the config the checkpoint was trained with, or start without --resume / '
                    'load_from.')

        if scan != 'off':
            found, count, report.images, report.labels = _scan(train_parts + val_parts, model, scan, rank,
                                                               world_size)
            if world_size > 1:
                gathered = all_gather_object((found, count, report.images, report.labels))
            else:
                gathered = [(found, count, report.images, report.labels)]
            found = [p for shard in gathered for p in shard[0]]
            count = sum(shard[1] for shard in gathered)
            report.total_images = sum(shard[2] for shard in gathered)
            report.total_labels = sum(shard[3] for shard in gathered)
            report.seconds = time.perf_counter() - start
            if count:
                raise DataFileError(
                    f'{count} problem(s) in the training / validation files:\n{_listed(found, count)}\n'
                    'Fix or replace the files, or remove their ids from the split files. Nothing was written; '
                    '--data-check off skips this scan (not recommended).')
    report.seconds = time.perf_counter() - start
    where = f' (process {rank} of {world_size}; {report.total_images} images in all)' if world_size > 1 else ''
    print_log(f'Pre-flight check ({scan}): {report.images} images and {report.labels} label maps checked{where}, '
              f'model and datasets built, in {report.seconds:.1f} s.', logger='current')
    return report


def exit_on_input_error(check: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Runs a check of this module; on :class:`ESLInputError` prints its message (no traceback) and exits with 1.

    For the tools: the message says everything (file, key, value, fix), a traceback would only hide it. Only
    rank 0 of a distributed run prints (every rank raises the same error: the checks of this module are
    deterministic or gathered over the processes).

    Returns:
        What ``check`` returns.

    Raises:
        SystemExit: With code 1 on an :class:`ESLInputError`.
    """
    try:
        return check(*args, **kwargs)
    except ESLInputError as e:
        rank, world_size = get_dist_info()
        if rank == 0:
            print(f'\n{type(e).__name__}: {e}', file=sys.stderr, flush=True)
        if world_size > 1:
            # Every process raised the same error (the checks are collective). torchrun stops all processes when
            # the first one exits, so the others wait until rank 0 has printed.
            barrier()
        raise SystemExit(1) from None
