"""Time and memory of the prototype initialisation (``PrototypeInitHook``: E^t of the labeled set, reservoir, K-means).

Runs the hook's own ``before_train`` on a stand-in runner over ``--images`` synthetic labeled images of
``--size``² pixels (random uint8 images, piecewise-constant labels with 3 classes per image and 5 % ignored
pixels, as ``tools/benchmarks/train_step.py`` makes them), i.e. exactly what a training run does before its
first iteration: the data preprocessor, ``teacher.extract_feat`` (E^t), the labels resized to E^t, the
per-class reservoir (``ClassPixelReservoir.add``), K-means per class (``kmeans_prototypes``) and
``set_prototypes_``. The hook's settings (``max_pixels_per_class``, ``storage_dtype``, ``n_init``,
``max_iter``) come from the config's ``PrototypeInitHook`` entry unless given on the command line.

``--feature-only`` replaces ``teacher.extract_feat`` by random non-negative features of
``(--feat-channels, ceil(size / --feat-stride)²)`` (default: the config's ``feat_channels``, stride 8: 2048 ×
65 × 65 at 513² for ResNet-101-D8), which isolates the reservoir and K-means from the network.

Reported: total seconds, seconds per image, a breakdown (synthetic data generation, preprocessing, E^t
forward, reservoir, K-means, the rest), the peak GPU memory (``max_memory_allocated``) on CUDA and the growth
of the process's anonymous resident memory, sampled every 2 ms (the reservoir and K-means live on the CPU).
The paper-scale target is 1,464 labeled images (VOC's "full" labeled set) in at most 2 minutes;
``meets_2min_target`` says whether this run (its total minus the synthetic data generation) did.

Examples::

    python tools/benchmarks/prototype_init.py --config configs/esl/tiny_esl_voc.py --images 16 --size 64
    python tools/benchmarks/prototype_init.py --config builtin:r101-voc --images 1464 --size 513 --device cuda \\
        --batch-size 8 --json work_dirs/bench/prototype_init.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import os.path as osp
import sys
import time
import types
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import torch
from mmengine.config import DictAction
from mmengine.dataset import pseudo_collate
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import train_step  # noqa: E402  (the sibling benchmark: config loading, model building, labels, RSS)

HOOK_DEFAULTS = dict(max_pixels_per_class=5000, storage_dtype='float16', n_init=10, max_iter=300, seed=0)
TARGET_SECONDS = 120.0
TARGET_IMAGES = 1464


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', required=True, help=f'an ESL config, or {train_step.BUILTIN_R101!r}')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None)
    parser.add_argument('--images', type=int, default=1464, help='labeled images (VOC full labeled set: 1464)')
    parser.add_argument('--size', type=int, default=513, help='square image size')
    parser.add_argument('--batch-size', type=int, default=1, help='images per teacher forward')
    parser.add_argument('--device', default='auto', choices=('auto', 'cuda', 'cpu'))
    parser.add_argument('--feature-only', action='store_true',
                        help='random E^t instead of the teacher forward (reservoir + K-means only)')
    parser.add_argument('--feat-channels', type=int, default=None, help="L' for --feature-only (default: config)")
    parser.add_argument('--feat-stride', type=int, default=8, help='stride of E^t for --feature-only')
    for key in ('max_pixels_per_class', 'n_init', 'max_iter'):
        parser.add_argument('--' + key.replace('_', '-'), type=int, default=None,
                            help=f"PrototypeInitHook's {key} (default: the config's hook, else {HOOK_DEFAULTS[key]})")
    parser.add_argument('--storage-dtype', default=None, choices=('float16', 'float32'))
    parser.add_argument('--threads', type=int, default=None,
                        help="threads of torch and of K-means (scikit-learn's OpenMP/BLAS pools, via threadpoolctl)")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', default=None)
    parser.add_argument('--md', default=None)
    args = parser.parse_args(argv)
    for name in ('images', 'size', 'batch_size', 'feat_stride'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if args.device == 'auto':
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available; use --device cpu')
    return args


class SyntheticLabeledSet(Dataset):
    """``num`` labeled samples as the hook's dataloader yields them: uint8 image (3, S, S) and ``gt_sem_seg``.

    Deterministic per index. The time spent generating them is accumulated in ``seconds`` (it stands for
    decoding files in a real run and is reported apart).
    """

    def __init__(self, *, num: int, size: int, num_classes: int, seed: int) -> None:
        self.num, self.size, self.num_classes, self.seed = num, size, num_classes, seed
        self.seconds = 0.0

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> Dict:
        start = time.perf_counter()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        image = torch.randint(0, 256, (3, self.size, self.size), dtype=torch.uint8, generator=g)
        label = train_step.blob_labels(1, self.size, self.num_classes, g)
        shape = (self.size, self.size)
        sample = SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape, is_labeled=True))
        sample.gt_sem_seg = PixelData(data=label)
        self.seconds += time.perf_counter() - start
        return dict(inputs=image, data_samples=sample)


def hook_settings(cfg, args: argparse.Namespace) -> Dict:
    """The PrototypeInitHook arguments: command line, else the config's hook entry, else the hook defaults."""
    settings = dict(HOOK_DEFAULTS)
    for hook in cfg.get('custom_hooks', []) or []:
        if hook.get('type') in ('PrototypeInitHook', 'mmseg.PrototypeInitHook'):
            settings.update({k: hook[k] for k in settings if k in hook})
    for key in ('max_pixels_per_class', 'storage_dtype', 'n_init', 'max_iter'):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return settings


