"""Colours for object parts (paper Fig. 4 and the part panels of Fig. 6): one colour per (class, part).

A pixel's part is ``(c*, k*)``: its class and the nearest of the class's K prototypes (Eq. 7,
``PixelPartContrastLoss.assign``). :func:`part_palette` gives each class its own hue (spread with the golden
ratio, so neighbouring class indices differ clearly) and each of its K parts its own lightness, so the parts of
one object read as shades of one colour. No palette colour is black: :data:`NO_PART_COLOUR` marks pixels
without a part (ignored label, class not shown).
"""
from __future__ import annotations

import colorsys

import numpy as np

__all__ = ['NO_PART_COLOUR', 'class_palette', 'colour_parts', 'part_palette']

#: Colour of pixels that have no part (part index -1 or a class outside the palette), RGB.
NO_PART_COLOUR = np.array([0, 0, 0], dtype=np.uint8)
_GOLDEN = 0.618033988749895


def _hue(class_index: int) -> float:
    return (0.03 + class_index * _GOLDEN) % 1.0


def part_palette(num_classes: int, num_parts: int) -> np.ndarray:
    """Distinct RGB colours for every (class, part).

    Args:
        num_classes: C >= 1.
        num_parts: K >= 1.

    Returns:
        (C, K, 3) uint8; class c has hue ``0.03 + c · 0.618 (mod 1)``, part k lightness from 0.30 (k = 0) to
        0.72 (k = K - 1), saturation 0.8.

    Raises:
        ValueError: If C or K is < 1.
    """
    if num_classes < 1 or num_parts < 1:
        raise ValueError(f'part_palette needs num_classes >= 1 and num_parts >= 1, got {num_classes}, {num_parts}')
    lightness = np.linspace(0.30, 0.72, num_parts) if num_parts > 1 else np.array([0.5])
    palette = np.array([[colorsys.hls_to_rgb(_hue(c), light, 0.8) for light in lightness]
                        for c in range(num_classes)])
    return np.rint(palette * 255).astype(np.uint8)


def class_palette(num_classes: int) -> np.ndarray:
    """One RGB colour per class, the hue of :func:`part_palette` at lightness 0.5: (C, 3) uint8."""
    return part_palette(num_classes, 1)[:, 0]


def colour_parts(class_map: np.ndarray, part_map: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Colours every pixel by its (class, part).

    Args:
        class_map: (H, W) integer classes; values outside [0, C) get :data:`NO_PART_COLOUR`.
        part_map: (H, W) integer parts, -1 where none (:data:`NO_PART_COLOUR`).
        palette: (C, K, 3) uint8 from :func:`part_palette`.

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        ValueError: If the maps differ in shape or a part index is >= K.
    """
    class_map, part_map = np.asarray(class_map), np.asarray(part_map)
    if class_map.shape != part_map.shape:
        raise ValueError(f'class_map {class_map.shape} and part_map {part_map.shape} must have the same shape')
    num_classes, num_parts = palette.shape[:2]
    if part_map.size and part_map.max() >= num_parts:
        raise ValueError(f'part index {int(part_map.max())} is outside the palette of K = {num_parts} parts')
    has_part = (part_map >= 0) & (class_map >= 0) & (class_map < num_classes)
    out = np.empty((*class_map.shape, 3), dtype=np.uint8)
    out[:] = NO_PART_COLOUR
    out[has_part] = palette[class_map[has_part], part_map[has_part]]
    return out
