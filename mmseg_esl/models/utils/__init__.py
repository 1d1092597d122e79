"""Model-side helpers shared by segmentors, losses and hooks: CutMix, EMA, part bank, prototypes, pseudo-label stats."""
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
from .ema import average_buffers_, check_teacher_student, ema_decay, ema_update_
from .memory_bank import PartMemoryBank
from .prototypes import ClassPixelReservoir, kmeans_prototypes
from .pseudo_label_stats import pseudo_label_stats

__all__ = [
    'ClassPixelReservoir',
    'average_buffers_',
    'check_teacher_student',
    'ema_decay',
    'ema_update_',
    'batch_norm_modes_of',
    'CutMixParams',
    'PartMemoryBank',
    'box_masks',
    'cutmix',
    'cutmix_masks',
    'derangement',
    'kmeans_prototypes',
    'make_cutmix_params',
    'pseudo_label_stats',
    'resize_mask',
    'sample_cutmix_boxes',
]
