"""Does unlabeled data help, in the paper's order? Sup, MT-hard, MT-DSL, ESL and Full over seeds, paired by seed.

Trains every method (``--methods``, configs in ``mmseg_esl.utils.experiment.DEMO_METHODS``: one model, labeled
batch and schedule; Full = the supervised config on every training image with its label) once per seed with
``tools/train.py``, reads every validation (mmseg ``IoUMetric``; for mean teachers the teacher, which the
configs predict with, and ``teacher/*`` and ``student/*``), and reports

* per method: final mIoU, mean ± sample std over seeds, per seed, and teacher / student for mean teachers;
* paired by seed: ESL − Sup, ESL − MT-hard, MT-DSL − MT-hard, MT-hard − Sup, MT-DSL − Sup with the mean, the
  sample std and a 95 % Student-t interval of the mean difference;
* the fraction of the Sup → Full gap each method closes, ``(mean(m) − mean(Sup)) / (mean(Full) − mean(Sup))``;
* the teacher's curve: the final teacher − student, and the most the teacher trails its student at any
  validation after the first quarter of training.

It runs on any VOC-layout dataset: ``--data-root`` with split files relative to it (``--labeled``,
``--unlabeled``, ``--val``, ``--train`` for Full; by default Full trains on labeled + unlabeled, written to
the work dir) and ``--classes`` / ``--classes-file``. Each run trains a config derived from the method's demo
config with these settings, written next to its results (``<work-dir>/<method>_seed<k>/config.py``). A run
whose ``result.json`` exists with the same derived config is not trained again, so the table can be
completed across sittings (``--rerun`` trains again); ``--results-dir`` keeps these files apart from the
checkpoints, in a folder that can be committed, so that a fresh clone continues the table. Nothing is tuned
here; the script reports what it measures.

Examples:
    python tools/benchmarks/ssl_gain.py --seeds 5                       # the docs/benchmarks.md table
    python tools/benchmarks/ssl_gain.py --seeds 1 --methods Sup ESL --iters 40 --markdown ''   # a quick check
    python tools/benchmarks/ssl_gain.py --data-root data/mine --labeled splits/l.txt --unlabeled splits/u.txt \\
        --val splits/val.txt --classes-file classes.txt --work-dir work_dirs/ssl_gain_mine --markdown ''
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import os.path as osp
import platform
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from mmseg_esl.utils.experiment import DEMO_METHODS, DEMO_SPLITS, cpu_name, derive_config, run_training, val_history

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

ALL_METHODS = ('Sup', 'MT-hard', 'MT-DSL', 'ESL', 'Full')
#: Paired differences reported, (A, B) = A − B.
PAIRS = (('ESL', 'Sup'), ('ESL', 'MT-hard'), ('MT-DSL', 'MT-hard'), ('MT-hard', 'Sup'), ('MT-DSL', 'Sup'))
SEMI = ('MT-hard', 'MT-DSL', 'ESL')


def config_digest(text: str) -> str:
    """Hash of a derived config's text with the checkout's path replaced, so clones elsewhere reuse the run."""
    return hashlib.sha256(text.replace(REPO_ROOT, '<repo>').encode()).hexdigest()[:16]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seeds', type=int, default=5, help='number of seeds (0 .. seeds-1), default 5')
    parser.add_argument('--first-seed', type=int, default=0, help='first seed (default 0)')
    parser.add_argument('--methods', nargs='+', default=list(ALL_METHODS), choices=ALL_METHODS)
    parser.add_argument('--data-root', default=osp.join(REPO_ROOT, 'data', 'esl_demo'),
                        help='VOC-layout dataset (the demo dataset is generated at the default root if missing)')
    parser.add_argument('--labeled', default=DEMO_SPLITS['labeled'], help='labeled split file, relative to the root')
    parser.add_argument('--unlabeled', default=DEMO_SPLITS['unlabeled'], help='unlabeled split file')
    parser.add_argument('--val', default=DEMO_SPLITS['val'], help='validation split (the dev split to choose settings)')
    parser.add_argument('--train', default=None,
                        help="Full's split (every training image with its label); default: labeled + unlabeled")
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument('--classes', nargs='+', default=None, help='class names, index order (default: the demo\'s)')
    classes.add_argument('--classes-file', default=None, help='a file with one class name per line')
    parser.add_argument('--img-dir', default=None, help='image folder under the root (default: JPEGImages)')
    parser.add_argument('--ann-dir', default=None, help='label folder under the root (default: SegmentationClass)')
    parser.add_argument('--img-suffix', default=None, help="image suffix (default: '.jpg')")
    parser.add_argument('--seg-map-suffix', default=None, help="label suffix (default: '.png')")
    parser.add_argument('--iters', type=int, default=None,
                        help="override every config's iterations (the teacher's supervised-only phase keeps its share)")
    parser.add_argument('--val-interval', type=int, default=None,
                        help='validate every N iterations (default: four times per run, to follow the teacher)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='further overrides for every method (mmengine --cfg-options syntax)')
    parser.add_argument('--work-dir', default=osp.join(REPO_ROOT, 'work_dirs', 'ssl_gain'))
    parser.add_argument('--rerun', action='store_true', help='train again even where a finished run exists')
    parser.add_argument('--results-dir', default=None,
                        help="keep each run's result.json in RESULTS_DIR/<method>_seed<k>/ instead of its work dir: a "
                        'folder under version control lets a fresh clone complete the table across sittings')
    parser.add_argument('--json', default=osp.join(REPO_ROOT, 'docs', 'benchmarks', 'ssl_gain.json'),
                        help="where to write every run's numbers ('' = nowhere)")
    parser.add_argument('--markdown', default=osp.join(REPO_ROOT, 'docs', 'benchmarks.md'),
                        help="file whose section (--section) is (re)written ('' = print only)")
    parser.add_argument('--section', default='ssl_gain', help='name of the marked section in --markdown')
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f'--seeds must be >= 1, got {args.seeds}')
    for name in ('iters', 'val_interval'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {value}')
    if args.classes_file:
        if not osp.isfile(args.classes_file):
            parser.error(f'--classes-file {args.classes_file} does not exist')
        with open(args.classes_file) as f:
            args.classes = [line.strip() for line in f if line.strip()]
    for flag in ('labeled', 'unlabeled', 'val', 'train'):
        path = getattr(args, flag)
        if path is not None and not osp.isfile(osp.join(args.data_root, path)) and not (
                args.data_root == parser.get_default('data_root') and path == DEMO_SPLITS.get(flag)):
            parser.error(f'--{flag} {path}: no such file under --data-root {args.data_root}')
    return args


# ------------------------------------------------------------------------------------------------- statistics
def t_quantile(p: float, dof: int) -> float:
    """Quantile ``p`` of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t
    return float(t.ppf(p, dof))


