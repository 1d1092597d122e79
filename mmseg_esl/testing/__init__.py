"""Helpers for tests and smoke runs: tiny on-disk datasets generated on the spot (no downloads)."""
from .tiny_voc import TINY_VOC_CLASSES, TINY_VOC_PALETTE, make_tiny_voc, voc_palette

__all__ = ['TINY_VOC_CLASSES', 'TINY_VOC_PALETTE', 'make_tiny_voc', 'voc_palette']
