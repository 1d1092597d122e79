"""Helpers for tests and smoke runs: tiny on-disk datasets generated on the spot (no downloads)."""
from .demo_dataset import (
    DEMO_CLASS_PARTS,
    DEMO_CLASSES,
    DEMO_PALETTE,
    DEMO_PART_APPEARANCES,
    make_demo_dataset,
    make_demo_sample,
    shared_part_appearances,
)
from .tiny_voc import TINY_VOC_CLASSES, TINY_VOC_PALETTE, make_tiny_voc, voc_palette

__all__ = ['DEMO_CLASSES', 'DEMO_CLASS_PARTS', 'DEMO_PALETTE', 'DEMO_PART_APPEARANCES', 'TINY_VOC_CLASSES',
           'TINY_VOC_PALETTE', 'make_demo_dataset', 'make_demo_sample', 'make_tiny_voc', 'shared_part_appearances',
           'voc_palette']
