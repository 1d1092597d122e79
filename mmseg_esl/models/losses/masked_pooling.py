"""Eq. 8: mask average pooling (MAP) of features per image, class and part, also of upsampled features."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...checks import positive_int
from .contrast_common import (
    _check_class_values,
    _check_ignore_index,
    _check_integer_dtype,
    _check_ndim,
    _images_per_chunk,
    no_autocast,
)

__all__ = ['masked_average_pool', 'upsampled_masked_average_pool']


def _check_same_map_shape(feats_name: str, feats: Tensor, map_name: str, label_map: Tensor) -> None:
    expected = (feats.shape[0], *feats.shape[2:])
    if tuple(label_map.shape) != expected:
        raise ValueError(
            f'{map_name} shape {tuple(label_map.shape)} does not match (N, H, W) = {expected} of {feats_name} '
            f'shape {tuple(feats.shape)}; resize the map (nearest) or the features to the same resolution first')


def masked_average_pool(feats: Tensor,
                        class_map: Tensor,
                        part_map: Tensor,
                        num_classes: int,
                        num_parts: int,
                        *,
                        ignore_index: int = 255) -> Tuple[Tensor, Tensor]:
    """Mask average pooling (MAP) per image and part, Eq. 8.

    ``mu[n, c, k] = sum_j M_{j,c,k} feats[n, :, j] / sum_j M_{j,c,k}`` over the pixels ``j`` of image ``n``
    with class ``c`` and part ``k``. Pixels whose class is ``ignore_index`` or whose part is -1 contribute to
    nothing. A part absent from an image has count 0 and mean 0 (never NaN). The sums are one ``scatter_add``
    into ``C * K + 1`` bins per image (the last one collects the excluded pixels and is dropped), so the extra
    memory is that of the (N, L, C * K + 1) output; the feature map is not permuted, and copied to fp32 only if
    it is in another dtype, one chunk of images (:data:`CHUNK_ELEMENTS`) at a time. Differentiable with respect
    to ``feats`` (ESL pools teacher features, which carry no gradient).

    Args:
        feats: Features, shape (N, L, H, W) (``z^t`` for the memory bank, ``E^t(x)`` for Eq. 12), any floating
            dtype (summed in fp32).
        class_map: Class of each pixel, integer (N, H, W), values in [0, C) or ``ignore_index``, same
            resolution as ``feats``.
        part_map: Part of each pixel (:func:`assign_parts`), integer (N, H, W), values in [-1, K).
        num_classes: C, >= 1.
        num_parts: K, >= 1.
        ignore_index: Class value of excluded pixels; must not be in [0, C).

    Returns:
        ``(means, counts)``: fp32 means of shape (N, C, K, L) and long pixel counts of shape (N, C, K), on
        ``feats.device``.

    Raises:
        ValueError: If a tensor has the wrong number of dimensions or dtype, a map's (N, H, W) differs from
            that of ``feats``, ``num_classes``/``num_parts``/``ignore_index`` is invalid, or a map holds an
            out-of-range value (the message names it).
    """
    _check_ndim('feats', feats, 4, '(N, L, H, W)')
    _check_ndim('class_map', class_map, 3, '(N, H, W)')
    _check_ndim('part_map', part_map, 3, '(N, H, W)')
    _check_integer_dtype('class_map', class_map)
    _check_integer_dtype('part_map', part_map)
    positive_int('num_classes', num_classes)
    positive_int('num_parts', num_parts)
    _check_same_map_shape('feats', feats, 'class_map', class_map)
    _check_same_map_shape('feats', feats, 'part_map', part_map)
    _check_ignore_index(ignore_index, num_classes)
    labelled = _check_class_values('class_map', class_map, num_classes, ignore_index)
    bad_part = (part_map < -1) | (part_map >= num_parts)
    if bool(bad_part.any()):
        raise ValueError(
            f'part_map must hold part indices in [0, K={num_parts}) or -1, got the value '
            f'{int(part_map[bad_part][0])}')

    n, dim, h, w = feats.shape
    num_bins = num_classes * num_parts
    pooled = labelled & (part_map >= 0)
    bins = torch.where(pooled, class_map.long() * num_parts + part_map.long(), num_bins).reshape(n, 1, h * w)
    step = _images_per_chunk(dim * h * w)  # an fp32 copy of half-precision features, one chunk at a time
    chunks = []
    for start in range(0, n, step):
        chunk = feats[start:start + step].float().reshape(-1, dim, h * w)
        zeros = chunk.new_zeros((chunk.shape[0], dim, num_bins + 1))
        chunks.append(zeros.scatter_add(2, bins[start:start + step].expand(-1, dim, h * w), chunk))
    sums = torch.cat(chunks)
    offsets = torch.arange(n, device=feats.device).reshape(n, 1) * (num_bins + 1)
    counts = torch.bincount((bins.reshape(n, h * w) + offsets).reshape(-1), minlength=n * (num_bins + 1))
    counts = counts.reshape(n, num_bins + 1)[:, :num_bins]
    means = sums[:, :, :num_bins] / counts.clamp_min(1).unsqueeze(1).float()
    means = means.permute(0, 2, 1).reshape(n, num_classes, num_parts, dim)
    return means, counts.reshape(n, num_classes, num_parts)


def _linear_weights(out_size: int, in_size: int, align_corners: bool, device: torch.device) -> Tensor:
    """The (out_size, in_size) matrix of 1-D linear interpolation, as ``F.interpolate(mode='linear')`` uses it."""
    eye = torch.eye(in_size, device=device).unsqueeze(0)  # (1, in, in): channel i is the unit vector e_i
    return F.interpolate(eye, size=out_size, mode='linear', align_corners=align_corners)[0].t()


def upsampled_masked_average_pool(feats: Tensor,
                                  class_map: Tensor,
                                  part_map: Tensor,
                                  num_classes: int,
                                  num_parts: int,
                                  *,
                                  align_corners: bool = False,
                                  ignore_index: int = 255,
                                  normalize: bool = False) -> Tuple[Tensor, Tensor]:
    """Eq. 8 on features bilinearly resized to the maps' resolution, without building the resized features.

    Equals ``masked_average_pool(resize(feats, class_map.shape[1:], 'bilinear'), class_map, part_map, C, K)``.
    ESL applies MAP to ``E^t(x)`` with the part masks of Eq. 7 to get ``P'`` of Eq. 12 (§3.4); the masks live
    at the projector's stride (4) while ``E^t`` is at stride 8 or 16, and resizing 2048-channel features of a
    batch to stride 4 would cost gigabytes. Bilinear resizing is linear and separable,
    ``up(E) = A_h E A_w^T``, so ``sum_j M_j up(E)_j = sum_i (A_h^T M A_w)_i E_i``: the one-hot masks (N, C·K,
    H, W) are brought *down* to the features' (h, w) by the transposed interpolation matrices and contracted
    with the features there. The pixel counts are those of the masks (interpolation weights sum to 1). Memory:
    the (n, C·K, H, W) fp32 masks and an fp32 (and, with ``normalize``, L2-normalised) copy of the features for
    a chunk of n images at a time (:data:`CHUNK_ELEMENTS`), never the resized features nor a normalised copy
    of the whole batch. fp32 also inside an autocast region.

    Args:
        feats: Features, shape (N, L, h, w), any floating dtype (fp32 internally). Differentiable.
        class_map: Class of each pixel, integer (N, H, W), values in [0, C) or ``ignore_index``.
        part_map: Part of each pixel, integer (N, H, W), values in [-1, K).
        num_classes: C, >= 1.
        num_parts: K, >= 1.
        align_corners: ``align_corners`` of the bilinear resize being emulated (use the model's).
        ignore_index: Class value of excluded pixels; must not be in [0, C).
        normalize: L2-normalise every pixel of ``feats`` (over L, as ``F.normalize(feats, dim=1)``) before the
            resize; the means are then those of ``resize(normalize(feats))`` (Eq. 12 of
            :class:`PixelPartContrastLoss` with ``normalize_prototype_feats=True``).

    Returns:
        ``(means, counts)``: fp32 (N, C, K, L) and long (N, C, K), as :func:`masked_average_pool`.

    Raises:
        ValueError: As :func:`masked_average_pool`, and if the maps' batch size differs from that of ``feats``.
    """
    _check_ndim('feats', feats, 4, '(N, L, h, w)')
    _check_ndim('class_map', class_map, 3, '(N, H, W)')
    _check_ndim('part_map', part_map, 3, '(N, H, W)')
    _check_integer_dtype('class_map', class_map)
    _check_integer_dtype('part_map', part_map)
    positive_int('num_classes', num_classes)
    positive_int('num_parts', num_parts)
    if class_map.shape[0] != feats.shape[0] or part_map.shape != class_map.shape:
        raise ValueError(
            f'class_map {tuple(class_map.shape)} and part_map {tuple(part_map.shape)} must both be (N, H, W) with '
            f'the batch size N={feats.shape[0]} of feats {tuple(feats.shape)}')
    _check_ignore_index(ignore_index, num_classes)
    labelled = _check_class_values('class_map', class_map, num_classes, ignore_index)
    bad_part = (part_map < -1) | (part_map >= num_parts)
    if bool(bad_part.any()):
        raise ValueError(
            f'part_map must hold part indices in [0, K={num_parts}) or -1, got the value '
            f'{int(part_map[bad_part][0])}')

    n, dim, h, w = feats.shape
    out_h, out_w = class_map.shape[1:]
    num_bins = num_classes * num_parts
    device = feats.device
    pooled = (labelled & (part_map >= 0)).to(device)
    bins = torch.where(pooled, class_map.long().to(device) * num_parts + part_map.long().to(device), num_bins)
    offsets = torch.arange(n, device=device).reshape(n, 1) * (num_bins + 1)
    counts = torch.bincount((bins.reshape(n, -1) + offsets).reshape(-1), minlength=n * (num_bins + 1))
    counts = counts.reshape(n, num_bins + 1)[:, :num_bins]
    sums = []
    with no_autocast(device.type):  # fp32 sums: fp16 overflows on raw features, bf16 loses 3 digits
        rows = _linear_weights(out_h, h, align_corners, device)  # (H, h)
        cols = _linear_weights(out_w, w, align_corners, device)  # (W, w)
        step = _images_per_chunk(max((num_bins + 1) * out_h * out_w, dim * h * w))
        for start in range(0, n, step):
            chunk_bins = bins[start:start + step]
            size = chunk_bins.shape[0]
            masks = torch.zeros(size, num_bins + 1, out_h * out_w, device=device)
            masks.scatter_(1, chunk_bins.reshape(size, 1, -1), 1.0)
            masks = masks[:, :num_bins].reshape(size, num_bins, out_h, out_w)
            weights = torch.einsum('Yy,nqYX,Xx->nqyx', rows, masks, cols).reshape(size, num_bins, h * w)
            chunk = feats[start:start + step].float().reshape(size, dim, h * w)  # copied only if not fp32
            if normalize:
                chunk = F.normalize(chunk, dim=1)
            sums.append(torch.bmm(weights, chunk.transpose(1, 2)))  # (n, C·K, L)
    means = torch.cat(sums) / counts.clamp_min(1).unsqueeze(-1).float()
    return means.reshape(n, num_classes, num_parts, dim), counts.reshape(n, num_classes, num_parts)
