"""Pictures of what ESL does: the paper's analysis figures for a trained model, and during training.

* :mod:`.pseudo_labels` — dominant classes per pixel (Fig. 3), shared by ``tools/analysis/dominant_classes.py``
  and :class:`~mmseg_esl.engine.hooks.PseudoLabelVisHook`;
* :mod:`.parts` — one colour per (class, part) for the object-part maps (Fig. 4) and t-SNE panels (Fig. 6);
* :mod:`.panels` — pixel-exact figures of image panels with titles and a swatch legend (matplotlib, Agg);

matplotlib is imported only when a figure is drawn.
"""
from .panels import figure_to_rgb, panel_figure, save_png, upscale
from .parts import class_palette, colour_parts, part_palette
from .pseudo_labels import (
    CATEGORY_COLOURS,
    category_fractions,
    count_categories,
    dominant_class_counts,
    dominant_classes_figure,
    overlay_categories,
    render_dominant_classes,
)

__all__ = [
    'CATEGORY_COLOURS', 'category_fractions', 'class_palette',
    'colour_parts', 'count_categories', 'dominant_class_counts', 'dominant_classes_figure', 'figure_to_rgb',
    'overlay_categories', 'panel_figure', 'part_palette', 'render_dominant_classes',
    'save_png', 'upscale'
]
