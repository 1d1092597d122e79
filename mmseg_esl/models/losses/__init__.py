"""Losses: Dynamic Soft Label (Eq. 3-6) and pixel-to-part contrast (Eq. 7-10, 12)."""
from .anchor_sampling import gather_pixels, sample_anchors
from .infonce import class_mean_loss, part_infonce, part_infonce_from_bank
from .masked_pooling import masked_average_pool, upsampled_masked_average_pool
from .part_assignment import assign_parts
from .pixel_part_contrast_loss import PixelPartContrastLoss
from .prototype_update import batch_part_means, momentum_update_prototypes_, part_weighted_sums
from .soft_label import DSLLoss, dominant_classes, dynamic_soft_label, hard_label, soft_cross_entropy

__all__ = [
    'DSLLoss',
    'PixelPartContrastLoss',
    'assign_parts',
    'batch_part_means',
    'class_mean_loss',
    'dominant_classes',
    'dynamic_soft_label',
    'gather_pixels',
    'hard_label',
    'masked_average_pool',
    'momentum_update_prototypes_',
    'part_infonce',
    'part_infonce_from_bank',
    'part_weighted_sums',
    'sample_anchors',
    'soft_cross_entropy',
    'upsampled_masked_average_pool',
]
