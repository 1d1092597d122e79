"""Command-line helpers shared by the analysis tools: common arguments, running a tool, writing its JSON."""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
from typing import Optional, Sequence

import torch
from mmengine.config import DictAction

from .errors import AnalysisError
from .images import SPLITS


def add_common_arguments(parser: argparse.ArgumentParser, *, num_images: Optional[int], out: str,
                         single_model: bool = True) -> None:
    """Adds the arguments every analysis tool shares (config, checkpoint, images, device, output, options).

    Args:
        parser: The tool's parser.
        num_images: Default of ``--num-images`` (None: all images of the split).
        out: Default of ``--out``.
        single_model: Add the positional ``config`` and ``checkpoint`` (tsne.py takes lists instead).
    """
    if single_model:
        parser.add_argument('config', help='config the checkpoint was trained with (an ESLSegmentor config)')
        parser.add_argument('checkpoint', help='checkpoint written by tools/train.py')
    images = parser.add_mutually_exclusive_group()
    images.add_argument('--split', choices=SPLITS, default='unlabeled',
                        help='images of the config: the unlabeled / labeled training split (members of '
                        'train_dataloader.dataset) or the val / test set (default: unlabeled)')
    images.add_argument('--img-dir', help='use every image of this folder instead of a split of the config')
    parser.add_argument('--num-images', type=int, default=num_images,
                        help='use the first N images (default: ' + ('all' if num_images is None else str(num_images))
                        + ')')
    parser.add_argument('--ids', nargs='+', help='use these image ids (file names without extension) instead')
    parser.add_argument('--out', default=out, help=f'output PNG; JSON and NPZ files are written next to it '
                        f'(default: {out})')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='torch device (default: cuda if available, else cpu)')
    parser.add_argument('--data-root', help='set every data_root of the config(s) (datasets, ConcatDataset members, '
                        'hook dataloaders) to this folder')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='override settings of the config(s) as in mmseg\'s tools, e.g. '
                        'test_dataloader.dataset.pipeline.1.type=LoadAnnotations')


def add_overlay_arguments(parser: argparse.ArgumentParser, *, alpha: float, what: str) -> None:
    """Adds ``--alpha`` (opacity of the overlay, default ``alpha``) and ``--scale`` (panel enlargement)."""
    parser.add_argument('--alpha', type=float, default=alpha, help=f'opacity of the {what} (default: {alpha})')
    parser.add_argument('--scale', type=int, default=None,
                        help='integer enlargement of the panels (default: about 256 px per panel)')


def check_overlay_arguments(args: argparse.Namespace) -> None:
    """Refuses an ``--alpha`` outside [0, 1] or a ``--scale`` below 1 (see :func:`add_overlay_arguments`)."""
    if not 0.0 <= args.alpha <= 1.0:
        raise AnalysisError(f'--alpha must be in [0, 1], got {args.alpha}')
    if args.scale is not None and args.scale < 1:
        raise AnalysisError(f'--scale must be an integer >= 1, got {args.scale}')


def run_tool(main, argv: Optional[Sequence[str]], prog: str) -> int:
    """Runs ``main(argv)``; an :class:`AnalysisError` becomes ``<prog>: error: <message>`` and exit status 1."""
    try:
        main(argv)
    except AnalysisError as error:
        print(f'{prog}: error: {error}', file=sys.stderr)
        return 1
    return 0


def write_json(path: str, data: dict) -> None:
    """Writes ``data`` as indented JSON (directories created)."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(data, f, indent=1)
        f.write('\n')
