"""Model-side helpers shared by segmentors and losses (CutMix, memory bank, ...)."""
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

__all__ = [
    'CutMixParams',
    'box_masks',
    'cutmix',
    'cutmix_masks',
    'derangement',
    'make_cutmix_params',
    'resize_mask',
    'sample_cutmix_boxes',
]
