"""The synthetic batch of a timed iteration: N(0, 1) images, piecewise-constant labels, in the sampler's layout."""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from torch import Tensor


def blob_labels(num: int, size: int, num_classes: int, generator: torch.Generator, *, classes_per_image: int = 3,
                cells: int = 8, ignore_fraction: float = 0.05, ignore_index: int = 255) -> Tensor:
    """Piecewise-constant label maps ``(num, size, size)``: a ``cells``² grid of ``classes_per_image`` classes."""
    k = min(classes_per_image, num_classes)
    classes = torch.stack([torch.randperm(num_classes, generator=generator)[:k] for _ in range(num)])  # (N, k)
    grid = torch.randint(0, k, (num, cells, cells), generator=generator)
    coarse = classes.gather(1, grid.reshape(num, -1)).reshape(num, 1, cells, cells).float()
    labels = F.interpolate(coarse, size=(size, size), mode='nearest')[:, 0].long()
    labels[torch.rand(labels.shape, generator=generator) < ignore_fraction] = ignore_index
    return labels


def make_batch(*, num_classes: int, labeled: int, unlabeled: int, partners: int, crop: int, device: str,
               seed: int) -> Tuple[Tensor, List[SegDataSample]]:
    """Random normalised images ``[labeled | unlabeled | partners]`` and their samples, on ``device``."""
    g = torch.Generator().manual_seed(seed)
    total = labeled + unlabeled + partners
    inputs = torch.randn(total, 3, crop, crop, generator=g).to(device)
    labels = blob_labels(labeled, crop, num_classes, g).to(device)
    samples = []
    for i in range(total):
        meta = dict(is_labeled=i < labeled, img_shape=(crop, crop), pad_shape=(crop, crop), ori_shape=(crop, crop))
        sample = SegDataSample(metainfo=meta)
        if i < labeled:
            sample.gt_sem_seg = PixelData(data=labels[i][None])
        samples.append(sample)
    return inputs, samples
