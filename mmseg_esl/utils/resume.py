"""Resume with the seed the run started with (what mmengine 0.10.7's resume does too late).

mmengine's ``Runner`` seeds everything when it is built (``randomness.seed``, a random one if the config sets
none), builds the training data loader in ``train()`` with that seed (the sampler's permutations and the
workers' seeds come from it), and only *then* resumes, re-seeding from the checkpoint's ``meta['seed']``. With a
config that sets no seed (mmseg's default, and the paper configs) a resumed run therefore replays a different
data order than the one it trained on. :func:`use_checkpoint_seed`, called by ``tools/train.py`` before the
runner is built, puts the checkpoint's seed into ``cfg.randomness`` first.
"""
from __future__ import annotations

import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import find_latest_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint


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
