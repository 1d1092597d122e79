"""Draw a semi-supervised split: N labeled ids from a training list, the rest of the list as unlabeled.

Writes DIR/labeled.txt and DIR/unlabeled.txt with one canonical sample id per line, both sorted. The input lists
may be in any format mmseg_esl.datasets.read_split reads (UniMatch, U2PL, CPS, plain ids).

Or, for your own dataset (a folder of images and a folder of masks for some of them; --img-dir instead of
--train-list): draws --num-val validation and --num-labeled labeled ids from the images that have a mask; every
other image is unlabeled (README "Train ESL on your own dataset"). Writes DIR/val.txt too.

The draw is deterministic: the candidate ids are sorted, permuted with numpy.random.default_rng(SEED) and the
first N are labeled. It depends only on the set of ids, N and the seed (not on the order of the lines), and
for one seed a smaller labeled set lies inside a larger one (92 in 183 in 366 ...).

Examples:
    # 1/16 of VOC train_aug, labeled ids drawn from the whole pool (the "blender" protocol)
    python tools/make_splits.py --train-list splits/pascal/train_aug.txt --num-labeled 662 --out-dir splits/ours/662

    # classic VOC: 92 labeled ids from the 1,464 finely annotated ones, unlabeled = the other 10,490 of train_aug
    python tools/make_splits.py --train-list splits/pascal/train_aug.txt \\
        --labeled-from splits/pascal/1464/labeled.txt --num-labeled 92 --seed 0 --out-dir splits/ours/92

    # your own dataset: data/my_dataset/images/*.jpg, masks for some of them in data/my_dataset/masks/*_mask.png
    python tools/make_splits.py --data-root data/my_dataset --img-dir images --ann-dir masks \\
        --seg-map-suffix _mask.png --num-labeled 100 --num-val 200 --out-dir data/my_dataset/splits
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from mmseg_esl.datasets.folder_splits import folder_splits
from mmseg_esl.datasets.splits import SplitFileError, draw_labeled, read_split, write_split


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--train-list', metavar='LIST',
                        help='split file of the whole training pool (e.g. VOC train_aug, Cityscapes train)')
    source.add_argument('--img-dir', metavar='DIR',
                        help='your own dataset: the image folder (relative to --data-root); labeled and validation '
                        'ids are drawn from the images with a mask in --ann-dir, the others are unlabeled')
    parser.add_argument('--num-labeled', required=True, type=int, metavar='N', help='number of labeled ids to draw')
    parser.add_argument('--seed', type=int, default=0, metavar='S', help='seed of the draw (default: 0)')
    parser.add_argument('--out-dir', required=True, metavar='DIR',
                        help='output folder for labeled.txt and unlabeled.txt (created; existing files are replaced)')
    parser.add_argument('--labeled-from', metavar='LIST2',
                        help='draw labeled ids only from this split file (a subset of --train-list, e.g. the 1,464 '
                        'VOC train ids); unlabeled is still the pool minus the labeled ids')
    own = parser.add_argument_group('your own dataset (with --img-dir)')
    own.add_argument('--data-root', default='', metavar='ROOT', help='dataset root (default: the current folder)')
    own.add_argument('--ann-dir', metavar='DIR', help='mask folder, relative to --data-root (index PNGs)')
    own.add_argument('--img-suffix', default='.jpg', help="image file ending (default: '.jpg')")
    own.add_argument('--seg-map-suffix', default='.png',
                     help="mask file ending (default: '.png'; e.g. '_mask.png' for 0001.jpg -> 0001_mask.png)")
    own.add_argument('--num-val', type=int, metavar='V', help='validation images to draw from the masked images')
    args = parser.parse_args(argv)
    if args.img_dir is not None and (args.ann_dir is None or args.num_val is None):
        parser.error('--img-dir needs --ann-dir (the mask folder) and --num-val (validation images to hold out)')
    if args.img_dir is not None and args.labeled_from is not None:
        parser.error('--labeled-from works with --train-list only; with --img-dir the labeled ids are drawn from the '
                     'images that have a mask')
    if args.train_list is not None and args.num_val is not None:
        parser.error('--num-val works with --img-dir only; with --train-list, the validation set is your own list')
    if args.num_labeled <= 0:
        parser.error(f'--num-labeled must be positive, got {args.num_labeled}')
    return args


def _write(args: argparse.Namespace, splits: dict) -> dict:
    """Writes ``{name: ids}`` as ``<out-dir>/<name>.txt``; returns ``{name: path}``."""
    paths = {name: os.path.join(args.out_dir, f'{name}.txt') for name in splits}
    try:
        for name, ids in splits.items():
            write_split(paths[name], ids)
    except OSError as e:  # --out-dir is a file, or not writable
        sys.exit(f'make_splits.py: error: cannot write the split files into --out-dir {args.out_dir}: '
                 f'{e.strerror or e} ({e.filename or args.out_dir}). Pass a folder you can write to.')
    except ValueError as e:
        sys.exit(f'make_splits.py: error: {e}')
    return paths


def main_folders(args: argparse.Namespace) -> None:
    """``--img-dir`` mode: validation, labeled and unlabeled ids of a folder of images and a folder of masks."""
    img_dir, ann_dir = os.path.join(args.data_root, args.img_dir), os.path.join(args.data_root, args.ann_dir)
    try:
        splits = folder_splits(img_dir=img_dir, img_suffix=args.img_suffix, ann_dir=ann_dir,
                               seg_map_suffix=args.seg_map_suffix, num_labeled=args.num_labeled,
                               num_val=args.num_val, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'make_splits.py: error: {e}')
    paths = _write(args, dict(labeled=splits.labeled, unlabeled=splits.unlabeled, val=splits.val))
    total = len(splits.val) + len(splits.labeled) + len(splits.unlabeled)
    print(f'{total} images in {img_dir}; drew with seed {args.seed}, from the images with a mask in {ann_dir}:\n'
          f'  {paths["val"]}: {len(splits.val)} ids (validation)\n'
          f'  {paths["labeled"]}: {len(splits.labeled)} ids (labeled)\n'
          f'  {paths["unlabeled"]}: {len(splits.unlabeled)} ids (every other image)')


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.img_dir is not None:
        main_folders(args)
        return
    try:
        pool = read_split(args.train_list)
        labeled_pool = None if args.labeled_from is None else read_split(args.labeled_from)
        labeled, unlabeled = draw_labeled(pool, args.num_labeled, args.seed, labeled_pool)
    except (SplitFileError, ValueError) as e:
        sys.exit(f'make_splits.py: error: {e}')
    paths = _write(args, dict(labeled=labeled, unlabeled=unlabeled))
    labeled_path, unlabeled_path = paths['labeled'], paths['unlabeled']
    source = args.train_list if labeled_pool is None else f'{args.labeled_from} ({len(labeled_pool)} ids)'
    print(f'drew {len(labeled)} labeled ids from {source} with seed {args.seed}:\n'
          f'  {labeled_path}: {len(labeled)} ids\n'
          f'  {unlabeled_path}: {len(unlabeled)} ids (the rest of the {len(pool)} ids of {args.train_list})')


if __name__ == '__main__':
    main()