@contextmanager
def timed_patches(targets: List[tuple], records: Dict[str, float], device: str) -> Iterator[None]:
    """Wraps ``getattr(obj, attr)`` of every ``(name, obj, attr)`` with a synchronised timer; restores after."""
    saved = [(obj, attr, obj.__dict__.get(attr, None), attr in obj.__dict__) for _, obj, attr in targets]

    def timer(name: str, fn: Callable) -> Callable:
        def wrapper(*a, **k):
            train_step.synchronize(device)
            start = time.perf_counter()
            out = fn(*a, **k)
            train_step.synchronize(device)
            records[name] = records.get(name, 0.0) + time.perf_counter() - start
            return out
        return wrapper

    try:
        for name, obj, attr in targets:
            setattr(obj, attr, timer(name, getattr(obj, attr)))
        yield
    finally:
        for obj, attr, value, had in saved:
            if had:
                setattr(obj, attr, value)
            else:
                delattr(obj, attr)


def random_encoder(in_index: int, channels: int, stride: int) -> Callable:
    """A stand-in for ``teacher.extract_feat``: random non-negative E^t of (N, channels, ceil(H/s), ceil(W/s))."""
    def extract_feat(inputs: torch.Tensor) -> List[torch.Tensor]:
        n, _, h, w = inputs.shape
        feats = torch.rand(n, channels, math.ceil(h / stride), math.ceil(w / stride), device=inputs.device)
        outputs = [feats] * (in_index + 1 if in_index >= 0 else 1)
        return outputs
    return extract_feat


