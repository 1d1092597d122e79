"""Drawing primitives of the demo dataset: part textures and sub-pixel shapes on a canvas (numpy + OpenCV)."""
from __future__ import annotations

import math
from typing import Any, Sequence, Tuple

import cv2
import numpy as np

__all__ = ['SHIFT', 'TEXTURES', 'Shape', 'disc', 'draw_shape', 'jitter_shape', 'jittered_colour', 'part_texture',
           'rect']

SHIFT = 4  # fractional bits of cv2's drawing coordinates
TEXTURES = ('plain', 'hstripes', 'vstripes', 'checker', 'dots', 'rings', 'speckle', 'gradient')

# A shape on the canvas: ('poly', ((x, y), ...)) or ('ellipse', (cx, cy, half_axis_x, half_axis_y, angle_deg)).
Shape = Tuple[str, Tuple[Any, ...]]


def rect(x0: float, y0: float, x1: float, y1: float) -> Shape:
    """An axis-aligned rectangle as a polygon."""
    return 'poly', ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def disc(cx: float, cy: float, radius: float) -> Shape:
    """A circle as an ellipse."""
    return 'ellipse', (cx, cy, radius, radius, 0.0)


def part_texture(kind: str, colour: np.ndarray, colour2: np.ndarray, period: float, height: int, width: int,
                 rng: np.random.Generator, *, centre: Tuple[float, float] = (0.0, 0.0), angle: float = 0.0
                 ) -> np.ndarray:
    """An ``(H, W, 3)`` float32 texture; ``angle`` (radians) rotates the stripe / checker / dot patterns."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if angle:
        xx, yy = xx * math.cos(angle) + yy * math.sin(angle), yy * math.cos(angle) - xx * math.sin(angle)
    half = max(period / 2.0, 0.5)
    if kind == 'plain':
        weight = np.zeros((height, width), np.float32)
    elif kind == 'hstripes':
        weight = np.floor(yy / half) % 2
    elif kind == 'vstripes':
        weight = np.floor(xx / half) % 2
    elif kind == 'checker':
        weight = (np.floor(yy / half) + np.floor(xx / half)) % 2
    elif kind == 'dots':
        dy, dx = yy % period - period / 2.0, xx % period - period / 2.0
        weight = (dy * dy + dx * dx <= (0.3 * period) ** 2).astype(np.float32)
    elif kind == 'rings':
        weight = np.floor(np.hypot(yy - centre[1], xx - centre[0]) / half) % 2
    elif kind == 'speckle':
        cells = (max(1, int(height / period)), max(1, int(width / period)))
        blobs = (rng.random(cells) < 0.35).astype(np.float32)
        weight = cv2.resize(blobs, (width, height), interpolation=cv2.INTER_LINEAR) > 0.5
    elif kind == 'gradient':
        weight = np.clip(0.5 + (yy - centre[1]) / period, 0.0, 1.0)
    else:
        raise ValueError(f'unknown texture {kind!r}; expected one of {TEXTURES}.')
    weight = np.asarray(weight, np.float32)[..., None]
    return colour * (1.0 - weight) + colour2 * weight


def draw_shape(mask: np.ndarray, shape: Shape, value: int) -> Tuple[float, float]:
    """Fills ``shape`` with ``value`` in ``mask`` (sub-pixel precision); returns the shape's centre."""
    kind, params = shape
    scale = 1 << SHIFT
    if kind == 'poly':
        points = np.round(np.asarray(params, np.float64) * scale).astype(np.int32)
        cv2.fillPoly(mask, [points], value, lineType=cv2.LINE_8, shift=SHIFT)
        cx, cy = np.asarray(params, np.float64).mean(axis=0)
        return float(cx), float(cy)
    if kind == 'ellipse':
        cx, cy, ax, ay, angle = params
        cv2.ellipse(mask, (int(round(cx * scale)), int(round(cy * scale))),
                    (max(1, int(round(ax * scale))), max(1, int(round(ay * scale)))), angle, 0, 360, value, -1,
                    lineType=cv2.LINE_8, shift=SHIFT)
        return float(cx), float(cy)
    raise ValueError(f"unknown shape kind {kind!r}; expected 'poly' or 'ellipse'.")


def jitter_shape(shape: Shape, rng: np.random.Generator) -> Shape:
    """The shape shifted by U(-1.5, 1.5) px and resized by U(0.9, 1.1) around its centre."""
    kind, params = shape
    shift, factor = rng.uniform(-1.5, 1.5, size=2), rng.uniform(0.9, 1.1)
    if kind == 'poly':
        points = np.asarray(params, np.float64)
        centre = points.mean(axis=0)
        return kind, tuple(map(tuple, (points - centre) * factor + centre + shift))
    cx, cy, ax, ay, angle = params
    return kind, (cx + shift[0], cy + shift[1], ax * factor, ay * factor, angle)


def jittered_colour(colour: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """``colour`` + N(0, 10) per channel, float32."""
    return np.asarray(colour, np.float32) + rng.normal(0.0, 10.0, size=3).astype(np.float32)
