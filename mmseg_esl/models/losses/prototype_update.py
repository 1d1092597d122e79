"""Eq. 12: the pixel-weighted batch part means ``P'`` (DDP-ready) and the momentum update of the prototypes."""
from __future__ import annotations

import numbers
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from .contrast_common import _check_ndim

__all__ = ['batch_part_means', 'momentum_update_prototypes_', 'part_weighted_sums']


def part_weighted_sums(means: Tensor, counts: Tensor) -> Tuple[Tensor, Tensor]:
    """Pixel-weighted sums of per-image part means over the batch: ``sum_n counts * means`` and ``sum_n counts``.

    These are the quantities to all-reduce (sum) under DDP before dividing, so that the batch mean ``P'`` of
    Eq. 12 is weighted by pixels across all processes; :func:`batch_part_means` does it given an
    ``all_reduce`` function.

    Args:
        means: Per-image part means (:func:`masked_average_pool`), shape (N, C, K, L).
        counts: Pixel counts, shape (N, C, K), integer or floating.

    Returns:
        ``(weighted_sums, total_counts)``: fp32 (C, K, L) and long (C, K) (counts are rounded if floating).

    Raises:
        ValueError: If the shapes disagree.
    """
    _check_ndim('means', means, 4, '(N, C, K, L)')
    _check_ndim('counts', counts, 3, '(N, C, K)')
    if tuple(counts.shape) != tuple(means.shape[:3]):
        raise ValueError(
            f'counts shape {tuple(counts.shape)} does not match (N, C, K) = {tuple(means.shape[:3])} of means '
            f'shape {tuple(means.shape)}')
    # A count of 0 zeroes the term, so a garbage mean at an absent part (there is none from MAP) cannot leak.
    weights = counts.float().unsqueeze(-1)
    weighted = torch.where(weights > 0, weights * means.float(), 0.0).sum(dim=0)
    total = counts.round().long().sum(dim=0) if counts.dtype.is_floating_point else counts.long().sum(dim=0)
    return weighted, total


def batch_part_means(means: Tensor,
                     counts: Tensor,
                     *,
                     all_reduce: Optional[Callable[[Tensor], None]] = None) -> Tuple[Tensor, Tensor]:
    """The pixel-weighted batch mean ``P'`` of Eq. 12 from per-image part means: ``sum(count * mean) / sum(count)``.

    Each part's batch mean weighs the images by their pixel counts, i.e. it equals MAP over all pixels of the
    batch at once. Under DDP pass ``all_reduce=mmengine.dist.all_reduce`` (or ``torch.distributed.all_reduce``):
    it is called in place, as a sum, on the weighted sums and then on the counts of
    :func:`part_weighted_sums`, *before* the division, so that every process gets the same ``P'`` (averaging
    the per-process means instead would weigh processes equally, not pixels). Every process must call it.

    Args:
        means: Per-image part means, shape (N, C, K, L).
        counts: Pixel counts, shape (N, C, K).
        all_reduce: In-place sum over processes, called as ``all_reduce(tensor)``; None for one process.

    Returns:
        ``(batch_means, batch_counts)``: fp32 (C, K, L), 0 where the part is absent from the (global) batch,
        and long (C, K).

    Raises:
        ValueError: As :func:`part_weighted_sums`.
    """
    weighted, total = part_weighted_sums(means, counts)
    if all_reduce is not None:
        all_reduce(weighted)
        all_reduce(total)
    return weighted / total.clamp_min(1).unsqueeze(-1).float(), total


def momentum_update_prototypes_(prototypes: Tensor,
                                batch_means: Tensor,
                                batch_counts: Tensor,
                                momentum: float = 0.99) -> None:
    """In-place prototype update of Eq. 12, ``P = theta * P + (1 - theta) * P'``, for the present parts only.

    ``momentum`` is ``theta``, the weight of the *old* prototype (the paper's "momentum coefficient", i.e. the
    decay convention of EMAs, not BatchNorm's ``momentum = 1 - theta``). Parts with ``batch_counts > 0`` move;
    the others keep their value exactly (an absent part has no ``P'``). Prototypes are not renormalised
    (Eq. 7 compares them by cosine, so only their direction matters). Runs under ``torch.no_grad``.

    Args:
        prototypes: ``P``, shape (C, K, L'), floating; updated in place.
        batch_means: ``P'`` (:func:`batch_part_means` of the MAP of ``E^t(x)``), shape (C, K, L').
        batch_counts: Pixel counts of the batch, shape (C, K).
        momentum: ``theta`` in [0, 1]. Paper: 0.99.

    Raises:
        ValueError: If the shapes disagree or ``momentum`` is not in [0, 1].
    """
    _check_ndim('prototypes', prototypes, 3, "(C, K, L')")
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f'momentum must be a number in [0, 1] (theta of Eq. 12), got momentum={momentum!r}')
    if not prototypes.dtype.is_floating_point:
        raise ValueError(f'prototypes must be floating, got dtype {prototypes.dtype}')
    if batch_means.shape != prototypes.shape:
        raise ValueError(
            f'batch_means shape {tuple(batch_means.shape)} does not match prototypes shape '
            f'{tuple(prototypes.shape)}')
    if tuple(batch_counts.shape) != tuple(prototypes.shape[:2]):
        raise ValueError(
            f'batch_counts shape {tuple(batch_counts.shape)} does not match (C, K) = '
            f'{tuple(prototypes.shape[:2])} of prototypes')
    with torch.no_grad():
        present = (batch_counts > 0).to(prototypes.device).unsqueeze(-1)
        new = batch_means.detach().to(device=prototypes.device, dtype=prototypes.dtype)
        prototypes.copy_(torch.where(present, momentum * prototypes + (1.0 - momentum) * new, prototypes))
