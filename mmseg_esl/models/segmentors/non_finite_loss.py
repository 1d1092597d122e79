"""The stop on a NaN/Inf loss: ``NonFiniteLossError`` and the check ``ESLSegmentor.parse_losses`` runs."""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from mmengine.logging import MessageHub
from torch import Tensor


class NonFiniteLossError(FloatingPointError):
    """A loss term is NaN or infinite; raised by :meth:`ESLSegmentor.parse_losses` before the optimizer step."""


def non_finite_loss_message(log_vars: Dict[str, Tensor]) -> Optional[str]:
    """The error message when a logged loss term (keys containing ``'loss'``, and the total) is NaN or Inf.

    One host-device synchronisation per call (the logger synchronises these values anyway).

    Args:
        log_vars: The ``log_vars`` of mmengine's ``BaseModel.parse_losses``.

    Returns:
        A message naming the non-finite terms (e.g. ``unsup.loss_dsl``) and the iteration, or None if all are
        finite.
    """
    names = [name for name, value in log_vars.items() if 'loss' in name and isinstance(value, Tensor)]
    if not names:
        return None
    values = torch.stack([log_vars[name].detach().float().reshape(()) for name in names])
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return None
    return _message(names, values.tolist(), finite.tolist())


def _message(names: List[str], values: List[float], finite: List[bool]) -> str:
    terms = [f'{name}={value}' for name, value, ok in zip(names, values, finite) if not ok and name != 'loss']
    total = dict(zip(names, values)).get('loss')
    iteration = MessageHub.get_current_instance().get_info('iter')
    where = ('outside a training loop' if iteration is None else
             f'at training iteration {iteration + 1} (as logged; runner.iter={iteration})')
    return (f'ESLSegmentor: non-finite loss {where}: {", ".join(terms) or "the total"} (total loss={total}). '
            'Training stopped before the optimizer step, so the parameters and every checkpoint written so far '
            'are untouched. Usual causes: a learning rate too high (optim_wrapper.optimizer.lr), fp16 overflow '
            '(train in fp32 or bf16, or fp16 with --amp and its dynamic loss scaling), a corrupt label or image '
            '(tools/train.py checks every file before training unless --data-check off), a loss weight too '
            'large. Fix the cause, then continue from the last checkpoint with --resume.')
