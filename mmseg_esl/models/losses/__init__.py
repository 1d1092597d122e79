"""Losses. Dynamic Soft Label (Eq. 3-6) and pixel-to-part contrast (Eq. 7-10) land here."""
from .soft_label import DSLLoss, dominant_classes, dynamic_soft_label, hard_label, soft_cross_entropy

__all__ = [
    'DSLLoss',
    'dominant_classes',
    'dynamic_soft_label',
    'hard_label',
    'soft_cross_entropy',
]