def paired_interval(a: Dict[int, float], b: Dict[int, float]) -> Optional[dict]:
    """Mean, sample std, n and 95 % t-interval of ``a[s] − b[s]`` over the seeds both have; None if none."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return dict(mean=mean, std=float('nan'), n=1, low=float('nan'), high=float('nan'), diffs=diffs)
    std = statistics.stdev(diffs)
    half = t_quantile(0.975, len(diffs) - 1) * std / math.sqrt(len(diffs))
    return dict(mean=mean, std=std, n=len(diffs), low=mean - half, high=mean + half, diffs=diffs)


def final_by_seed(runs: List[dict], name: str, key: str = 'mIoU') -> Dict[int, float]:
    """``{seed: final value of key}`` of a method's finished runs."""
    out = {}
    for r in runs:
        if r['name'] == name and r['history'] and key in r['history'][-1]:
            out[r['seed']] = r['history'][-1][key]
    return out


def teacher_lag(history: List[dict], max_iters: int) -> Tuple[Optional[float], Optional[float]]:
    """``(final teacher − student, max of student − teacher over validations after the first quarter)``."""
    both = [h for h in history if 'teacher/mIoU' in h and 'student/mIoU' in h]
    if not both:
        return None, None
    final = both[-1]['teacher/mIoU'] - both[-1]['student/mIoU']
    later = [h['student/mIoU'] - h['teacher/mIoU'] for h in both if h.get('step', 0) > max_iters / 4]
    return final, (max(later) if later else None)


