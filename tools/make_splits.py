"""Draw a semi-supervised split: N labeled ids from a training list, the rest of the list as unlabeled.

Writes DIR/labeled.txt and DIR/unlabeled.txt with one canonical sample id per line, both sorted. The input lists
may be in any format mmseg_esl.datasets.read_split reads (UniMatch, U2PL, CPS, plain ids).

The draw is deterministic: the candidate ids are sorted, permuted with numpy.random.default_rng(SEED) and the
first N are labeled. It depends only on the set of ids, N and the seed (not on the order of the lines), and
for one seed a smaller labeled set lies inside a larger one (92 in 183 in 366 ...).

Examples:
    # 1/16 of VOC train_aug, labeled ids drawn from the whole pool (the "blender" protocol)
    python tools/make_splits.py --train-list splits/pascal/train_aug.txt --num-labeled 662 --out-dir splits/ours/662

    # classic VOC: 92 labeled ids from the 1,464 finely annotated ones, unlabeled = the other 10,490 of train_aug
    python tools/make_splits.py --train-list splits/pascal/train_aug.txt \\
        --labeled-from splits/pascal/1464/labeled.txt --num-labeled 92 --seed 0 --out-dir splits/ours/92
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from mmseg_esl.datasets.splits import SplitFileError, draw_labeled, read_split, write_split


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--train-list', required=True, metavar='LIST',
                        help='split file of the whole training pool (e.g. VOC train_aug, Cityscapes train)')
    parser.add_argument('--num-labeled', required=True, type=int, metavar='N', help='number of labeled ids to draw')
    parser.add_argument('--seed', type=int, default=0, metavar='S', help='seed of the draw (default: 0)')
    parser.add_argument('--out-dir', required=True, metavar='DIR',
                        help='output folder for labeled.txt and unlabeled.txt (created; existing files are replaced)')
    parser.add_argument('--labeled-from', metavar='LIST2',
                        help='draw labeled ids only from this split file (a subset of --train-list, e.g. the 1,464 '
                        'VOC train ids); unlabeled is still the pool minus the labeled ids')
    args = parser.parse_args(argv)
    if args.num_labeled <= 0:
        parser.error(f'--num-labeled must be positive, got {args.num_labeled}')
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    try:
        pool = read_split(args.train_list)
        labeled_pool = None if args.labeled_from is None else read_split(args.labeled_from)
        labeled, unlabeled = draw_labeled(pool, args.num_labeled, args.seed, labeled_pool)
    except (SplitFileError, ValueError) as e:
        sys.exit(f'make_splits.py: error: {e}')
    labeled_path = os.path.join(args.out_dir, 'labeled.txt')
    unlabeled_path = os.path.join(args.out_dir, 'unlabeled.txt')
    try:
        write_split(labeled_path, labeled)
        write_split(unlabeled_path, unlabeled)
    except OSError as e:  # --out-dir is a file, or not writable
        sys.exit(f'make_splits.py: error: cannot write the split files into --out-dir {args.out_dir}: '
                 f'{e.strerror or e} ({e.filename or args.out_dir}). Pass a folder you can write to.')
    except ValueError as e:
        sys.exit(f'make_splits.py: error: {e}')
    source = args.train_list if labeled_pool is None else f'{args.labeled_from} ({len(labeled_pool)} ids)'
    print(f'drew {len(labeled)} labeled ids from {source} with seed {args.seed}:\n'
          f'  {labeled_path}: {len(labeled)} ids\n'
          f'  {unlabeled_path}: {len(unlabeled)} ids (the rest of the {len(pool)} ids of {args.train_list})')


if __name__ == '__main__':
    main()
