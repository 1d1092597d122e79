"""Generate the tiny VOC-layout dataset used by tests and the smoke configs (no downloads).

Example:
    python tools/make_tiny_dataset.py --out data/tiny_voc
"""
import argparse

from mmseg_esl.testing import make_tiny_voc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='data/tiny_voc', help='output directory (default: data/tiny_voc)')
    parser.add_argument('--num-train', type=int, default=8, help='number of training images')
    parser.add_argument('--num-val', type=int, default=4, help='number of validation images')
    parser.add_argument('--num-labeled', type=int, default=None,
                        help='training images listed in labeled.txt (default: num_train // 4); the rest form '
                        'unlabeled.txt')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    args = parser.parse_args()
    splits = make_tiny_voc(args.out, num_train=args.num_train, num_val=args.num_val, num_labeled=args.num_labeled,
                           seed=args.seed)
    print(f'wrote {len(splits["train"])} train ({len(splits["labeled"])} labeled, {len(splits["unlabeled"])} '
          f'unlabeled) and {len(splits["val"])} val images to {args.out}')


if __name__ == '__main__':
    main()