def _fmt(value: Optional[float], spec: str = '.2f') -> str:
    return '–' if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def summarise(runs: List[dict], methods: Sequence[str]) -> str:
    """The markdown tables: per method, paired differences, gap fractions, teacher lag."""
    lines = ['| method | mIoU mean ± std (%) | per seed | teacher / student (mean) | mean wall time / run |',
             '| --- | --- | --- | --- | --- |']
    means = {}
    for name in methods:
        mine = [r for r in runs if r['name'] == name]
        values = final_by_seed(runs, name)
        if values:
            means[name] = statistics.mean(values.values())
            spread = statistics.stdev(values.values()) if len(values) > 1 else float('nan')
            cell = f'{means[name]:.2f} ± {_fmt(spread)}'
        else:
            cell = 'failed'
        per_seed = ', '.join(_fmt(values.get(r['seed'])) if r['seed'] in values else 'failed' for r in mine)
        teacher, student = final_by_seed(runs, name, 'teacher/mIoU'), final_by_seed(runs, name, 'student/mIoU')
        ts = (f'{statistics.mean(teacher.values()):.2f} / {statistics.mean(student.values()):.2f}'
              if teacher and student else '–')
        minutes = statistics.mean(r['seconds'] for r in mine) / 60 if mine else 0.0
        lines.append(f'| {name} | {cell} | {per_seed} | {ts} | {minutes:.1f} min |')

    lines += ['', 'Paired by seed (same seed = same initialisation of the heads and the same data order where the '
              'methods share it), 95 % Student-t interval of the mean difference:', '',
              '| difference | mean (mIoU) | std | n | 95 % interval | above 0 |',
              '| --- | --- | --- | --- | --- | --- |']
    for a, b in PAIRS:
        if a not in methods or b not in methods:
            continue
        stats = paired_interval(final_by_seed(runs, a), final_by_seed(runs, b))
        if stats is None:
            continue
        above = '–' if math.isnan(stats['low']) else ('yes' if stats['low'] > 0 else 'no')
        lines.append(f'| {a} − {b} | {stats["mean"]:+.2f} | {_fmt(stats["std"])} | {stats["n"]} | '
                     f'[{_fmt(stats["low"], "+.2f")}, {_fmt(stats["high"], "+.2f")}] | {above} |')

    if 'Sup' in means and 'Full' in means:
        gap = means['Full'] - means['Sup']
        cells = ', '.join(f'{name} {100 * (means[name] - means["Sup"]) / gap:.0f} %'
                          for name in SEMI if name in means) if gap > 0 else 'Full does not beat Sup'
        lines += ['', f'Sup → Full gap: {gap:.2f} mIoU; fraction closed (from the means): {cells}.']

    lags = []
    for r in runs:
        if r['name'] in SEMI:
            final, worst = teacher_lag(r['history'], r['max_iters'])
            if final is not None:
                lags.append((r['name'], r['seed'], final, worst))
    if lags:
        lines += ['', 'Teacher vs its student (teacher − student at the end; most the teacher trails at a validation '
                  'after the first quarter):', '']
        for name in SEMI:
            mine = [lag for lag in lags if lag[0] == name]
            if mine:
                finals = ', '.join(_fmt(f, '+.2f') for _, _, f, _ in mine)
                worst = max((w for *_, w in mine if w is not None), default=None)
                lines.append(f'- {name}: end {finals}; worst trail after the first quarter {_fmt(worst)} mIoU')
    return '\n'.join(lines)


# ------------------------------------------------------------------------------------------------- runs
def machine() -> str:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'
    return (f'{cpu_name()}, {os.cpu_count()} CPU(s) visible, {gpu}; Python {platform.python_version()}, '
            f'torch {torch.__version__}')


def write_markdown(path: str, section: str, name: str = 'ssl_gain') -> None:
    """Replaces the ``<!-- name:start -->`` … ``<!-- name:end -->`` block of ``path`` (appends it if missing)."""
    start, end = f'<!-- {name}:start -->', f'<!-- {name}:end -->'
    text = open(path).read() if osp.isfile(path) else '# Benchmarks\n'
    block = f'{start}\n{section}\n{end}'
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip('\n') + '\n\n' + block + '\n'
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)


