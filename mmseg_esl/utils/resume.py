"""Resume with the seed the run started with (what mmengine 0.10.7's resume does too late).

mmengine's ``Runner`` seeds everything when it is built (``randomness.seed``, a random one if the config sets
none), builds the training data loader in ``train()`` with that seed (the sampler's permutations and the
workers' seeds come from it), and only *then* resumes, re-seeding from the checkpoint's ``meta['seed']``. With a
config that sets no seed (mmseg's default, and the paper configs) a resumed run therefore replays a different
data order than the one it trained on. :func:`use_checkpoint_seed`, called by ``tools/train.py`` before the
runner is built, puts the checkpoint's seed into ``cfg.randomness`` first.
"""
from __future__ import annotations

import os
import os.path as osp
import re
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import find_latest_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint

from ..engine.atomic_checkpoint import remove_partial_checkpoints
from .preflight.errors import InputConfigError


def checkpoint_to_resume(cfg: Config) -> Optional[str]:
    """The checkpoint a run with this config resumes from, as mmengine's ``Runner.load_or_resume`` picks it.

    Args:
        cfg: The full config (``resume``, ``load_from``, ``work_dir``).

    Returns:
        ``cfg.load_from`` when resuming from a given file, the work dir's latest checkpoint for a bare
        ``--resume``, or None (not resuming, or nothing to resume from yet).
    """
    if not cfg.get('resume', False):
        return None
    if cfg.get('load_from'):
        return cfg.load_from
    return find_latest_checkpoint(cfg.work_dir)


def read_checkpoint_meta(path: str) -> dict:
    """``checkpoint['meta']`` of a checkpoint file, memory-mapped where possible (weights are not read)."""
    if osp.isfile(path):
        checkpoint = torch.load(path, map_location='cpu', mmap=True, weights_only=False)
    else:  # a URL or another storage backend
        checkpoint = _load_checkpoint(path, map_location='cpu')
    return checkpoint.get('meta', {}) if isinstance(checkpoint, dict) else {}


def _newest_checkpoint(work_dir: str) -> Optional[str]:
    """The ``iter_N.pth`` / ``epoch_N.pth`` of ``work_dir`` with the largest N, or None."""
    found = [(int(m.group(2)), m.group(0)) for m in
             (re.fullmatch(r'(iter|epoch)_(\d+)\.pth', name) for name in os.listdir(work_dir)) if m]
    return osp.join(work_dir, max(found)[1]) if found else None


def resolve_resume(cfg: Config) -> Optional[str]:
    """Fixes the checkpoint a resumed run starts from in ``cfg.load_from``, after checking that it can be read.

    A bare ``--resume`` reads the work dir's ``last_checkpoint``, which holds the absolute path mmengine saved to:
    mmengine follows it, so a moved work dir cannot resume and a copied one silently resumes from the original
    folder. Here the file it names is looked up by name in *this* work dir (an empty ``last_checkpoint``, from a
    kill while mmengine wrote it, means the newest ``iter_N.pth``; checkpoint files are complete, see
    :mod:`mmseg_esl.engine.atomic_checkpoint`), and temporary files of interrupted saves are removed.

    Args:
        cfg: The full config (``resume``, ``load_from``, ``work_dir``); ``load_from`` is set for a bare resume.

    Returns:
        The checkpoint to resume from, or None (not resuming, or a bare resume with nothing saved yet).

    Raises:
        InputConfigError: The checkpoint is missing, truncated or not a checkpoint.
    """
    if not cfg.get('resume', False):
        return None
    for partial in remove_partial_checkpoints(cfg.work_dir) if osp.isdir(cfg.work_dir) else []:
        print_log(f'Removed {partial}, the temporary file of a checkpoint save that was interrupted.',
                  logger='current')
    path = cfg.get('load_from')
    if not path:
        record = osp.join(cfg.work_dir, 'last_checkpoint')
        if not osp.isfile(record):
            return None  # nothing saved yet: mmengine starts from scratch
        with open(record) as f:
            recorded = f.read().strip()
        if not recorded:  # killed while mmengine wrote it (it is not written atomically)
            recorded = _newest_checkpoint(cfg.work_dir)
            if recorded is None:
                return None
        path = osp.join(cfg.work_dir, osp.basename(recorded))
        if not osp.isfile(path):
            raise InputConfigError(f'--resume: {record} names {recorded}, but {osp.basename(recorded)} is not in the '
                                   f'work dir {cfg.work_dir}. Resume from a given file: --resume PATH.')
        cfg.load_from = path
    elif '://' not in path and not osp.isfile(path):
        raise InputConfigError(f'--resume {path}: no such file. Pass an existing checkpoint, or a bare --resume to '
                               'continue from the work dir\'s latest one.')
    try:
        read_checkpoint_meta(path)
    except Exception as e:  # noqa: BLE001  (any reader error means the same thing here)
        reason = ' '.join(f'{type(e).__name__}: {e}'.split())[:160]
        raise InputConfigError(f'The checkpoint {path} cannot be read ({reason}): it is truncated or not a '
                               'checkpoint (a run killed while saving leaves such a file). Resume from an earlier '
                               'one: --resume PATH.') from e
    print_log(f'Resuming from {path}.', logger='current')
    return path


def use_checkpoint_seed(cfg: Config) -> Optional[int]:
    """When resuming, sets ``cfg.randomness.seed`` to the seed stored in the checkpoint.

    Args:
        cfg: The full config; modified in place.

    Returns:
        The seed taken from the checkpoint, or None if the run does not resume or the checkpoint has no seed.
    """
    path = checkpoint_to_resume(cfg)
    if path is None:
        return None
    seed = read_checkpoint_meta(path).get('seed')
    if seed is None:
        return None
    randomness = dict(cfg.get('randomness') or {})
    configured = randomness.get('seed')
    if configured is not None and configured != seed:
        print_log(f'Resuming from {path}, which was trained with randomness.seed={seed}; using it instead of the '
                  f'configured {configured} so that the data order continues where it stopped.', logger='current')
    randomness['seed'] = seed
    cfg.randomness = randomness
    return seed
