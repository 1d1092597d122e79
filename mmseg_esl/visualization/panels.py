"""Figures made of image panels placed pixel-exactly, with titles and a swatch legend (matplotlib, Agg).

The analysis figures of ESL (Fig. 3 dominant classes, Fig. 4 object parts) are grids of colour-coded maps.
:func:`panel_figure` draws each panel with ``Figure.figimage``, which copies the array's pixels into the
figure without resampling, so a PNG written by :func:`save_png` holds exactly the colours that were
computed: a reader (or a test) can crop a panel at the box the function returns and decode its colours.
Titles and the legend are ordinary matplotlib text; legend swatches are exact-colour ``figimage`` blocks too.

Only ``matplotlib.figure.Figure`` with an Agg canvas is used (no ``pyplot``): no global state, no display.
matplotlib is imported when the first figure is made, so importing this module (and ``mmseg_esl``) stays cheap.
"""
from __future__ import annotations

import math
import os
import os.path as osp
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ['LegendEntry', 'PanelBox', 'figure_to_rgb', 'new_figure', 'panel_figure', 'save_png', 'upscale']

#: A legend entry: its label and the RGB colours of its swatches (one swatch, or e.g. K parts of a class).
LegendEntry = Tuple[str, Sequence[Sequence[int]]]
#: A panel's position in the PNG: ``(x0, y0, x1, y1)`` in pixels, origin top-left, end exclusive.
PanelBox = Tuple[int, int, int, int]

DPI = 100
PAD = 8  # pixels between panels and around the grid
FONT_SIZE = 8
TITLE_FONT_SIZE = 10
LINE = 14  # pixels per text line at FONT_SIZE
SWATCH = 10  # side of a legend swatch in pixels
CHAR_W = 6.2  # generous width of one character at FONT_SIZE (DejaVu Sans), for sizing cells to their titles
TITLE_CHAR_W = 7.6  # the same at TITLE_FONT_SIZE
TEXT_COLOUR = '#222222'


def new_figure(width: int, height: int) -> Figure:
    """A white ``width`` × ``height`` pixel figure on an Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor='white')
    FigureCanvasAgg(fig)
    return fig


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (every pixel becomes a ``scale`` × ``scale`` block).

    Args:
        image: (H, W) or (H, W, 3) array.
        scale: Integer factor >= 1.

    Returns:
        (H·scale, W·scale[, 3]) array of the same dtype.
    """
    if scale < 1 or int(scale) != scale:
        raise ValueError(f'scale must be an integer >= 1, got {scale!r}')
    if scale == 1:
        return image
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def _legend_height(entries: Sequence[LegendEntry], columns: int) -> int:
    return 0 if not entries else math.ceil(len(entries) / columns) * LINE + PAD


