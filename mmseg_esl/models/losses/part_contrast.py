"""Pixel-to-part contrastive learning (paper Sec. 3.3) and the prototype update of Sec. 3.4, as pure functions.

Each class ``c`` is split into ``K`` object parts ("subclasses") with prototypes ``P`` of shape (C, K, L').
A pixel is assigned to the part of its class whose prototype it is most similar to, the teacher's projected
features are averaged per part and pushed into a memory bank, and the student's anchors are contrasted
against one positive of their own part and ``N_s`` negatives of the other parts. The paper's equations map
onto this module as follows:

* **Eq. 7 -> :func:`assign_parts`.** ``k* = argmax_k cos(E^t(x)_j, P[c*, k])`` for each pixel ``j`` of class
  ``c*``; -1 at ignored pixels.
* **Eq. 8 -> :func:`masked_average_pool`.** Per image, the mean feature ``mu_{c,k}`` of the pixels of each
  part (mask average pooling, MAP), with the pixel counts; absent parts get mean 0 and count 0.
* **Eq. 9 -> :func:`sample_anchors`.** A random ``ratio`` (10 %) of the qualifying pixels of each class; the
  caller says which pixels qualify (labeled pixels of a class, unlabeled pixels with ``p^t_c > zeta``).
  :func:`gather_pixels` picks their feature vectors.
* **Eq. 10 -> :func:`part_infonce` and :func:`part_infonce_from_bank`.** The per-anchor InfoNCE term
  ``-log(Phi(v, v+) / (Phi(v, v+) + sum_{v-} Phi(v, v-)))`` with ``Phi_sigma(a, b) = exp(cos(a, b) / sigma)``.
  :func:`part_infonce` takes the samples themselves (the reference form); :func:`part_infonce_from_bank` takes
  indices into the memory bank and never builds the (A, N_s, L) tensor of negatives (the training form).
* **L_CTR -> :func:`class_mean_loss`.** ``L_CTR = (1/C) sum_c L^c_CTR``, ``L^c_CTR`` being the mean of Eq. 10
  over the anchors of class ``c``.
* **Eq. 12 -> :func:`momentum_update_prototypes_`.** ``P = theta * P + (1 - theta) * P'``, applied to the
  parts present in the batch only; ``P'`` is the pixel-weighted batch MAP of :func:`batch_part_means`
  (built from :func:`part_weighted_sums`, whose sums are what DDP all-reduces).

Paper defaults: ``zeta = 0.95``, 10 % anchors per class, ``N_s = 255`` negatives, ``sigma = 0.5``,
``theta = 0.99``, ``K = 5``.

Conventions: feature maps are ``(N, L, H, W)`` (channels in dim 1); class and part maps are long ``(N, H, W)``
at the *same* resolution as the features they index (nothing here resizes: the caller resizes the label or
the features first, as the paper does before MAP); part index -1 means "no part". Flat pixel indices index
``class_map.reshape(-1)``, i.e. ``n * H * W + y * W + x``. Everything is device-agnostic and vectorised,
without Python loops over pixels, anchors, classes, parts or queue entries; the only loops run over chunks of
anchors (:func:`part_infonce_from_bank`) or of images (:func:`assign_parts`, the two MAPs), so that no
temporary exceeds :data:`CHUNK_ELEMENTS` elements per image chunk (e.g. an fp32 copy of a half-precision
``E^t`` is made one chunk at a time, never for the whole batch). Checks of index values cost one host-device
synchronisation each.

**Precision, also under AMP.** Similarities, means and losses are computed in fp32 whatever the input dtype,
with ``torch.autocast`` switched off inside (an autocast region would otherwise run the einsums and matmuls in
fp16/bf16: the pixel sums of Eq. 8/12 overflow fp16 for raw features, and bf16 flips about 0.4 % of the parts of
Eq. 7). One deliberate exception: under autocast, the anchor x bank matmul of :func:`part_infonce_from_bank`
runs in the autocast dtype (fp32 accumulation), since it is the one large matmul of the contrastive term and
its operands are unit vectors (cosines in [-1, 1] cannot overflow; their error is about 1e-3 in fp16, 4e-3 in
bf16); its logits, log-sum-exp and result are fp32.
"""
from __future__ import annotations

