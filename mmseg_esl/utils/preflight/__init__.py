"""Pre-flight checks: bad input fails with one clear error before training starts and before anything is written.

A semi-supervised run takes a day on 8 GPUs. A typo in a split file, a corrupt image or label maps with the wrong
values must not crash it hours later deep inside torch, and a checkpoint of another configuration must not load
silently (mmengine's runner loads with ``strict=False`` and only warns). ``tools/train.py`` calls
:func:`check_training_inputs` after the distributed set-up and before ``Runner.from_cfg`` (which creates the work
dir, dumps the config and opens the log files), so a refused run leaves nothing behind. ``tools/test.py`` calls
:func:`check_test_checkpoint` before it builds its runner.

What :func:`check_training_inputs` checks, in this order (first of all, that the work dir can be written:
:func:`check_work_dir`). Each step raises one :class:`ESLInputError` that lists
everything the step found (at most :data:`MAX_LISTED` entries), each naming the file, config key or value and the
fix:

1. **Model constructors**: every ``loss_weight`` of the model config is a finite number >= 0
   (:func:`check_loss_weights`, mmseg's losses included); then the model is built on the ``meta`` device
   (:func:`build_model_cheaply`: no memory, no weights; ``init_weights``, which loads pretrained weights, is never
   called, so nothing is read or downloaded), which runs every constructor check: ``DSLLoss`` η,
   ``PixelPartContrastLoss`` K / ζ / σ / N_s / λ2 / ..., ``ESLSegmentor``'s agreement of the heads'
   ``num_classes``. A model that cannot be built on ``meta`` is built on the CPU instead.
2. **Datasets**: every dataset of ``train_dataloader`` (each part of a ``ConcatDataset`` on its own, so the error
   names ``train_dataloader.dataset.datasets.1``) and of ``val_dataloader`` is built: a missing, empty or
   malformed split file, a split id whose files do not exist (``SplitSegDataset``) and a missing ``ann_file`` are
   reported for all datasets at once.
3. **Consistency**: ``len(metainfo['classes'])`` of every dataset equals the decode head's, the auxiliary heads'
   and the prototypes' ``num_classes``; an ``ESLSegmentor`` run has unlabeled images, and its sampler lays out
   the batch as ``semi_train_cfg.cutmix.partner`` reads it (partners, batch size), and a warning names images
   listed as both labeled and unlabeled; the contrastive term's
   ``num_negatives`` does not exceed the bank slots negatives come from; a checkpoint to ``--resume`` or
   ``load_from`` has the model's tensor shapes (:func:`compare_checkpoint`).
4. **Files** (the scan): every image decodes, and every label map of a labeled dataset decodes, has its image's
   size and only values in ``[0, C) ∪ {ignore_index}`` after the dataset's ``reduce_zero_label`` and
   ``label_map``, applied by the dataset's own ``LoadAnnotations`` as in training (unlabeled sets: images only).
   A class without any labeled training pixel while more than a quarter of them are the ignore index, or while
   the labeled masks hold only 0 and the ignore index, is refused too: the signature of binary masks saved as
   0/255 (``allow_missing_classes`` accepts it).
   In a distributed run the scan is sharded (process ``r`` of ``W`` checks samples ``r, r + W, ...``) and the
   findings are gathered, so every process raises the same error. Each process logs how many files it checked and
   how long it took.

Scan modes (``tools/train.py --data-check MODE``, the ``scan`` argument of :func:`check_training_inputs`):

* ``full`` (default): decode every image and label map;
* ``labels``: decode the label maps, read only the image headers (sizes); cheaper where images are large JPEGs;
* ``off``: no file scan; steps 1-3 still run (they cost about as much as building the runner's datasets).

What the checks cost (measured): docs/reliability.md, "Pre-flight cost".

The checks live in one module each: ``errors``, ``model``, ``datasets`` (and their consistency), ``checkpoints``,
``scan``, ``work_dir``; this package runs them in order.

In a distributed run whose process group does not exist yet (CUDA with ``--launcher pytorch`` / ``slurm``),
:func:`check_training_inputs` initialises it exactly as the runner would (mmengine's ``init_dist`` with
``env_cfg.dist_cfg``); the runner then finds it initialised and skips its own ``init_dist``.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import numpy as np
from mmengine.config import Config
from mmengine.dist import all_gather_object, barrier, get_dist_info, init_dist, is_distributed
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from mmengine.utils.dl_utils import set_multi_processing

from ...models.segmentors.esl_segmentor import ESLSegmentor
from .checkpoints import (
    _check_training_checkpoint,
    _checkpoint_to_load,
    check_test_checkpoint,
    compare_checkpoint,
    load_checkpoint_state_dict,
)
from .datasets import (
    _build_parts,
    _check_batch_layout,
    _check_negatives,
    _check_num_classes,
    _check_unlabeled,
    _dataset_parts,
    _Part,
    labeled_unlabeled_overlap,
)
from .errors import MAX_LISTED, CheckpointMismatchError, DataFileError, ESLInputError, InputConfigError, _listed
from .model import _build_model, build_model_cheaply, check_loss_weights
from .scan import SCAN_MODES, _scan, missing_classes_problem
from .work_dir import check_work_dir

__all__ = ['MAX_LISTED', 'SCAN_MODES', 'CheckpointMismatchError', 'DataFileError', 'ESLInputError',
           'InputConfigError', 'PreflightReport', 'build_model_cheaply', 'check_test_checkpoint',
           'check_training_inputs', 'check_work_dir', 'compare_checkpoint', 'exit_on_input_error',
           'load_checkpoint_state_dict']


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
        class_pixels: Pixel count per label value over the labeled training sets, ``(256,)`` (all processes),
            or None without a scan.
    """

    scan: str
    images: int = 0
    labels: int = 0
    total_images: int = 0
    total_labels: int = 0
    seconds: float = 0.0
    rank: int = 0
    world_size: int = 1
    class_pixels: Optional[np.ndarray] = None


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


