"""Eq. 9: the anchor pixels of each class, drawn at random, and their feature vectors."""
from __future__ import annotations

import numbers
from typing import Optional, Tuple

import torch
from torch import Tensor

from ...checks import positive_int
from .contrast_common import _check_index_range, _check_integer_dtype, _check_ndim

__all__ = ['gather_pixels', 'sample_anchors']

#: A product ``ratio * count`` within this distance of an integer counts as that integer in
#: :func:`sample_anchors`, so that 10 % of 30 pixels is 3 anchors and not 4 (``0.1 * 30`` is
#: ``3.0000000000000004`` in floating point). Far above the float64 rounding of the product for any pixel count.
QUOTA_ATOL: float = 1e-6


def sample_anchors(class_map: Tensor,
                   valid: Tensor,
                   *,
                   ratio: float = 0.1,
                   max_per_class: Optional[int] = None,
                   ignore_index: int = 255,
                   generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """A random ``ratio`` of the qualifying pixels of each class, the anchor sets ``A_c`` of Eq. 9.

    A pixel qualifies if ``valid`` is True there and its class is not ``ignore_index``; the caller builds
    ``valid`` as in Eq. 9 (labeled pixels of a class; unlabeled pixels whose teacher probability of their
    class exceeds ``zeta = 0.95``). Anchors are pooled over the whole batch per class. Class ``c`` with
    ``m_c`` qualifying pixels gets ``min(ceil(ratio * m_c), max_per_class)`` anchors, drawn uniformly without
    replacement: rounding *up* keeps at least one anchor of every class present (a rare class is not dropped),
    and a product within :data:`QUOTA_ATOL` of an integer counts as that integer (10 % of 30 is 3).

    Vectorised: one random permutation of the qualifying pixels, a stable sort by class, and the rank of each
    pixel within its class compared with the class's quota; no loop over classes.

    Args:
        class_map: Class of each pixel, integer (N, H, W); qualifying pixels must have a class >= 0.
        valid: BoolTensor (N, H, W), True at the pixels that qualify as anchors.
        ratio: Fraction of the qualifying pixels of each class kept, in (0, 1]. Paper: 0.1.
        max_per_class: If given, at most this many anchors per class (>= 1), a memory bound.
        ignore_index: Pixels of this class never qualify, whatever ``valid`` says.
        generator: Random generator for reproducible draws; its device is used to draw (the result is moved
            to ``class_map.device``). None uses the global generator of ``class_map.device``.

    Returns:
        ``(flat_index, classes)``: two LongTensors of shape (A,) on ``class_map.device``, the flat pixel
        indices into ``class_map.reshape(-1)`` (``n * H * W + y * W + x``) and their classes, grouped by class
        in ascending order, in random order within a class.

    Raises:
        ValueError: If ``class_map``/``valid`` have the wrong shape or dtype, ``ratio`` is not in (0, 1],
            ``max_per_class`` is not an integer >= 1, or a qualifying pixel has a negative class.
    """
    _check_ndim('class_map', class_map, 3, '(N, H, W)')
    _check_ndim('valid', valid, 3, '(N, H, W)')
    _check_integer_dtype('class_map', class_map)
    if valid.dtype != torch.bool:
        raise ValueError(f'valid must be a BoolTensor, got dtype {valid.dtype}')
    if valid.shape != class_map.shape:
        raise ValueError(
            f'valid shape {tuple(valid.shape)} does not match class_map shape {tuple(class_map.shape)}')
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0.0 < ratio <= 1.0:
        raise ValueError(f'ratio must be a number in (0, 1], got ratio={ratio!r}')
    if max_per_class is not None:
        positive_int('max_per_class', max_per_class)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise ValueError(f'ignore_index must be an integer, got ignore_index={ignore_index!r}')

    device = class_map.device
    flat_classes = class_map.reshape(-1).long()
    qualifying = valid.reshape(-1) & (flat_classes != ignore_index)
    candidates = qualifying.nonzero().squeeze(1)  # (M,), ascending
    candidate_classes = flat_classes[candidates]
    if candidates.numel() == 0:
        return candidates, candidate_classes
    if bool((candidate_classes < 0).any()):
        value = int(candidate_classes[candidate_classes < 0][0])
        raise ValueError(f'class_map must hold class indices >= 0 at the valid pixels, got the value {value}')

    num = candidates.numel()
    gen_device = generator.device if generator is not None else device
    shuffle = torch.randperm(num, generator=generator, device=gen_device).to(device)
    by_class = candidate_classes[shuffle].sort(stable=True).indices
    order = shuffle[by_class]
    candidates, candidate_classes = candidates[order], candidate_classes[order]

    counts = torch.bincount(candidate_classes)  # (max class + 1,)
    starts = counts.cumsum(0) - counts
    # Quotas on the host in float64 (a handful of numbers; float64 is not available on every device).
    quotas = torch.ceil(counts.cpu().double() * float(ratio) - QUOTA_ATOL).long().clamp_min(1)
    if max_per_class is not None:
        quotas = quotas.clamp_max(int(max_per_class))
    quotas = torch.minimum(quotas.to(device), counts)
    rank = torch.arange(num, device=device) - starts[candidate_classes]
    keep = rank < quotas[candidate_classes]
    return candidates[keep], candidate_classes[keep]


def gather_pixels(feats: Tensor, flat_index: Tensor) -> Tensor:
    """The feature vectors at flat pixel indices (e.g. the anchors of :func:`sample_anchors`).

    Indexes ``feats`` directly, without the full (N * H * W, L) copy that a permute and reshape would make.

    Args:
        feats: Feature map, shape (N, L, H, W) (``z^s`` for the anchors).
        flat_index: LongTensor (A,) of indices ``n * H * W + y * W + x`` in [0, N * H * W).

    Returns:
        Tensor of shape (A, L), dtype of ``feats``, differentiable with respect to ``feats``.

    Raises:
        ValueError: If a shape or dtype is wrong or an index is out of range.
    """
    _check_ndim('feats', feats, 4, '(N, L, H, W)')
    _check_ndim('flat_index', flat_index, 1, '(A,)')
    _check_integer_dtype('flat_index', flat_index)
    n, dim, h, w = feats.shape
    _check_index_range('flat_index', flat_index, n * h * w, 'pixels of the (N, H, W) map')
    flat_index = flat_index.long()
    return feats.reshape(n, dim, h * w)[flat_index // (h * w), :, flat_index % (h * w)]
