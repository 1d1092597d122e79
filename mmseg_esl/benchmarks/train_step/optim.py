"""The optimizer wrapper of a run: the config's, under the AMP mode asked for (mmengine's on CUDA, autocast on CPU)."""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator, Tuple

import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper, build_optim_wrapper
from torch import nn

AMP_MODES: Tuple[str, ...] = ('none', 'fp16', 'bf16')


class CPUAutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose ``optim_context`` runs the forward under ``torch.autocast('cpu', dtype)``.

    mmengine's ``AmpOptimWrapper`` asserts a GPU; this is its CPU stand-in for bf16 (no loss scaling is needed
    for bf16, whose exponent range is fp32's). Used by ``--amp bf16 --device cpu`` only.
    """

    def __init__(self, *, dtype: torch.dtype = torch.bfloat16, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cast_dtype = dtype

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield


def make_optim_wrapper(cfg: Config, model: nn.Module, method: str, amp: str, device: str) -> OptimWrapper:
    """The config's optimizer wrapper for ``model`` (``StudentOptimWrapperConstructor`` for ESL models)."""
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    if method == 'sup':
        optim_cfg.pop('constructor', None)  # the plain segmentor is the "student"
    if amp != 'none':
        dtype = {'fp16': 'float16', 'bf16': 'bfloat16'}[amp]
        if device == 'cuda':
            optim_cfg.update(type='AmpOptimWrapper', dtype=dtype, loss_scale='dynamic')
        else:
            optim_cfg.update(type=CPUAutocastOptimWrapper, dtype=getattr(torch, dtype))
    return build_optim_wrapper(model, optim_cfg)
