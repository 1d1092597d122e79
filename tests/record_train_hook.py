"""A test-only hook that records what each process trained on and ends with, for the resume and DDP tests.

Imported by training subprocesses through ``custom_imports`` (``tests/`` on ``PYTHONPATH``). Per rank it writes
``<out_dir>/rank<r>.jsonl``, one line per iteration: ``iter``, the raw logged losses/statistics as Python
floats, the image paths of the batch in batch order, a checksum of each augmented image and of the torch RNG
state; and, after training, ``<out_dir>/final_rank<r>.pth``: the unwrapped model's ``state_dict`` (student,
teacher, bank, pointers, prototypes).
"""
import json
import os
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


@HOOKS.register_module()
class RecordTrainHook(Hook):
    """Writes per-iteration records and the final model state of every rank (see the module docstring)."""

    priority = 'LOWEST'  # after the EMA update of the same iteration

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        record = dict(iter=runner.iter + 1, logs={k: float(v) for k, v in (outputs or {}).items()},
                      samples=[ds.img_path for ds in data_batch['data_samples']],
                      input_sums=[float(x.double().sum()) for x in data_batch['inputs']],
                      torch_rng=int(torch.get_rng_state().double().sum()))
        with open(osp.join(self.out_dir, f'rank{get_rank()}.jsonl'), 'a') as f:
            f.write(json.dumps(record) + '\n')

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        torch.save(state, osp.join(self.out_dir, f'final_rank{get_rank()}.pth'))


def read_records(out_dir: str, rank: int = 0) -> list:
    """The records one rank wrote, in iteration order."""
    with open(osp.join(out_dir, f'rank{rank}.jsonl')) as f:
        return [json.loads(line) for line in f]


def write_recorded_config(path: str, base_config: str, out_dir: str, *, rng_state_hook: bool = True) -> str:
    """Writes ``base_config`` plus :class:`RecordTrainHook` (and optionally without ``RNGStateHook``) to ``path``.

    Args:
        path: Where to write the config (a ``.py`` file).
        base_config: The config to extend (e.g. ``configs/esl/tiny_esl_voc.py``).
        out_dir: The hook's output folder.
        rng_state_hook: Keep the config's ``RNGStateHook``; False removes it (the control experiment).

    Returns:
        ``path``.
    """
    from mmengine.config import Config
    cfg = Config.fromfile(base_config)
    hooks = [h for h in cfg.custom_hooks if rng_state_hook or h['type'] != 'RNGStateHook']
    cfg.custom_hooks = hooks + [dict(type='RecordTrainHook', out_dir=out_dir)]
    cfg.custom_imports = dict(imports=['mmseg_esl', 'record_train_hook'], allow_failed_imports=False)
    cfg.dump(path)
    return path
