"""Eq. 7: the part (subclass) ``k*`` of each pixel, the most similar prototype of its class."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .contrast_common import (
    _check_class_values,
    _check_ignore_index,
    _check_integer_dtype,
    _check_ndim,
    _images_per_chunk,
    no_autocast,
)

__all__ = ['assign_parts']


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
