"""Shared set-up of ``tools/train.py`` and ``tools/test.py``, and what mmengine 0.10.7's launcher lacks.

:func:`load_tool_config` reads a config the way mmseg's tools do.

Multi-process training on machines without CUDA: mmengine's ``pytorch`` launcher calls
``torch.cuda.set_device(LOCAL_RANK)`` unconditionally, and its runner wraps the model in
``MMDistributedDataParallel(device_ids=[LOCAL_RANK])``; both fail on a CPU-only torch.
:func:`setup_cpu_distributed` is called by ``tools/train.py`` and ``tools/test.py`` before the runner is
built. It only acts when a launcher is requested and CUDA is unavailable, so GPU runs are untouched.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config


def load_tool_config(config: str, *, launcher: str, cfg_options: Optional[dict] = None,
                     work_dir: Optional[str] = None) -> Config:
    """Loads a config as mmseg's tools do: options merged, launcher set, work dir resolved.

    Args:
        config: Path of the config file.
        launcher: The ``--launcher`` value, stored as ``cfg.launcher``.
        cfg_options: ``--cfg-options`` key/value pairs merged into the config.
        work_dir: ``--work-dir``; without it the config's ``work_dir``, else ``./work_dirs/<config name>``.

    Returns:
        The loaded config.
    """
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


def setup_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """Initialises a ``gloo`` process group and a CPU model wrapper when CUDA is unavailable.

    The runner skips its own ``init_dist`` when a process group already exists, so after this call
    mmengine runs distributed on CPU with no other change. ``cfg`` is updated in place:
    ``env_cfg.dist_cfg.backend`` becomes ``'gloo'`` and ``model_wrapper_cfg.device_ids`` is ``None`` (what
    ``DistributedDataParallel`` requires for CPU modules).

    Args:
        cfg: The full training/testing config; modified in place.
        launcher: The ``--launcher`` value (``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``).

    Returns:
        True if the CPU distributed set-up was done, False if there was nothing to do (no launcher, or
        CUDA is available and mmengine's own launcher works).

    Raises:
        RuntimeError: For a launcher other than ``pytorch`` on a machine without CUDA, or when the
            environment variables that ``torchrun`` sets are missing.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {launcher} needs CUDA, which this torch build/machine does not have. '
            'For multi-process training on CPU use --launcher pytorch with torchrun '
            '(tools/dist_train.sh CONFIG NUM_PROCESSES).')
    missing = [k for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
               if k not in os.environ]
    if missing:
        raise RuntimeError(
            f'--launcher pytorch expects the variables set by torchrun, missing: {", ".join(missing)}. '
            'Start the job with tools/dist_train.sh (or torchrun) instead of calling the script directly.')

    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend='gloo')

    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    return True
