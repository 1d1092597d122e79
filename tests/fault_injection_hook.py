"""A test-only hook that kills its own process with SIGKILL in the middle of writing one checkpoint.

Imported by training subprocesses through ``custom_imports`` (``tests/`` on ``PYTHONPATH``), for the kill -9
test of ``tests/test_tools/test_kill_resume.py``. It kills once: a marker file records that it did.
"""
import io
import os
import os.path as osp
import signal

import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class KillDuringSaveHook(Hook):
    """While the checkpoint of iteration ``at_iter`` is written, writes half of its bytes, then SIGKILLs itself."""

    priority = 'LOWEST'  # after every other hook has put its state into the checkpoint

    def __init__(self, at_iter: int, marker: str) -> None:
        self.at_iter = at_iter
        self.marker = marker

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if checkpoint['meta'].get('iter') != self.at_iter or osp.exists(self.marker):
            return
        open(self.marker, 'w').close()
        real_save = torch.save

        def save_half_then_die(obj, f, *args, **kwargs):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = save_half_then_die