def full_split(args: argparse.Namespace) -> str:
    """Full's split: ``--train``, or labeled + unlabeled written to the work dir (absolute path)."""
    if args.train:
        return args.train
    ids = []
    for split in (args.labeled, args.unlabeled):
        with open(osp.join(args.data_root, split)) as f:
            ids += [line.strip() for line in f if line.strip()]
    path = osp.abspath(osp.join(args.work_dir, 'full_train.txt'))
    os.makedirs(args.work_dir, exist_ok=True)
    with open(path, 'w') as f:
        f.write(''.join(f'{i}\n' for i in ids))
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    command = 'python tools/benchmarks/ssl_gain.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    if not osp.isfile(osp.join(args.data_root, args.val)):
        from mmseg_esl.testing import make_demo_dataset
        print(f'== generating the demo dataset at {args.data_root}', flush=True)
        make_demo_dataset(args.data_root)
    splits = dict(labeled=args.labeled, unlabeled=args.unlabeled, val=args.val)
    if 'Full' in args.methods:
        splits['train'] = full_split(args)
    jobs = [(seed, name) for seed in range(args.first_seed, args.first_seed + args.seeds) for name in args.methods]
    start = time.perf_counter()
    runs: List[dict] = []
    trained_seconds: List[float] = []
    for index, (seed, name) in enumerate(jobs, 1):
        work_dir = osp.join(args.work_dir, f'{name}_seed{seed}')
        cfg = derive_config(osp.join(REPO_ROOT, DEMO_METHODS[name]), data_root=args.data_root, splits=splits,
                            classes=args.classes, img_dir=args.img_dir, ann_dir=args.ann_dir,
                            img_suffix=args.img_suffix, seg_map_suffix=args.seg_map_suffix, seed=seed,
                            iters=args.iters, val_interval=args.val_interval, validations=4,
                            options=args.cfg_options)
        text = cfg.pretty_text
        digest = config_digest(text)
        done = osp.join(args.results_dir, f'{name}_seed{seed}', 'result.json') if args.results_dir else \
            osp.join(work_dir, 'result.json')
        if osp.isfile(done) and not args.rerun:
            with open(done) as f:
                previous = json.load(f)
            if previous.get('config_sha256') == digest and previous.get('returncode') == 0:
                runs.append(previous)
                print(f'[{index}/{len(jobs)}] {name} seed {seed}: finished before, mIoU '
                      f'{_fmt(previous["history"][-1].get("mIoU") if previous["history"] else None)}', flush=True)
                continue
            print(f'[{index}/{len(jobs)}] {name} seed {seed}: a finished run exists with other settings; '
                  'training again', flush=True)
        os.makedirs(work_dir, exist_ok=True)
        config_path = osp.join(work_dir, 'config.py')
        with open(config_path, 'w') as f:
            f.write(text)
        remaining = len(jobs) - index + 1
        eta = (f', about {statistics.mean(trained_seconds) * remaining / 60:.0f} min left'
               if trained_seconds else '')
        print(f'[{index}/{len(jobs)}] {name} seed {seed}: training {osp.relpath(config_path)}{eta}', flush=True)
        result = run_training(name, config_path, work_dir, echo=False,
                              train_script=osp.join(REPO_ROOT, 'tools', 'train.py')).to_dict()
        trained_seconds.append(result['seconds'])
        result.update(seed=seed, config_sha256=digest, history=val_history(work_dir),
                      max_iters=int(cfg.train_cfg.max_iters))
        runs.append(result)
        os.makedirs(osp.dirname(done), exist_ok=True)
        with open(done, 'w') as f:
            json.dump(result, f, indent=2)
        final = result['history'][-1] if result['history'] else {}
        extra = (f' (teacher {_fmt(final.get("teacher/mIoU"))}, student {_fmt(final.get("student/mIoU"))})'
                 if 'teacher/mIoU' in final else '')
        print(f'[{index}/{len(jobs)}] {name} seed {seed}: mIoU {_fmt(final.get("mIoU"))}{extra} in '
              f'{result["seconds"]:.0f} s (exit {result["returncode"]}; log {result["log_file"]})', flush=True)
    seeds = f'{args.first_seed}..{args.first_seed + args.seeds - 1}'
    section = '\n'.join([
        f'Command: `{command}`  ', f'Machine: {machine()}  ',
        f'Date: {datetime.date.today().isoformat()}; runs one after another, this invocation '
        f'{(time.perf_counter() - start) / 60:.0f} min (runs finished before are reused).', '',
        f'Final validation mIoU on `{args.val}` (mmseg `IoUMetric`; mean teachers: the teacher, their predicting '
        f'model), seeds {seeds}:', '', summarise(runs, args.methods)])
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(dict(command=command, machine=machine(), date=datetime.date.today().isoformat(), runs=runs),
                      f, indent=2)
    if args.markdown:
        write_markdown(args.markdown, section, args.section)
    print('\n' + section)
    return 0 if all(r['returncode'] == 0 for r in runs) else 1


if __name__ == '__main__':
    sys.exit(main())
