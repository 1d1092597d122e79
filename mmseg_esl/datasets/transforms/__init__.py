"""Data transforms for semi-supervised training."""
from .loading import LoadOptionalAnnotations

__all__ = ['LoadOptionalAnnotations']
