"""Model-side helpers shared by segmentors and losses: CutMix, the part memory bank, prototype K-means."""
from .batch_norm import batch_norm_modes_of
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
    'batch_norm_modes_of',
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
