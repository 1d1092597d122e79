"""The number of dominant classes per pixel (paper Fig. 3), as maps, fractions and a rendered figure.

ESL's Dynamic Soft Label keeps, per pixel, the *dominant classes* of the teacher's prediction: the shortest
set of most probable classes whose probabilities sum to at least η (Eq. 3-4,
:func:`mmseg_esl.models.losses.dominant_classes`). Fig. 3 of the paper colours every pixel by how many there
are: blue 1 (the pseudo label is a hard label), green 2, red ≥ 3 (object boundaries and confusing regions).

This module is shared by ``tools/analysis/dominant_classes.py`` (checkpoint + images → PNG) and
:class:`~mmseg_esl.engine.hooks.PseudoLabelVisHook` (the same figure during training, through mmengine's
visualisation backends):

* :func:`dominant_class_counts` — the count map, from the Eq. 3-4 mask (never recomputed here);
* :func:`count_categories`, :func:`category_fractions` — 1 / 2 / ≥3 and the fraction of pixels in each;
* :func:`overlay_categories` — the Fig. 3 overlay of one image;
* :func:`dominant_classes_figure` / :func:`render_dominant_classes` — rows of [image | overlay] with a legend
  giving the colours and pixel fractions, as a matplotlib figure / an RGB array.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from mmseg_esl.models.losses.soft_label import dominant_classes

from .panels import PanelBox, figure_to_rgb, panel_figure, upscale

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    'CATEGORY_COLOURS', 'CATEGORY_NAMES', 'auto_scale', 'category_fractions', 'count_categories',
    'dominant_class_counts', 'dominant_classes_figure', 'overlay_categories', 'render_dominant_classes'
]

#: Colours of 1, 2 and ≥3 dominant classes (Fig. 3: blue, green, red), RGB.
CATEGORY_COLOURS = np.array([[0, 0, 255], [0, 200, 0], [255, 0, 0]], dtype=np.uint8)
#: Keys of :func:`category_fractions`, in the order of :data:`CATEGORY_COLOURS`.
CATEGORY_NAMES: Tuple[str, ...] = ('1', '2', '>=3')
_LEGEND_NAMES = ('1 class', '2 classes', '\u22653 classes')


def dominant_class_counts(probs: Tensor, eta: float, top_k: Optional[int] = None) -> Tensor:
    """Number of dominant classes ``|C_j|`` of every pixel (Eq. 3-4).

    Args:
        probs: Teacher probabilities ``p^t``, (N, C, H, W).
        eta: Accumulated-probability threshold η of Eq. 4, in (0, 1].
        top_k: If given, the Tab. 3 "Top-k" variant instead (see ``dominant_classes``).

    Returns:
        (N, H, W) int64 tensor, values in [1, C].
    """
    return dominant_classes(probs, eta=eta, top_k=top_k).sum(dim=1)


def count_categories(counts: np.ndarray) -> np.ndarray:
    """Category of each pixel: 0 for 1 dominant class, 1 for 2, 2 for 3 or more (index into the colours).

    Args:
        counts: Dominant-class counts (any shape, values >= 1), array or tensor.

    Returns:
        uint8 array of the same shape, values in {0, 1, 2}.
    """
    counts = counts.cpu().numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    return (np.clip(counts, 1, 3) - 1).astype(np.uint8)


def category_fractions(counts: np.ndarray, valid: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Fraction of (valid) pixels with 1, 2 and ≥3 dominant classes.

    Args:
        counts: Dominant-class counts (any shape), array or tensor.
        valid: Optional bool mask of the same shape; only these pixels count.

    Returns:
        ``{'1': f1, '2': f2, '>=3': f3}``, summing to 1 (all 0 without valid pixels).
    """
    categories = count_categories(counts)
    if valid is not None:
        categories = categories[np.asarray(valid, dtype=bool)]
    hist = np.bincount(categories.ravel(), minlength=3).astype(np.float64)
    total = hist.sum()
    return {name: float(v / total) if total else 0.0 for name, v in zip(CATEGORY_NAMES, hist)}