import math
import numbers
from contextlib import nullcontext
from typing import Callable, ContextManager, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ...checks import positive_int

__all__ = [
    'assign_parts',
    'batch_part_means',
    'class_mean_loss',
    'gather_pixels',
    'masked_average_pool',
    'momentum_update_prototypes_',
    'part_infonce',
    'part_infonce_from_bank',
    'part_weighted_sums',
    'sample_anchors',
    'upsampled_masked_average_pool',
]

#: Reductions of :func:`class_mean_loss`.
REDUCTIONS: Tuple[str, ...] = ('paper', 'present')

#: Upper bound on the elements of one chunk's temporaries in :func:`assign_parts`, :func:`masked_average_pool`
#: and :func:`upsampled_masked_average_pool` (128 MiB in fp32); they process as many images at a time as fit
#: (at least one).
CHUNK_ELEMENTS: int = 2**25

#: Device types on which ``torch.autocast`` exists.
_AUTOCAST_DEVICES: Tuple[str, ...] = ('cuda', 'cpu', 'xpu', 'mps', 'hpu')

#: A product ``ratio * count`` within this distance of an integer counts as that integer in
#: :func:`sample_anchors`, so that 10 % of 30 pixels is 3 anchors and not 4 (``0.1 * 30`` is
#: ``3.0000000000000004`` in floating point). Far above the float64 rounding of the product for any pixel count.
QUOTA_ATOL: float = 1e-6


# ------------------------------------------------------------------------------------------- precision, chunks


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


# --------------------------------------------------------------------------------------------- argument checks


def _check_ndim(name: str, tensor: Tensor, ndim: int, layout: str) -> None:
    if not isinstance(tensor, Tensor):
        raise ValueError(f'{name} must be a torch.Tensor of shape {layout}, got {type(tensor).__name__}')
    if tensor.ndim != ndim:
        raise ValueError(f'{name} must be {ndim}-D {layout}, got shape {tuple(tensor.shape)}')


def _check_integer_dtype(name: str, tensor: Tensor) -> None:
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise ValueError(f'{name} must hold integer indices (e.g. torch.long), got dtype {tensor.dtype}')


def _check_positive_int(name: str, value: int) -> None:
    positive_int(name, value)


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ValueError(f'temperature must be a finite number > 0, got temperature={temperature!r}')


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


def _check_same_map_shape(feats_name: str, feats: Tensor, map_name: str, label_map: Tensor) -> None:
    expected = (feats.shape[0], *feats.shape[2:])
    if tuple(label_map.shape) != expected:
        raise ValueError(
            f'{map_name} shape {tuple(label_map.shape)} does not match (N, H, W) = {expected} of {feats_name} '
            f'shape {tuple(feats.shape)}; resize the map (nearest) or the features to the same resolution first')


# ------------------------------------------------------------------------------------------------ Eq. 7 and 8


