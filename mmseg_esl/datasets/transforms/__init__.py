"""Data transforms for semi-supervised training and the paper's evaluation protocols."""
from .loading import LoadOptionalAnnotations
from .pad_center_crop import PadCenterCrop

__all__ = ['LoadOptionalAnnotations', 'PadCenterCrop']
