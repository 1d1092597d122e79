"""Losses: Dynamic Soft Label (Eq. 3-6) and pixel-to-part contrast (Eq. 7-10, 12)."""
from .part_contrast import (
    assign_parts,
    batch_part_means,
    class_mean_loss,
    gather_pixels,
    masked_average_pool,
    momentum_update_prototypes_,
    part_infonce,
    part_infonce_from_bank,
    part_weighted_sums,
    sample_anchors,
    upsampled_masked_average_pool,
)
from .pixel_part_contrast_loss import PixelPartContrastLoss
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