def assign_parts(feats: Tensor,
                 class_map: Tensor,
                 prototypes: Tensor,
                 *,
                 ignore_index: int = 255,
                 align_corners: bool = False) -> Tensor:
    """The part (subclass) index ``k*`` of each pixel, Eq. 7.

    ``k*_j = argmax_k cos(feats_j, prototypes[c*_j, k])`` where ``c*_j = class_map_j``. One einsum gives the
    similarities to all ``C * K`` prototypes, shape (n, C * K, h, w) in fp32 for a chunk of n images (as many
    as fit into :data:`CHUNK_ELEMENTS`); the ``K`` values of the pixel's own class are then gathered and
    arg-maxed. Ties (e.g. an all-zero feature) go to the lowest ``k``. Runs without autograd (the result is an
    index) and in fp32 also inside an autocast region.

    **Resolution.** ``class_map`` sets the resolution of the result. If it equals that of ``feats``, only the
    prototypes are normalised (``||feats_j||`` does not depend on ``k``). If it differs (ESL computes Eq. 7 at
    the projector's stride ``tau = 4`` while ``E^t`` of a dilated ResNet is at stride 8), the *cosine* map
    (N, C * K, h, w) is resized bilinearly to ``class_map``'s (H, W) and arg-maxed there: the feature map
    ``E^t`` (2048 channels) is never upsampled, only its ``C * K`` similarity scores are. Upsampled cosines are
    an interpolation of per-pixel cosines, not the cosine of interpolated features; both agree at the
    feature map's own pixels.

    Args:
        feats: Features ``E^t(x)``, shape (N, L', h, w), any floating dtype (fp32 internally).
        class_map: Class ``c*`` of each pixel (the label ``y^l``, or the teacher's arg-max for unlabeled
            images), integer tensor of shape (N, H, W), values in [0, C) or ``ignore_index``; (H, W) may
            differ from the features' (h, w).
        prototypes: Part prototypes ``P``, shape (C, K, L').
        ignore_index: Class value of pixels that get no part; must not be in [0, C).
        align_corners: ``align_corners`` of the bilinear resize of the cosine map (use the model's).

    Returns:
        LongTensor of shape (N, H, W) on ``feats.device``: ``k*`` in [0, K), or -1 where ``class_map`` is
        ``ignore_index``.

    Raises:
        ValueError: If a tensor has the wrong number of dimensions or dtype, the shapes disagree, ``ignore_index``
            is a class index, or ``class_map`` holds a value that is neither in [0, C) nor ``ignore_index``
            (the message names the value).
    """
    _check_ndim('feats', feats, 4, "(N, L', H, W)")
    _check_ndim('class_map', class_map, 3, '(N, H, W)')
    _check_ndim('prototypes', prototypes, 3, "(C, K, L')")
    _check_integer_dtype('class_map', class_map)
    num_classes, num_parts, dim = prototypes.shape
    if num_classes < 1 or num_parts < 1:
        raise ValueError(f'prototypes must have C >= 1 and K >= 1, got shape {tuple(prototypes.shape)}')
    if feats.shape[1] != dim:
        raise ValueError(
            f"feats has L'={feats.shape[1]} channels but prototypes have L'={dim} (shape "
            f'{tuple(prototypes.shape)})')
    if class_map.shape[0] != feats.shape[0]:
        raise ValueError(
            f'class_map batch size {class_map.shape[0]} (shape {tuple(class_map.shape)}) does not match feats '
            f'batch size {feats.shape[0]} (shape {tuple(feats.shape)})')
    _check_ignore_index(ignore_index, num_classes)
    labelled = _check_class_values('class_map', class_map, num_classes, ignore_index)

    n, _, h, w = feats.shape
    out_h, out_w = class_map.shape[1:]
    device = feats.device
    resize = (out_h, out_w) != (h, w)
    with torch.no_grad(), no_autocast(device.type):
        protos = F.normalize(prototypes.detach().float(), dim=-1).to(device)
        protos = protos.reshape(num_classes * num_parts, dim)
        classes = torch.where(labelled, class_map, 0).long().to(device)  # any class where ignored
        parts = torch.empty((n, out_h, out_w), dtype=torch.long, device=device)
        step = _images_per_chunk(max(dim * h * w, num_classes * num_parts * out_h * out_w))
        for start in range(0, n, step):
            stop = min(start + step, n)
            chunk = feats[start:stop].detach().float()  # a copy only for non-fp32 features, one chunk at a time
            sims = torch.einsum('nlhw,ql->nqhw', chunk, protos)
            if resize:
                norms = chunk.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (n, 1, h, w): cosines, then resize
                sims = F.interpolate(sims / norms, size=(out_h, out_w), mode='bilinear', align_corners=align_corners)
            sims = sims.reshape(stop - start, num_classes, num_parts, out_h, out_w)
            index = classes[start:stop].reshape(stop - start, 1, 1, out_h, out_w).expand(-1, 1, num_parts, -1, -1)
            parts[start:stop] = sims.gather(1, index).squeeze(1).argmax(dim=1)  # (n, K, H, W) -> (n, H, W)
        return torch.where(labelled.to(device), parts, -1)


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
    _check_positive_int('num_classes', num_classes)
    _check_positive_int('num_parts', num_parts)
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
    of the whole batch (1.7 GB for 24 fp16 ``E^t`` of ResNet-101 at 65²). fp32 also inside an autocast region.

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
    _check_positive_int('num_classes', num_classes)
    _check_positive_int('num_parts', num_parts)
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


# ------------------------------------------------------------------------------------------------------ Eq. 9


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
        _check_positive_int('max_per_class', max_per_class)
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


# ----------------------------------------------------------------------------------------------------- Eq. 10


