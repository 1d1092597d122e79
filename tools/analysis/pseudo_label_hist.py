"""Class distribution of hard vs Dynamic-Soft-Label pseudo labels over the unlabeled set (paper Fig. 7b).

For every image the EMA teacher's probabilities p^t (``ESLSegmentor.teacher_probs``) give two pseudo labels
per pixel: the hard one-hot arg-max (``mmseg_esl.models.losses.hard_label``, Tab. 2's baseline) and the DSL
y* (Eq. 5, ``dynamic_soft_label`` with the config's η). Summed over all pixels, the hard label counts the pixels
whose arg-max is class c; the DSL gives each class its soft-label mass sum_j y*_{c,j}. Both are shown as % of
the pixels, next to the ground-truth distribution where label files exist (the demo and VOC train_aug have
them for the unlabeled images; they are only read here). The paper's point: DSL is more class-balanced.

Outputs: the PNG (``--out``, grouped bars) and ``<out>.json`` (counts and fractions per class of each series,
η, number of images and pixels, and the plot's geometry in the PNG).

Examples:
    python tools/analysis/pseudo_label_hist.py configs/esl/esl_effnet-lite0_demo.py \\
        work_dirs/esl_demo/ESL/iter_1000.pth --out work_dirs/analysis/pseudo_label_hist.png
    python tools/analysis/pseudo_label_hist.py CONFIG CHECKPOINT --num-images 200 --eta 0.9 --log
    python tools/analysis/pseudo_label_hist.py CONFIG CHECKPOINT --data-root /data/VOCdevkit/VOC2012
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from mmseg_esl.analysis import (
    AnalysisError,
    ImageSource,
    add_common_arguments,
    class_names,
    load_config,
    load_model,
    require_esl,
    run_tool,
    write_json,
)
from mmseg_esl.models.losses import dynamic_soft_label, hard_label
from mmseg_esl.visualization.panels import new_figure, save_png

TOOL = 'pseudo_label_hist.py'
#: Bar colours (RGB) of the series; Fig. 7b draws hard labels in green and DSL in yellow.
SERIES_COLOURS: Dict[str, Sequence[int]] = dict(hard=(44, 160, 44), dsl=(240, 170, 0), gt=(110, 110, 110))
SERIES_LABELS = dict(hard='hard label (arg-max)', dsl='DSL (Eq. 5, soft mass)', gt='ground truth')
BAR_WIDTH = 0.27


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=TOOL, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, num_images=None, out='work_dirs/analysis/pseudo_label_hist.png')
    parser.add_argument('--eta', type=float, default=None,
                        help='η of Eq. 4 (default: the model\'s semi_train_cfg.loss_unsup.eta)')
    parser.add_argument('--log', action='store_true', help='logarithmic y axis (rare classes become visible)')
    return parser.parse_args(argv)


def accumulate(model: torch.nn.Module, source: ImageSource, eta: float, num_classes: int) -> dict:
    """Per-class hard counts, DSL mass and ground-truth counts over ``source`` (float64 sums)."""
    totals = dict(hard=np.zeros(num_classes), dsl=np.zeros(num_classes), gt=np.zeros(num_classes))
    num_pixels, gt_images = 0, 0
    for sample in source.samples(model):
        probs = model.teacher_probs(sample.inputs)  # (1, C, H, W)
        totals['hard'] += hard_label(probs).sum(dim=(0, 2, 3)).double().cpu().numpy()
        totals['dsl'] += dynamic_soft_label(probs, eta=eta).sum(dim=(0, 2, 3)).double().cpu().numpy()
        num_pixels += probs.shape[2] * probs.shape[3]
        if sample.gt is not None:
            gt = sample.gt[(sample.gt >= 0) & (sample.gt < num_classes)]
            totals['gt'] += np.bincount(gt.ravel(), minlength=num_classes)
            gt_images += 1
    return dict(totals=totals, num_pixels=num_pixels, gt_images=gt_images)


def plot(fractions: Dict[str, np.ndarray], names: Sequence[str], title: str, *, log: bool = False):
    """Grouped bars (% of pixels); returns the figure, its axes and the bar x offsets of the series."""
    series = list(fractions)
    width_px, height_px = max(640, 60 * len(names) + 160), 440
    fig = new_figure(width_px, height_px)
    top, bottom = 70, 80 if len(names) > 8 else 50
    ax = fig.add_axes((80 / width_px, bottom / height_px, 1 - 100 / width_px, 1 - (top + bottom) / height_px))
    offsets = {name: (i - (len(series) - 1) / 2) * BAR_WIDTH for i, name in enumerate(series)}
    x = np.arange(len(names))
    for name in series:
        ax.bar(x + offsets[name], 100 * fractions[name], width=BAR_WIDTH, color=np.array(SERIES_COLOURS[name]) / 255,
               label=SERIES_LABELS[name], antialiased=False, linewidth=0)
    ax.set_xticks(x, names, rotation=30 if len(names) > 8 else 0, ha='right' if len(names) > 8 else 'center',
                  fontsize=8)
    ax.set_ylabel('% of pixels' + (' (log scale)' if log else ''), fontsize=9)
    ax.set_xlim(-0.5, len(names) - 0.5)
    peak = 100 * max(f.max() for f in fractions.values())
    if log:
        smallest = min((100 * f[f > 0]).min() for f in fractions.values() if (f > 0).any())
        ax.set_yscale('log')
        ax.set_ylim(smallest / 2, peak * 2)
    else:
        ax.set_ylim(0, max(peak * 1.08, 1e-6))
    ax.tick_params(axis='y', labelsize=8)
    ax.grid(axis='y', color='#dddddd', linewidth=0.6)
    ax.set_axisbelow(True)
    fig.text(0.5, 1 - 16 / height_px, title, ha='center', va='center', fontsize=10)
    fig.legend(loc='center', bbox_to_anchor=(0.5, 1 - 42 / height_px), ncol=len(series), frameon=False, fontsize=8)
    return fig, ax, offsets


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Runs the tool; returns what it wrote into the JSON file."""
    args = parse_args(argv)
    if args.eta is not None and not 0.0 < args.eta <= 1.0:
        raise AnalysisError(f'--eta must be in (0, 1], got {args.eta}')
    cfg = load_config(args.config, args.cfg_options, data_root=args.data_root)
    require_esl(cfg, args.config, TOOL)
    source = ImageSource(cfg, split=args.split, img_dir=args.img_dir, num_images=args.num_images, ids=args.ids)
    model = load_model(cfg, args.config, args.checkpoint, device=args.device)
    eta = float(args.eta if args.eta is not None else model.unsup_loss.eta)
    num_classes = model.teacher.decode_head.num_classes
    names = class_names(cfg, num_classes)

    result = accumulate(model, source, eta, num_classes)
    counts = {k: v for k, v in result['totals'].items() if k != 'gt' or result['gt_images']}
    fractions = {k: v / max(v.sum(), 1e-12) for k, v in counts.items()}
    title = f'Pseudo-label class distribution over {len(source)} images, \u03b7 = {eta:g}'
    fig, ax, offsets = plot(fractions, names, title, log=args.log)
    size = save_png(fig, args.out)
    bbox = ax.get_window_extent()
    axes_box = [int(round(bbox.x0)), int(round(size['height'] - bbox.y1)), int(round(bbox.x1)),
                int(round(size['height'] - bbox.y0))]
    report = dict(
        tool=TOOL, config=args.config, checkpoint=args.checkpoint, images=source.description,
        num_images=len(source), num_pixels=result['num_pixels'], gt_images=result['gt_images'], eta=eta,
        classes=names, counts={k: v.tolist() for k, v in counts.items()},
        fractions={k: v.tolist() for k, v in fractions.items()},
        png=dict(path=args.out, **size),
        plot=dict(axes_box=axes_box, xlim=list(ax.get_xlim()), ylim=list(ax.get_ylim()), unit='percent',
                  yscale='log' if args.log else 'linear',
                  bar_width=BAR_WIDTH, offsets=offsets, colours={k: list(SERIES_COLOURS[k]) for k in counts}))
    write_json(osp.splitext(args.out)[0] + '.json', report)
    header = f'{"class":>14} ' + ' '.join(f'{k:>8}' for k in fractions)
    lines = [f'{name:>14} ' + ' '.join(f'{100 * fractions[k][c]:7.2f}%' for k in fractions)
             for c, name in enumerate(names)]
    print('\n'.join([header, *lines]))
    print(f'{TOOL}: {len(source)} images, {result["num_pixels"]} pixels, \u03b7 = {eta:g}; wrote {args.out}')
    return report


if __name__ == '__main__':
    sys.exit(run_tool(main, None, TOOL))
