"""Number of dominant classes per pixel under an ESL checkpoint's teacher (paper Fig. 3).

For every image the EMA teacher's probabilities p^t (``ESLSegmentor.teacher_probs``, Eq. 1) give each pixel its
dominant classes, the shortest set of most probable classes whose probabilities sum to at least η (Eq. 3-4,
``mmseg_esl.models.losses.dominant_classes``). Each row of the figure shows an image and the overlay of the
count: blue 1 class (DSL is a hard label there), green 2, red 3 or more; the legend gives the fraction of
pixels of each. η is the config's ``model.semi_train_cfg.loss_unsup.eta`` unless ``--eta`` is given.

Outputs: the PNG (``--out``), ``<out>.json`` (η, per-image and overall fractions, panel boxes in the PNG) and
``<out>.npz`` (``ids`` and the count maps ``counts_<i>``, uint8).

Examples:
    # the demo: 4 unlabeled images of data/esl_demo under the trained ESL teacher
    python tools/analysis/dominant_classes.py configs/esl/esl_effnet-lite0_demo.py \\
        work_dirs/esl_demo/ESL/iter_1000.pth --out work_dirs/analysis/dominant_classes.png
    # other images, η of Tab. 3
    python tools/analysis/dominant_classes.py CONFIG CHECKPOINT --img-dir my_images --eta 0.9
    python tools/analysis/dominant_classes.py CONFIG CHECKPOINT --split val --ids 2007_000033 2007_000042
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

import numpy as np

from mmseg_esl.analysis import (
    AnalysisError,
    ImageSource,
    add_common_arguments,
    add_overlay_arguments,
    check_overlay_arguments,
    load_config,
    load_model,
    require_esl,
    run_tool,
    write_json,
)
from mmseg_esl.visualization.panels import save_png
from mmseg_esl.visualization.pseudo_labels import (
    CATEGORY_COLOURS,
    CATEGORY_NAMES,
    category_fractions,
    dominant_class_counts,
    dominant_classes_figure,
)

TOOL = 'dominant_classes.py'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=TOOL, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, num_images=4, out='work_dirs/analysis/dominant_classes.png')
    parser.add_argument('--eta', type=float, default=None,
                        help='η of Eq. 4 (default: the model\'s semi_train_cfg.loss_unsup.eta)')
    add_overlay_arguments(parser, alpha=0.5, what='colours')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Runs the tool; returns what it wrote into the JSON file."""
    args = parse_args(argv)
    if args.eta is not None and not 0.0 < args.eta <= 1.0:
        raise AnalysisError(f'--eta must be in (0, 1], got {args.eta}')
    check_overlay_arguments(args)
    cfg = load_config(args.config, args.cfg_options, data_root=args.data_root)
    require_esl(cfg, args.config, TOOL)
    source = ImageSource(cfg, split=args.split, img_dir=args.img_dir, num_images=args.num_images, ids=args.ids)
    model = load_model(cfg, args.config, args.checkpoint, device=args.device)
    eta = float(args.eta if args.eta is not None else model.unsup_loss.eta)

    images, counts, ids = [], [], []
    for sample in source.samples(model):
        probs = model.teacher_probs(sample.inputs)  # (1, C, H, W), Eq. 1
        counts.append(dominant_class_counts(probs, eta)[0].cpu().numpy())  # Eq. 3-4
        images.append(sample.image)
        ids.append(sample.id)
    fig, boxes, overall = dominant_classes_figure(
        images, counts, eta=eta, names=ids, alpha=args.alpha, scale=args.scale,
        title=f'Dominant classes per pixel under the teacher (Eq. 3-4, \u03b7 = {eta:g})')
    size = save_png(fig, args.out)
    stem = osp.splitext(args.out)[0]
    np.savez_compressed(stem + '.npz', ids=np.array(ids),
                        **{f'counts_{i}': np.clip(c, 0, 255).astype(np.uint8) for i, c in enumerate(counts)})
    report = dict(
        tool=TOOL, config=args.config, checkpoint=args.checkpoint, images=source.description, eta=eta,
        alpha=args.alpha, colours=dict(zip(CATEGORY_NAMES, CATEGORY_COLOURS.tolist())), fractions=overall,
        png=dict(path=args.out, **size),
        rows=[dict(id=i, fractions=category_fractions(c), image_box=b[0], overlay_box=b[1])
              for i, c, b in zip(ids, counts, boxes)])
    write_json(stem + '.json', report)
    print(f'{TOOL}: {len(ids)} images, \u03b7 = {eta:g}: ' + ', '.join(
        f'{k} dominant: {100 * v:.1f}%' for k, v in overall.items()) + f'; wrote {args.out}')
    return report


if __name__ == '__main__':
    sys.exit(run_tool(main, None, TOOL))