def part_infonce(anchors: Tensor, positives: Tensor, negatives: Tensor, temperature: float = 0.5) -> Tensor:
    """Per-anchor InfoNCE loss of Eq. 10, reference form taking the samples themselves.

    ``loss_j = -log(Phi(v_j, v_j+) / (Phi(v_j, v_j+) + sum_i Phi(v_j, v_ji-)))`` with
    ``Phi_sigma(a, b) = exp(cos(a, b) / sigma)``, computed stably as
    ``logsumexp([s+, s-_1, ..., s-_Ns]) - s+`` with ``s = cos / sigma``. A zero vector has cosine 0 with
    everything (``F.normalize``). With no negatives (``N_s = 0``) the loss is 0. Gradients flow to all three
    inputs; detach the samples to treat them as constants. This form holds an (A, N_s, L) tensor; use
    :func:`part_infonce_from_bank` in training.

    Args:
        anchors: Anchor features ``v``, shape (A, L).
        positives: One positive per anchor ``v+``, shape (A, L).
        negatives: ``N_s`` negatives per anchor, shape (A, N_s, L).
        temperature: ``sigma`` > 0. Paper: 0.5.

    Returns:
        fp32 tensor of shape (A,), each entry >= 0 up to rounding.

    Raises:
        ValueError: If the shapes disagree or ``temperature`` is not a finite number > 0.
    """
    _check_ndim('anchors', anchors, 2, '(A, L)')
    _check_ndim('positives', positives, 2, '(A, L)')
    _check_ndim('negatives', negatives, 3, '(A, N_s, L)')
    _check_temperature(temperature)
    if positives.shape != anchors.shape:
        raise ValueError(
            f'positives shape {tuple(positives.shape)} does not match anchors shape {tuple(anchors.shape)}')
    if negatives.shape[0] != anchors.shape[0] or negatives.shape[2] != anchors.shape[1]:
        raise ValueError(
            f'negatives shape {tuple(negatives.shape)} does not match (A, N_s, L) with (A, L) = '
            f'{tuple(anchors.shape)} of anchors')
    v = F.normalize(anchors.float(), dim=-1)
    pos = (v * F.normalize(positives.float(), dim=-1)).sum(-1, keepdim=True)  # (A, 1)
    neg = torch.einsum('al,anl->an', v, F.normalize(negatives.float(), dim=-1))  # (A, N_s)
    logits = torch.cat([pos, neg], dim=1) / temperature
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


class _GatheredBankCosines(torch.autograd.Function):
    """``cos[a, j] = <u_a, keys[:, columns[a, j]]>``, chunk by chunk, keeping no (A, Q) tensor for the backward.

    Plain autograd on ``(u @ keys).gather(1, columns)`` saves every chunk's (chunk, Q) similarity matrix, because
    the backward of ``gather`` keeps the tensor it gathered from: A x Q values in all, 2.8 GB at ESL's paper
    scale (A ≈ 26k anchors, Q = 26,880 bank entries, fp32) on top of the step's peak memory (measured on an
    H100, docs/benchmarks.md). The cosines are linear in ``u``, so the backward needs only ``keys`` and
    ``columns``: ``grad_u[a] = sum_j grad_cos[a, j] * keys[:, columns[a, j]]``, a weighted sum of bank rows,
    which one ``embedding_bag`` computes in a single pass: ``A x (1 + N_s) x L`` multiply-adds instead of the
    ``A x Q x L`` of ``scatter(grad_cos -> (chunk, Q)) @ keys^T`` (105 times fewer at the paper's Q = 26,880 and
    N_s = 255), and no (chunk, Q) gradient in memory (5-9 times faster than that matmul on a CPU; memory-bound
    on a GPU, 13.6 GB of fp32 bank rows read at paper scale against 0.7 TFLOP for the matmul). The only saved
    tensors are ``keys`` (already alive: the normalised bank) and the (A, 1 + N_s) ``columns``.
    """

    @staticmethod
    def forward(ctx, unit: Tensor, keys: Tensor, columns: Tensor, chunk_size: int) -> Tensor:  # noqa: D102
        ctx.save_for_backward(keys, columns)
        ctx.chunk_size = chunk_size
        ctx.unit_dtype = unit.dtype
        out = [(unit[start:start + chunk_size] @ keys).gather(1, columns[start:start + chunk_size]).float()
               for start in range(0, unit.shape[0], chunk_size)]  # (chunk, Q) -> (chunk, 1 + N_s)
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad_cos: Tensor) -> Tuple[Optional[Tensor], None, None, None]:  # noqa: D102
        keys, columns = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        rows = keys.t()  # (Q, L): the bank rows
        grad = F.embedding_bag(columns, rows, per_sample_weights=grad_cos.to(rows.dtype).contiguous(), mode='sum')
        return grad.to(ctx.unit_dtype), None, None, None  # (A, L)