def check_training_inputs(cfg: Config, *, scan: str = 'full', allow_missing_classes: bool = False) -> PreflightReport:
    """Checks the model config, datasets, files and checkpoint of a training run (see the module docstring).

    Call it before ``Runner.from_cfg`` and after the distributed set-up of the launcher (every process calls it).

    Args:
        cfg: The full training config (as ``tools/train.py`` has prepared it).
        scan: ``'full'``, ``'labels'`` or ``'off'`` (see the module docstring).
        allow_missing_classes: Accept a class without labeled training pixel while the ignore index covers more
            than a quarter of them, or the masks hold only 0 and it (refused by default: the signature of 0/255
            binary masks).

    Returns:
        What was checked, and how long it took.

    Raises:
        InputConfigError: Constructors refuse the model config, datasets cannot be built, ``num_classes`` disagree,
            an ESL run has no unlabeled image or a batch layout its model does not read, or ``num_negatives``
            exceeds the bank.
        CheckpointMismatchError: The checkpoint to resume or load has other shapes than the model.
        DataFileError: Images or label maps are unreadable, of another size than their image, or hold values
            outside ``[0, C) ∪ {ignore_index}``, or a class has no labeled training pixel while more than a
            quarter of them are ignored or the masks hold only 0 and the ignore index (0/255 masks).
    """
    if scan not in SCAN_MODES:
        raise ValueError(f'scan must be one of {SCAN_MODES}, got {scan!r}')
    start = time.perf_counter()
    _init_distributed(cfg)
    rank, world_size = get_dist_info()
    report = PreflightReport(scan=scan, rank=rank, world_size=world_size)
    if cfg.get('work_dir'):
        check_work_dir(cfg.work_dir)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmseg')):
        _raise_config_problems(check_loss_weights(cfg.model))
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
            overlap = labeled_unlabeled_overlap(train_parts)
            if overlap and rank == 0:
                print_log(overlap, logger='current', level=logging.WARNING)
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
            shard = _scan(train_parts + val_parts, model, scan, rank, world_size)
            report.images, report.labels = shard.images, shard.labels
            gathered = all_gather_object(shard) if world_size > 1 else [shard]
            found = [p for part in gathered for p in part.problems]
            count = sum(part.count for part in gathered)
            report.total_images = sum(part.images for part in gathered)
            report.total_labels = sum(part.labels for part in gathered)
            report.class_pixels = sum(part.class_pixels for part in gathered)
            if count:
                raise DataFileError(
                    f'{count} problem(s) in the training / validation files:\n{_listed(found, count)}\n'
                    'Fix or replace the files, or remove their ids from the split files. Nothing was written; '
                    '--data-check off skips this scan (not recommended).')
            missing = None if allow_missing_classes else missing_classes_problem(
                report.class_pixels, model,
                tuple(train_parts[0].dataset.metainfo.get('classes') or ()) or None)
            if missing:
                raise DataFileError(f'The labeled training set cannot teach every class: {missing} Nothing was '
                                    'written.')
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
