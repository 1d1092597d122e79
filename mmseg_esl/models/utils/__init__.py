"""Model-side helpers shared by segmentors and losses: CutMix, the part memory bank, prototype K-means."""
from .cutmix import (
    CutMixParams,
    box_masks,
    cutmix,
    cutmix_masks,
    derangement,
    make_cutmix_params,
    resize_mask,
    sample_cutmix_boxes,
)
from .memory_bank import PartMemoryBank
from .prototypes import ClassPixelReservoir, kmeans_prototypes

__all__ = [
    'ClassPixelReservoir',
    'CutMixParams',
    'PartMemoryBank',
    'box_masks',
    'cutmix',
    'cutmix_masks',
    'derangement',
    'kmeans_prototypes',
    'make_cutmix_params',
    'resize_mask',
    'sample_cutmix_boxes',
]