def part_infonce_from_bank(anchors: Tensor,
                           bank: Tensor,
                           pos_idx: Tensor,
                           neg_idx: Tensor,
                           temperature: float = 0.5,
                           *,
                           chunk_size: int = 2048,
                           return_cos: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor, Tensor]]:
    """Per-anchor InfoNCE loss of Eq. 10 with positives and negatives given as rows of the memory bank.

    Same values as :func:`part_infonce` on ``(anchors, bank[pos_idx], bank[neg_idx])``, but the
    (A, N_s, L) tensor of negatives is never built: the bank is normalised once, and for each chunk of at most
    ``chunk_size`` anchors the (chunk, Q) matrix of cosine similarities to all bank entries is computed by one
    matmul, from which the positive and negative columns are gathered (:class:`_GatheredBankCosines`, whose
    backward recomputes nothing and saves no (chunk, Q) matrix). Memory (forward and backward) is
    bounded by ``chunk_size x Q`` similarities plus ``A x (1 + N_s)`` logits: at ESL's paper scale (A ≈ 25k
    anchors, Q = 21 · 5 · 256 = 26,880, L = 512) one chunk of 2048 is 220 MB in fp32, against 13 GB for the
    (A, N_s, L) negatives. The bank is detached (a constant: the memory bank holds teacher features); gradients
    flow to ``anchors`` only. Inside an autocast region the matmul runs in the autocast dtype on unit vectors
    (module docstring); the cosines, logits and losses are fp32.

    Why a matmul against the whole bank rather than gathering the ``1 + N_s`` rows per anchor: the matmul does
    ``Q / (1 + N_s)`` (≈ 105) times the multiply-adds, but at one tensor-core GEMM per chunk; gathering reads
    ``A x (1 + N_s) x L`` values (10 GB at paper scale, fp32) from memory, which measured no faster on a CPU
    and is memory-bound on a GPU.

    Args:
        anchors: Anchor features ``v`` (student ``z^s``), shape (A, L).
        bank: Memory bank entries, shape (Q, L) (e.g. the C x K FIFO queues flattened).
        pos_idx: LongTensor (A,), the bank row of each anchor's positive, in [0, Q).
        neg_idx: LongTensor (A, N_s), the bank rows of each anchor's negatives, in [0, Q).
        temperature: ``sigma`` > 0. Paper: 0.5.
        chunk_size: Anchors per matmul, >= 1.
        return_cos: Also return, for logging, each anchor's cosine similarity to its positive and its mean
            cosine similarity to its negatives (gathered from the same matmul, detached).

    Returns:
        fp32 tensor of shape (A,); with ``return_cos``, the tuple ``(loss, pos_cos, neg_cos)`` of three (A,)
        tensors.

    Raises:
        ValueError: If a shape or dtype is wrong, an index is out of range, or ``temperature``/``chunk_size``
            is invalid.
    """
    _check_ndim('anchors', anchors, 2, '(A, L)')
    _check_ndim('bank', bank, 2, '(Q, L)')
    _check_ndim('pos_idx', pos_idx, 1, '(A,)')
    _check_ndim('neg_idx', neg_idx, 2, '(A, N_s)')
    _check_integer_dtype('pos_idx', pos_idx)
    _check_integer_dtype('neg_idx', neg_idx)
    _check_temperature(temperature)
    _check_positive_int('chunk_size', chunk_size)
    num_anchors = anchors.shape[0]
    if bank.shape[1] != anchors.shape[1]:
        raise ValueError(
            f'bank shape {tuple(bank.shape)} does not match the feature dimension L={anchors.shape[1]} of anchors')
    if pos_idx.shape[0] != num_anchors or neg_idx.shape[0] != num_anchors:
        raise ValueError(
            f'pos_idx shape {tuple(pos_idx.shape)} and neg_idx shape {tuple(neg_idx.shape)} must have A='
            f'{num_anchors} rows, as anchors (shape {tuple(anchors.shape)})')
    num_entries = bank.shape[0]
    _check_index_range('pos_idx', pos_idx, num_entries, 'rows of bank')
    _check_index_range('neg_idx', neg_idx, num_entries, 'rows of bank')

    device_type = anchors.device.type
    matmul_dtype = autocast_dtype(device_type) or torch.float32  # see the module docstring (precision)
    if num_anchors == 0:
        loss = anchors.float().sum(dim=1) * 0.0  # shape (0,), connected to the graph of anchors
        empty = loss.detach()
        return (loss, empty, empty) if return_cos else loss
    with no_autocast(device_type):
        keys = F.normalize(bank.detach().float(), dim=-1).to(matmul_dtype).t()  # (L, Q), cast once
        columns = torch.cat([pos_idx.long().unsqueeze(1), neg_idx.long()], dim=1)  # (A, 1 + N_s)
        unit = F.normalize(anchors.float(), dim=-1).to(matmul_dtype)  # (A, L)
        cos = _GatheredBankCosines.apply(unit, keys, columns, int(chunk_size))  # (A, 1 + N_s), fp32
        logits = cos / temperature
        loss = torch.logsumexp(logits, dim=1) - logits[:, 0]
    if return_cos:
        return loss, cos[:, 0].detach(), cos[:, 1:].detach().mean(dim=1)
    return loss


