"""Generate the synthetic ESL demo dataset (VOC layout, shared object parts, clutter; no downloads).

The design (classes, parts, shared parts, distributions) is in ``mmseg_esl/testing/demo_dataset.py``.

Example:
    python tools/make_demo_dataset.py --out data/esl_demo
"""
import argparse
import time

from mmseg_esl.testing import DEMO_CLASSES, make_demo_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='data/esl_demo', help='output directory (default: data/esl_demo)')
    parser.add_argument('--num-labeled', type=int, default=20, help='labeled training images (default: 20)')
    parser.add_argument('--num-unlabeled', type=int, default=1000,
                        help='unlabeled training images (default: 1000)')
    parser.add_argument('--num-dev', type=int, default=300,
                        help='training images held out as the dev split for choosing hyper-parameters (default: 300)')
    parser.add_argument('--num-val', type=int, default=500, help='validation images (default: 500)')
    parser.add_argument('--image-size', type=int, default=128, help='image height and width (default: 128)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    args = parser.parse_args()
    start = time.perf_counter()
    try:
        stats = make_demo_dataset(args.out, num_labeled=args.num_labeled, num_unlabeled=args.num_unlabeled,
                                  num_dev=args.num_dev, num_val=args.num_val, image_size=args.image_size,
                                  seed=args.seed)
    except ValueError as error:
        parser.error(str(error))
    seconds = time.perf_counter() - start
    counts = stats['counts']
    print(f'wrote {counts["train"]} train ({counts["labeled"]} labeled, {counts["unlabeled"]} unlabeled), '
          f'{counts.get("dev", 0)} dev and {counts["val"]} val images of {args.image_size}x{args.image_size} '
          f'to {args.out} in {seconds:.1f} s')
    splits = tuple(s for s in ('labeled', 'unlabeled', 'dev', 'val') if s in counts)
    print('pixel fraction per class: ' + '  '.join(f'{s:>9}' for s in splits))
    for cls in DEMO_CLASSES:
        print(f'  {cls:<22} ' + '  '.join(f'{100 * stats["pixel_fractions"][s][cls]:8.1f}%' for s in splits))


if __name__ == '__main__':
    main()