def overlay_categories(image: np.ndarray, counts: np.ndarray, *, alpha: float = 0.5,
                       valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Fig. 3 overlay: ``(1 - alpha) · image + alpha · colour(count)``, rounded, at every valid pixel.

    Args:
        image: (H, W, 3) uint8 RGB image.
        counts: (H, W) dominant-class counts.
        alpha: Opacity of the colours, in [0, 1].
        valid: Optional (H, W) bool mask; other pixels keep the image's colour.

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        ValueError: On mismatched shapes or ``alpha`` outside [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'alpha must be in [0, 1], got {alpha!r}')
    categories = count_categories(counts)
    if image.shape[:2] != categories.shape or image.ndim != 3:
        raise ValueError(f'image {image.shape} and counts {categories.shape} must be (H, W, 3) and (H, W)')
    colours = CATEGORY_COLOURS[categories].astype(np.float32)
    blended = np.rint((1.0 - alpha) * image.astype(np.float32) + alpha * colours).astype(np.uint8)
    if valid is not None:
        blended = np.where(np.asarray(valid, dtype=bool)[..., None], blended, image)
    return blended


def auto_scale(height: int, width: int, target: int = 256) -> int:
    """Integer enlargement that brings the longer side to about ``target`` pixels (1 for large images)."""
    return max(1, target // max(height, width, 1))


def _percent(fractions: Dict[str, float]) -> str:
    return ' \u00b7 '.join(f'{name}: {100 * fractions[key]:.1f}%'
                           for name, key in zip(('1', '2', '\u22653'), CATEGORY_NAMES))


def dominant_classes_figure(images: Sequence[np.ndarray], counts: Sequence[np.ndarray], *, eta: float,
                            names: Optional[Sequence[str]] = None, title: Optional[str] = None,
                            alpha: float = 0.5, scale: Optional[int] = None
                            ) -> Tuple[Figure, List[List[PanelBox]], Dict[str, float]]:
    """Fig. 3 for several images: one row per image, [image | overlay], and a legend with pixel fractions.

    Args:
        images: (H_i, W_i, 3) uint8 RGB images.
        counts: Matching (H_i, W_i) dominant-class counts (e.g. from :func:`dominant_class_counts`).
        eta: η used (shown in the title).
        names: Optional row names (e.g. image ids), shown above the overlays with the row's fractions.
        title: Figure title; default ``'Dominant classes per pixel (Eq. 3-4, η = ...)'``.
        alpha: Opacity of the colours in the overlay.
        scale: Integer enlargement of every panel; default :func:`auto_scale` of the largest image.

    Returns:
        ``(figure, boxes, fractions)``: ``boxes[i] = [image box, overlay box]`` in PNG pixels (see
        :func:`~mmseg_esl.visualization.panels.panel_figure`), and the fractions of all shown pixels, which
        the legend gives.

    Raises:
        ValueError: If the lists are empty or differ in length, or a count map does not match its image.
    """
    if not images or len(images) != len(counts):
        raise ValueError(f'need as many count maps as images (>= 1), got {len(images)} images, {len(counts)} maps')
    counts = [c.cpu().numpy() if isinstance(c, torch.Tensor) else np.asarray(c) for c in counts]
    if scale is None:
        scale = auto_scale(max(i.shape[0] for i in images), max(i.shape[1] for i in images))
    rows, titles = [], []
    for i, (image, count) in enumerate(zip(images, counts)):
        overlay = overlay_categories(image, count, alpha=alpha)
        rows.append([upscale(image, scale), upscale(overlay, scale)])
        name = names[i] if names is not None else f'image {i}'
        titles.append([name, _percent(category_fractions(count))])
    all_categories = np.concatenate([count_categories(c).ravel() for c in counts])
    fractions = category_fractions(all_categories + 1)
    legend = [(f'{label}: {100 * fractions[key]:.1f}%', [colour])
              for label, key, colour in zip(_LEGEND_NAMES, CATEGORY_NAMES, CATEGORY_COLOURS.tolist())]
    title = title or f'Dominant classes per pixel (Eq. 3-4, \u03b7 = {eta:g})'
    fig, boxes = panel_figure(rows, titles=titles, title=title, legend=legend, legend_columns=3)
    return fig, boxes, fractions


def render_dominant_classes(images: Sequence[np.ndarray], counts: Sequence[np.ndarray], **kwargs) -> np.ndarray:
    """:func:`dominant_classes_figure` as an (H, W, 3) uint8 RGB array (e.g. for ``Visualizer.add_image``)."""
    fig, _, _ = dominant_classes_figure(images, counts, **kwargs)
    return figure_to_rgb(fig)
