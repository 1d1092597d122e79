"""The ``[labeled | unlabeled | CutMix partners]`` batch of ESL: roles, partners, valid pixels and pool CutMix.

``SemiSupervisedSampler`` lays a training batch out in that order and marks each sample's ``is_labeled``; the
unlabeled images and their partners form the weak *pool* (see :mod:`.step_data` for the shapes).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from mmseg.utils import SampleList
from torch import Tensor

from ..utils.cutmix import cutmix, derangement


def split_batch(data_samples: SampleList, *, partner: str) -> Tuple[List[int], List[int], List[int]]:
    """Positions of the labeled, unlabeled and CutMix-partner samples of a batch.

    Args:
        data_samples: The batch; every sample carries ``is_labeled`` in its metainfo.
        partner: ``semi_train_cfg.cutmix.partner``: ``'extra'`` (the second half of the unlabeled samples are
            partners) or ``'batch'`` (no partner samples).

    Returns:
        ``(labeled, unlabeled, partners)`` index lists; ``partners`` is empty for ``partner='batch'``.

    Raises:
        ValueError: If the flag is missing or the batch is not laid out as the sampler makes it.
    """
    flags = [ds.metainfo.get('is_labeled') for ds in data_samples]
    if any(flag is None for flag in flags):
        raise ValueError("Training samples need 'is_labeled' in their metainfo: build the datasets with "
                         "SplitSegDataset and add 'is_labeled' to PackSegInputs(meta_keys=...).")
    num_labeled = sum(bool(flag) for flag in flags)
    if not all(flags[:num_labeled]) or num_labeled == 0 or num_labeled == len(flags):
        raise ValueError(
            f'Expected a batch of labeled then unlabeled samples, got is_labeled={flags}. Use '
            'SemiSupervisedSampler and set train_dataloader.batch_size to its batch_size '
            '(num_labeled + num_unlabeled * (2 if cutmix_partners else 1)).')
    labeled = list(range(num_labeled))
    rest = list(range(num_labeled, len(flags)))
    if partner == 'batch':
        return labeled, rest, []
    if len(rest) % 2:
        raise ValueError(f"cutmix.partner='extra' needs as many partners as unlabeled images, got "
                         f'{len(rest)} unlabeled samples; enable cutmix_partners in SemiSupervisedSampler '
                         "or use cutmix.partner='batch'.")
    half = len(rest) // 2
    return labeled, rest[:half], rest[half:]


def partner_index(num_unlabeled: int, num_partners: int, device: torch.device) -> Tensor:
    """Index of each unlabeled image's partner in ``cat(unlabeled, partners)``: the extra partners in order, else
    a random derangement of the unlabeled images."""
    if num_partners:
        return torch.arange(num_unlabeled, device=device) + num_unlabeled
    return derangement(num_unlabeled, device=device)


def mix_pool(tensors: Sequence[Tensor], partner: Tensor, mask: Tensor) -> List[Tensor]:
    """CutMix rows ``[:U]`` of each pool tensor with rows ``partner`` of the same pool.

    Args:
        tensors: Pool tensors ``(P, ...)`` (images, probabilities, masks), mixed alike.
        partner: :func:`partner_index` ``(U,)``.
        mask: ``(U, H, W)`` bool, True where the partner's pixels are pasted.

    Returns:
        The mixed tensors, ``(U, ...)`` each.
    """
    num = mask.shape[0]
    pool_size = tensors[0].shape[0]
    if pool_size == num:
        return cutmix(tensors, partner, mask)
    # Pool = unlabeled + extra partners: pair i <-> U + i so that cutmix() sees one batch.
    swap = torch.cat([partner, torch.arange(num, device=partner.device)])
    full_mask = torch.cat([mask, torch.zeros_like(mask)])
    return [t[:num] for t in cutmix(tensors, swap, full_mask)]


def valid_pixel_masks(data_samples: SampleList, height: int, width: int, device: torch.device) -> Tensor:
    """Pixels that hold image content, not padding added by the data preprocessor.

    mmseg's ``stack_batch`` pads at the bottom and right and records each image's size in ``img_shape``.

    Args:
        data_samples: Samples of the batch (after the data preprocessor).
        height: Padded batch height H.
        width: Padded batch width W.
        device: Device of the result.

    Returns:
        Bool tensor ``(N, H, W)``.
    """
    sizes = torch.tensor([ds.img_shape[:2] for ds in data_samples], device=device)
    rows = torch.arange(height, device=device)[None, :, None] < sizes[:, 0, None, None]
    cols = torch.arange(width, device=device)[None, None, :] < sizes[:, 1, None, None]
    return rows & cols


def unlabeled_gt(samples: SampleList, device: torch.device) -> List[Tensor]:
    """Ground truth of the unlabeled samples that have it (for logged accuracy only, never a loss): ``[(N, H, W)]``
    with 255 (ignored) for the samples without, or ``[]`` if none has any. Training samples are padded to one
    size by the data preprocessor, so the maps stack."""
    maps = [ds.gt_sem_seg.data[0] if 'gt_sem_seg' in ds else None for ds in samples]
    first = next((m for m in maps if m is not None), None)
    if first is None:
        return []
    return [torch.stack([first.new_full(first.shape, 255) if m is None else m for m in maps]).to(device)]
