"""Atomic checkpoint files: a file named like a checkpoint is always complete, whenever the process dies."""
from __future__ import annotations

import glob
import os
import os.path as osp
import tempfile
from typing import Callable, List, Optional

import mmengine.runner.runner as mmengine_runner
import torch

#: Temporary files of :func:`save_checkpoint_atomically` are ``.<name>.<random>.tmp`` next to the checkpoint.
TEMP_PATTERN = '.*.pth.*.tmp'

_mmengine_save: Optional[Callable[..., None]] = None


def save_checkpoint_atomically(checkpoint: dict, filename: str, file_client_args: Optional[dict] = None,
                               backend_args: Optional[dict] = None) -> None:
    """``mmengine.runner.checkpoint.save_checkpoint`` that never leaves a partial file under ``filename``.

    Local files are written to a temporary name in the same folder, flushed and fsynced, then renamed over
    ``filename`` (``os.replace`` is atomic on POSIX); mmengine's ``CheckpointHook`` writes ``last_checkpoint``
    after this returns, so it never names a partial file. A kill -9 during the save leaves at most a
    ``.iter_N.pth.*.tmp`` file (removed by the next ``tools/train.py --resume``). Remote paths (``s3://`` ...) and
    custom storage backends are passed to mmengine unchanged.
    """
    if '://' in filename or file_client_args is not None or backend_args is not None:
        _mmengine_save(checkpoint, filename, file_client_args=file_client_args, backend_args=backend_args)
        return
    folder = osp.dirname(osp.abspath(filename))
    descriptor, temp = tempfile.mkstemp(prefix=f'.{osp.basename(filename)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(descriptor, 'wb') as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, filename)
    except BaseException:
        if osp.exists(temp):
            os.remove(temp)
        raise
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def remove_partial_checkpoints(work_dir: str) -> List[str]:
    """Removes the temporary files of saves that were killed in ``work_dir``; returns their paths."""
    removed = []
    for path in glob.glob(osp.join(work_dir, TEMP_PATTERN)):
        try:
            os.remove(path)
            removed.append(path)
        except FileNotFoundError:  # another process of the same run removed it first
            pass
    return removed


def use_atomic_checkpoints() -> None:
    """Makes mmengine's ``Runner.save_checkpoint`` (every checkpoint hook's save) write atomically; idempotent."""
    global _mmengine_save
    if _mmengine_save is None:
        _mmengine_save = mmengine_runner.save_checkpoint
        mmengine_runner.save_checkpoint = save_checkpoint_atomically
