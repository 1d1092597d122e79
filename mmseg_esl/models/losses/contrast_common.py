"""Shared by the pixel-to-part contrast functions: argument checks, autocast switches and image chunk sizes.

**Precision, also under AMP.** Similarities, means and losses are computed in fp32 whatever the input dtype,
with ``torch.autocast`` switched off inside (:func:`no_autocast`): an autocast region would otherwise run the
einsums and matmuls in fp16/bf16, where the pixel sums of Eq. 8/12 overflow fp16 for raw features and bf16
flips some parts of Eq. 7. One deliberate exception: under autocast, the anchor x bank matmul of
:func:`~.infonce.part_infonce_from_bank` runs in the autocast dtype (fp32 accumulation), since it is the one
large matmul of the contrastive term and its operands are unit vectors (cosines in [-1, 1] cannot overflow);
its logits, log-sum-exp and result are fp32. Measured errors: docs/benchmarks.md (AMP).
"""
from __future__ import annotations

import numbers
from contextlib import nullcontext
from typing import ContextManager, Optional, Tuple

import torch
from torch import Tensor

#: Upper bound on the elements of one chunk's temporaries in :func:`~.part_assignment.assign_parts`,
#: :func:`~.masked_pooling.masked_average_pool` and :func:`~.masked_pooling.upsampled_masked_average_pool`
#: (128 MiB in fp32); they process as many images at a time as fit (at least one).
CHUNK_ELEMENTS: int = 2**25

#: Device types on which ``torch.autocast`` exists.
_AUTOCAST_DEVICES: Tuple[str, ...] = ('cuda', 'cpu', 'xpu', 'mps', 'hpu')


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype of the enclosing ``torch.autocast`` region on ``device_type``, or None outside one."""
    if device_type not in _AUTOCAST_DEVICES:
        return None
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: separate CUDA / CPU functions
        enabled = torch.is_autocast_cpu_enabled() if device_type == 'cpu' else torch.is_autocast_enabled()
    if not enabled:
        return None
    try:
        return torch.get_autocast_dtype(device_type)
    except AttributeError:  # torch < 2.4
        return torch.get_autocast_cpu_dtype() if device_type == 'cpu' else torch.get_autocast_gpu_dtype()


def no_autocast(device_type: str) -> ContextManager:
    """A context in which ops on ``device_type`` run in the dtype of their inputs (autocast switched off)."""
    if device_type not in _AUTOCAST_DEVICES:
        return nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


def _images_per_chunk(elements_per_image: int) -> int:
    """How many images fit into :data:`CHUNK_ELEMENTS` given the temporaries of one image (at least one)."""
    return max(1, CHUNK_ELEMENTS // max(1, elements_per_image))


def _check_ndim(name: str, tensor: Tensor, ndim: int, layout: str) -> None:
    if not isinstance(tensor, Tensor):
        raise ValueError(f'{name} must be a torch.Tensor of shape {layout}, got {type(tensor).__name__}')
    if tensor.ndim != ndim:
        raise ValueError(f'{name} must be {ndim}-D {layout}, got shape {tuple(tensor.shape)}')


def _check_integer_dtype(name: str, tensor: Tensor) -> None:
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise ValueError(f'{name} must hold integer indices (e.g. torch.long), got dtype {tensor.dtype}')


def _check_ignore_index(ignore_index: int, num_classes: int) -> None:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise ValueError(f'ignore_index must be an integer, got ignore_index={ignore_index!r}')
    if 0 <= ignore_index < num_classes:
        raise ValueError(
            f'ignore_index must not be a class index in [0, C={num_classes}), got ignore_index={ignore_index}')


def _check_class_values(name: str, class_map: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """The mask of labelled pixels of ``class_map``; raises on a value that is neither a class nor ignored."""
    labelled = class_map != ignore_index
    bad = labelled & ((class_map < 0) | (class_map >= num_classes))
    if bool(bad.any()):
        value = int(class_map[bad][0])
        raise ValueError(
            f'{name} must hold class indices in [0, C={num_classes}) or ignore_index={ignore_index}, got the '
            f'value {value}')
    return labelled


def _check_index_range(name: str, index: Tensor, upper: int, what: str) -> None:
    bad = (index < 0) | (index >= upper)
    if bool(bad.any()):
        raise ValueError(f'{name} must index {what} in [0, {upper}), got the value {int(index[bad][0])}')