def run(args: argparse.Namespace, argv: Sequence[str]) -> Dict:
    from mmseg_esl.engine.hooks import prototype_init_hook as hook_module
    from mmseg_esl.engine.hooks.prototype_init_hook import PrototypeInitHook
    from mmseg_esl.models.utils.prototypes import ClassPixelReservoir

    train_step.esl_imports()
    cfg = train_step.load_config(args.config, args.cfg_options)
    model = train_step.build_model(cfg, 'esl', args.device, args.seed)
    model.eval()
    loss_fn = model.contrast_loss
    if args.feature_only:
        channels = args.feat_channels or loss_fn.feat_channels
        if channels != loss_fn.feat_channels:
            raise ValueError(f'--feat-channels={channels} differs from the config\'s feat_channels='
                             f'{loss_fn.feat_channels}; set both to the same value (--cfg-options '
                             f'model.semi_train_cfg.loss_contrast.feat_channels={channels}).')
        model.teacher.extract_feat = random_encoder(loss_fn.in_index, channels, args.feat_stride)
    settings = hook_settings(cfg, args)
    dataset = SyntheticLabeledSet(num=args.images, size=args.size, num_classes=loss_fn.num_classes, seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=0, collate_fn=pseudo_collate)
    hook = PrototypeInitHook(dataloader=loader, **settings)
    runner = types.SimpleNamespace(model=model, iter=0)

    records: Dict[str, float] = {}
    targets = [('preprocess', model.data_preprocessor, 'forward'), ('reservoir_add', ClassPixelReservoir, 'add'),
               ('kmeans', hook_module, 'kmeans_prototypes')]
    if not args.feature_only:
        targets.append(('teacher_forward', model.teacher, 'extract_feat'))
    else:
        targets.append(('random_features', model.teacher, 'extract_feat'))
    if args.device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    anon_before = train_step.anon_rss_bytes()
    train_step.synchronize(args.device)
    start = time.perf_counter()
    with timed_patches(targets, records, args.device), train_step.AnonPeakSampler(interval=2e-3) as sampler:
        hook.before_train(runner)
    train_step.synchronize(args.device)
    total = time.perf_counter() - start
    if not bool(loss_fn.prototypes_ready) or not torch.isfinite(loss_fn.prototypes).all():
        raise RuntimeError('PrototypeInitHook did not leave finite, ready prototypes.')

    records['data_generation'] = dataset.seconds
    accounted = sum(records.values())
    breakdown = {name: records.get(name, 0.0) for name in ('data_generation', 'preprocess', 'teacher_forward',
                                                           'random_features', 'reservoir_add', 'kmeans')
                 if name in records}
    breakdown['other'] = total - accounted
    without_data = total - dataset.seconds
    result = dict(
        meta=dict(command='python tools/benchmarks/prototype_init.py ' + ' '.join(argv), device=args.device,
                  device_name=train_step.machine_name(args.device), torch=torch.__version__, config=args.config,
                  images=args.images, size=args.size, batch_size=args.batch_size, feature_only=args.feature_only,
                  feat_shape=None, hook=settings, date=datetime.datetime.now().isoformat(timespec='seconds')),
        total_s=total, total_without_data_s=without_data, per_image_s=without_data / args.images,
        # Peak anonymous memory (sampled every 2 ms) minus the value before the hook: reservoir, K-means, E^t.
        breakdown_s=breakdown,
        peak_rss_growth_gib=None if anon_before is None else max(sampler.peak - anon_before, 0) / 2**30,
        peak_gpu_mem_gib=torch.cuda.max_memory_allocated() / 2**30 if args.device == 'cuda' else None,
        prototypes_shape=list(loss_fn.prototypes.shape), classes_absent=hook.report['absent'],
        # Only a run over the 1464 images says (K-means costs the same for any number of images: no projection).
        meets_2min_target=(without_data <= TARGET_SECONDS) if args.images == TARGET_IMAGES else None)
    h = math.ceil(args.size / args.feat_stride)
    result['meta']['feat_shape'] = [loss_fn.feat_channels, h, h] if args.feature_only else None
    return result


def markdown(result: Dict) -> str:
    meta = result['meta']
    lines = ['| images | size | E^t | total s (without data generation) | s / image | peak memory growth GiB | '
             'peak GPU GiB |', '| ---: | ---: | --- | ---: | ---: | ---: | ---: |']
    source = f'random {tuple(meta["feat_shape"])}' if meta['feature_only'] else 'teacher forward'
    gpu = '–' if result['peak_gpu_mem_gib'] is None else f'{result["peak_gpu_mem_gib"]:.2f}'
    lines.append(f'| {meta["images"]} | {meta["size"]} | {source} | {result["total_without_data_s"]:.1f} | '
                 f'{result["per_image_s"]:.3f} | {result["peak_rss_growth_gib"]:.2f} | {gpu} |')
    lines += ['', '| stage | s |', '| --- | ---: |']
    lines += [f'| {name} | {seconds:.2f} |' for name, seconds in result['breakdown_s'].items()]
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    limits = None
    if args.threads:
        torch.set_num_threads(args.threads)
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(limits=args.threads)  # scikit-learn's K-means threads
    try:
        result = run(args, argv)
    finally:
        if limits is not None:
            limits.restore_original_limits()
    table = markdown(result)
    for path, text in ((args.json, json.dumps(result, indent=2)), (args.md, table + '\n')):
        if path:
            os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
            with open(path, 'w') as f:
                f.write(text)
    print('\n' + table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
