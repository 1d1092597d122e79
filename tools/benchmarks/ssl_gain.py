"""Does unlabeled data help, in the paper's order? Sup, MT-hard, MT-DSL and ESL on the demo data, over seeds.

Trains every method of ``DEMO_METHODS`` (the demo configs: same model, labeled batch and schedule) once per
seed with ``tools/train.py``, reads the final validation mIoU (mmseg's ``IoUMetric``), and writes

* a JSON with every run (``--json``, default ``docs/benchmarks/ssl_gain.json``), and
* a markdown table, mean ± sample standard deviation over seeds plus the per-seed values, into the
  ``ssl_gain`` section of ``docs/benchmarks.md`` (between ``<!-- ssl_gain:start -->`` and
  ``<!-- ssl_gain:end -->``), with the exact command, the machine and the date.

The paper's ordering (Tab. 2, 4) is Sup < MT-hard < MT-DSL <= ESL. This script reports what it measures;
it does not tune anything.

Examples:
    python tools/benchmarks/ssl_gain.py --seeds 3
    python tools/benchmarks/ssl_gain.py --seeds 1 --methods Sup ESL --iters 40   # a quick check
"""
import argparse
import datetime
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time
from typing import Dict, List

import torch

from mmseg_esl.utils.experiment import DEMO_METHODS, cpu_name, data_root_options, run_training

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
START, END = '<!-- ssl_gain:start -->', '<!-- ssl_gain:end -->'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seeds', type=int, default=3, help='number of seeds (0 .. seeds-1)')
    parser.add_argument('--methods', nargs='+', default=list(DEMO_METHODS), choices=sorted(DEMO_METHODS))
    parser.add_argument('--data-root', default=osp.join(REPO_ROOT, 'data', 'esl_demo'),
                        help='demo dataset (generated there if missing)')
    parser.add_argument('--work-dir', default=osp.join(REPO_ROOT, 'work_dirs', 'ssl_gain'))
    parser.add_argument('--iters', type=int, default=None, help='override every config\'s iterations')
    parser.add_argument('--json', default=osp.join(REPO_ROOT, 'docs', 'benchmarks', 'ssl_gain.json'))
    parser.add_argument('--markdown', default=osp.join(REPO_ROOT, 'docs', 'benchmarks.md'),
                        help='file whose ssl_gain section is (re)written')
    parser.add_argument('--reuse', action='store_true',
                        help='skip runs whose work dir already holds a final validation result')
    return parser.parse_args()


def machine() -> str:
    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'
    return (f'{cpu}, {os.cpu_count()} CPU(s) visible, {gpu}; Python {platform.python_version()}, '
            f'torch {torch.__version__}')


def summarise(runs: List[dict], methods: List[str], seeds: int) -> str:
    lines = ['| method | mIoU mean ± std (%) | per seed | mean wall time / run |', '| --- | --- | --- | --- |']
    for name in methods:
        mine = [r for r in runs if r['name'] == name]
        values = [r['metrics'].get('mIoU') for r in mine]
        ok = [v for v in values if v is not None]
        spread = statistics.stdev(ok) if len(ok) > 1 else 0.0
        mean = f'{statistics.mean(ok):.2f} ± {spread:.2f}' if ok else 'failed'
        per_seed = ', '.join('failed' if v is None else f'{v:.2f}' for v in values)
        minutes = statistics.mean(r['seconds'] for r in mine) / 60 if mine else 0.0
        lines.append(f'| {name} | {mean} | {per_seed} | {minutes:.1f} min |')
    return '\n'.join(lines)


def write_markdown(path: str, section: str) -> None:
    text = open(path).read() if osp.isfile(path) else '# Benchmarks\n'
    block = f'{START}\n{section}\n{END}'
    if START in text and END in text:
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip('\n') + '\n\n' + block + '\n'
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)


def main() -> int:
    args = parse_args()
    command = 'python tools/benchmarks/ssl_gain.py ' + ' '.join(sys.argv[1:])
    if not osp.isfile(osp.join(args.data_root, 'ImageSets', 'Segmentation', 'val.txt')):
        from mmseg_esl.testing import make_demo_dataset
        make_demo_dataset(args.data_root)
    start = time.perf_counter()
    runs: List[Dict] = []
    for seed in range(args.seeds):
        for name in args.methods:
            config = osp.join(REPO_ROOT, DEMO_METHODS[name])
            work_dir = osp.join(args.work_dir, f'{name}_seed{seed}')
            done = osp.join(work_dir, 'result.json')
            if args.reuse and osp.isfile(done):
                with open(done) as f:
                    runs.append(json.load(f))
                print(f'== reusing {name} seed {seed}: mIoU {runs[-1]["metrics"].get("mIoU")}', flush=True)
                continue
            options = data_root_options(config, args.data_root) + [f'randomness.seed={seed}']
            if args.iters:
                options += [f'train_cfg.max_iters={args.iters}', f'train_cfg.val_interval={args.iters}',
                            f'default_hooks.checkpoint.interval={args.iters}', f'param_scheduler.0.end={args.iters}']
            print(f'\n== {name}, seed {seed}: {osp.relpath(config, REPO_ROOT)}', flush=True)
            result = run_training(name, config, work_dir, cfg_options=options, echo=False,
                                  train_script=osp.join(REPO_ROOT, 'tools', 'train.py')).to_dict()
            result['seed'] = seed
            runs.append(result)
            with open(done, 'w') as f:
                json.dump(result, f, indent=2)
            print(f'== {name}, seed {seed}: mIoU {result["metrics"].get("mIoU")} in {result["seconds"]:.0f} s '
                  f'(exit {result["returncode"]})', flush=True)
    table = summarise(runs, args.methods, args.seeds)
    date = datetime.date.today().isoformat()
    section = '\n'.join([
        '## SSL gain on the demo data (`tools/benchmarks/ssl_gain.py`)', '',
        f'Command: `{command}`  ', f'Machine: {machine()}  ', f'Date: {date}; total wall time '
        f'{(time.perf_counter() - start) / 60:.0f} min (runs one after another).', '',
        'Final validation mIoU (mmseg `IoUMetric`, 100 validation images, teacher for the mean-teacher methods); '
        f'mean ± sample standard deviation over seeds 0..{args.seeds - 1}:', '', table])
    os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
    with open(args.json, 'w') as f:
        json.dump(dict(command=command, machine=machine(), date=date, runs=runs), f, indent=2)
    write_markdown(args.markdown, section)
    print('\n' + section)
    return 0 if all(r['returncode'] == 0 for r in runs) else 1


if __name__ == '__main__':
    sys.exit(main())