def panel_figure(panels: Sequence[Sequence[Optional[np.ndarray]]], *,
                 titles: Optional[Sequence[Sequence[str]]] = None, title: Optional[str] = None,
                 legend: Sequence[LegendEntry] = (), legend_columns: int = 3,
                 min_width: int = 360) -> Tuple[Figure, List[List[Optional[PanelBox]]]]:
    """A grid of image panels, each drawn pixel for pixel, with per-panel titles and a swatch legend below.

    Every cell of the grid is as large as the largest panel and at least as wide as the longest panel title;
    a panel sits at the top of its cell, centred horizontally. The figure is ``cols · w + (cols + 1) · PAD``
    pixels wide (at least ``min_width`` and the title's width, the grid then centred) and as high as the rows,
    titles and legend need.

    Args:
        panels: Rows of (h, w, 3) uint8 RGB arrays at their final pixel size (see :func:`upscale`); None leaves
            a cell empty.
        titles: Per-panel one-line titles, same nesting as ``panels`` (empty strings allowed).
        title: Figure title on top.
        legend: Entries ``(label, [rgb, ...])`` drawn below the grid, ``legend_columns`` per line.
        legend_columns: Entries per legend line.
        min_width: Minimum figure width in pixels (room for the titles and the legend).

    Returns:
        ``(figure, boxes)``: ``boxes[r][c]`` is the :data:`PanelBox` of panel ``(r, c)`` in the PNG written
        by :func:`save_png` (or the array of :func:`figure_to_rgb`), None for an empty cell.

    Raises:
        ValueError: If a panel is not an (h, w, 3) uint8 array or the grid is empty.
    """
    rows = [list(row) for row in panels]
    if not rows or not any(p is not None for row in rows for p in row):
        raise ValueError('panel_figure needs at least one panel')
    for row in rows:
        for p in row:
            if p is not None and (p.dtype != np.uint8 or p.ndim != 3 or p.shape[2] != 3):
                raise ValueError(f'panels must be (h, w, 3) uint8 RGB arrays, got {p.dtype} {p.shape}')
    cols = max(len(row) for row in rows)
    cell_h = max(p.shape[0] for row in rows for p in row if p is not None)
    cell_w = max(p.shape[1] for row in rows for p in row if p is not None)
    if titles is not None:
        cell_w = max(cell_w, int(max((len(t) for row in titles for t in row), default=0) * CHAR_W))
    title_h = LINE + 4 if titles is not None else 0
    top = (2 * LINE + PAD) if title else PAD
    grid_w = cols * cell_w + (cols + 1) * PAD
    width = max(grid_w, min_width, int(len(title or '') * TITLE_CHAR_W) + 2 * PAD)
    left = (width - grid_w) // 2
    legend_h = _legend_height(legend, legend_columns)
    height = top + len(rows) * (title_h + cell_h + PAD) + legend_h
    fig = new_figure(width, height)

    if title:
        fig.text(0.5, 1 - (PAD + LINE) / height, title, ha='center', va='center', fontsize=TITLE_FONT_SIZE,
                 color=TEXT_COLOUR)
    boxes: List[List[Optional[PanelBox]]] = []
    for r, row in enumerate(rows):
        y0 = top + r * (title_h + cell_h + PAD) + title_h
        row_boxes: List[Optional[PanelBox]] = []
        for c, panel in enumerate(row):
            x0 = left + PAD + c * (cell_w + PAD)
            if panel is None:
                row_boxes.append(None)
                continue
            h, w = panel.shape[:2]
            px = x0 + (cell_w - w) // 2
            # figimage offsets are from the bottom-left corner; origin='upper' puts row 0 on top.
            fig.figimage(panel, xo=px, yo=height - y0 - h, origin='upper')
            row_boxes.append((px, y0, px + w, y0 + h))
            if titles is not None and c < len(titles[r]) and titles[r][c]:
                fig.text((x0 + cell_w / 2) / width, 1 - (y0 - 3) / height, titles[r][c], ha='center', va='bottom',
                         fontsize=FONT_SIZE, color=TEXT_COLOUR, clip_on=False)
        boxes.append(row_boxes)
    if legend:
        _draw_legend(fig, legend, legend_columns, width, height, y0=height - legend_h + PAD // 2)
    return fig, boxes


def _draw_legend(fig: Figure, entries: Sequence[LegendEntry], columns: int, width: int, height: int,
                 y0: int) -> None:
    """Swatches (exact colours, ``figimage``) and labels, ``columns`` entries per line from ``y0`` down."""
    column_w = (width - 2 * PAD) / columns
    for i, (label, colours) in enumerate(entries):
        line, col = divmod(i, columns)
        x = int(PAD + col * column_w)
        y = y0 + line * LINE
        for colour in colours:
            swatch = np.empty((SWATCH, SWATCH, 3), dtype=np.uint8)
            swatch[:] = np.asarray(colour, dtype=np.uint8)
            fig.figimage(swatch, xo=x, yo=height - y - SWATCH, origin='upper')
            x += SWATCH + 1
        fig.text((x + 3) / width, 1 - (y + SWATCH / 2) / height, label, ha='left', va='center', fontsize=FONT_SIZE,
                 color=TEXT_COLOUR)


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """Renders the figure; returns its (H, W, 3) uint8 RGB pixels (what :func:`save_png` writes)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_png(fig: Figure, path: str) -> Dict[str, int]:
    """Writes the figure as a PNG at its own resolution (no tight cropping: panel boxes stay valid).

    Args:
        fig: A figure from :func:`new_figure` / :func:`panel_figure`.
        path: Output path; missing directories are created.

    Returns:
        ``{'width': W, 'height': H}`` of the written image in pixels.
    """
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi, facecolor=fig.get_facecolor())
    width, height = fig.canvas.get_width_height()
    return dict(width=int(width), height=int(height))