# ------------------------------------------------------------------------------------------------------ L_CTR


def class_mean_loss(per_anchor_loss: Tensor,
                    anchor_classes: Tensor,
                    num_classes: int,
                    *,
                    reduction: str = 'paper') -> Tensor:
    """``L_CTR``: the per-class means of the per-anchor losses (``L^c_CTR`` of Eq. 10), averaged over classes.

    ``reduction`` chooses the average over classes:

    * ``'paper'`` (default): ``(1/C) sum_c L^c_CTR`` with ``C = num_classes``, as in the paper; a class with
      no anchor contributes 0 but still counts in ``C``.
    * ``'present'``: the mean over the classes that have anchors (U2PL's convention). It equals
      ``'paper' * C / C_present``, so it scales the effective ``lambda_2`` of Eq. 11 up by ``C / C_present``
      (per batch), i.e. it is not a drop-in replacement at the same ``lambda_2``.

    With no anchor at all the result is 0 (never NaN), connected to the graph of ``per_anchor_loss`` so that
    ``backward()`` works.

    Args:
        per_anchor_loss: Loss of each anchor (:func:`part_infonce_from_bank`), shape (A,).
        anchor_classes: Class of each anchor, integer (A,), values in [0, C).
        num_classes: C, >= 1.
        reduction: ``'paper'`` or ``'present'``.

    Returns:
        Scalar fp32 tensor.

    Raises:
        ValueError: If a shape or dtype is wrong, a class is out of range, or ``num_classes``/``reduction`` is
            invalid.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f'reduction must be one of {REDUCTIONS}, got reduction={reduction!r}')
    _check_ndim('per_anchor_loss', per_anchor_loss, 1, '(A,)')
    _check_ndim('anchor_classes', anchor_classes, 1, '(A,)')
    _check_integer_dtype('anchor_classes', anchor_classes)
    _check_positive_int('num_classes', num_classes)
    if anchor_classes.shape != per_anchor_loss.shape:
        raise ValueError(
            f'anchor_classes shape {tuple(anchor_classes.shape)} does not match per_anchor_loss shape '
            f'{tuple(per_anchor_loss.shape)}')
    _check_index_range('anchor_classes', anchor_classes, num_classes, 'classes')
    classes = anchor_classes.long()
    loss = per_anchor_loss.float()
    sums = loss.new_zeros(num_classes).index_add(0, classes, loss)
    counts = torch.bincount(classes, minlength=num_classes)
    per_class = sums / counts.clamp_min(1).float()
    if reduction == 'paper':
        return per_class.sum() / num_classes
    return per_class.sum() / (counts > 0).sum().clamp_min(1).float()


# ----------------------------------------------------------------------------------------------------- Eq. 12


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
