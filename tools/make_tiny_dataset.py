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
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    args = parser.parse_args()
    splits = make_tiny_voc(args.out, num_train=args.num_train, num_val=args.num_val, seed=args.seed)
    print(f'wrote {len(splits["train"])} train and {len(splits["val"])} val images to {args.out}')


if __name__ == '__main__':
    main()
