"""BatchNorm modes of one model mirrored from another: the EMA teacher estimating its own BN statistics."""
from contextlib import contextmanager
from typing import Iterator

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@contextmanager
def batch_norm_modes_of(model: nn.Module, reference: nn.Module) -> Iterator[None]:
    """Within the block, every BN layer of ``model`` is in the mode of the same-named layer of ``reference``.

    Used for the teacher's weak pass with ``EMATeacherHook(buffers='own')``: BN layers the student trains
    (``training=True``) normalise the teacher's batch with its own statistics and update its running
    statistics (under ``torch.no_grad()``, no gradient); layers the student keeps frozen (``norm_eval``)
    stay frozen. Every other module keeps its mode (dropout stays off). Modes are restored on exit.

    Args:
        model: The model whose BN layers are switched (the teacher).
        reference: A model of the same architecture (the student).
    """
    modes = {name: m.training for name, m in reference.named_modules() if isinstance(m, _BatchNorm)}
    switched = []
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm) and modes.get(name, False) and not module.training:
            module.train()
            switched.append(module)
    try:
        yield
    finally:
        for module in switched:
            module.eval()
