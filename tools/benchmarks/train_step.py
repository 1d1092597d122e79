"""Speed and peak memory of one ESL training iteration, against the baselines it builds on (issue 8).

From one ESL config (``model.type='ESLSegmentor'``), with the same model, crop and batch, this script times
full training iterations of five methods that differ only in ``semi_train_cfg``:

* ``sup`` (a): the wrapped segmentor alone (``model.segmentor`` built as a plain mmseg segmentor), its own
  ``loss()`` on the labeled images, plus the optimizer step. No teacher.
* ``mt-hard`` (b): ``ESLSegmentor`` with ``loss_unsup.mode='hard'`` and ``loss_contrast=None``: the teacher
  on the weak unlabeled views (and CutMix partners), one student pass over labeled + mixed images, EMA.
* ``mt-dsl`` (c): (b) with ``loss_unsup.mode='dsl'`` (Eq. 3-6).
* ``floor`` (d): what the method needs before any ESL-specific term: (b) plus the contrastive *inputs*, i.e.
  the projectors of student and teacher (both in the graph) and the teacher's pass over the labeled images.
  It is the config's own model with ``mode='hard'`` whose contrastive steps are replaced, in this script only
  (:func:`use_floor_contrast`, bound to the instance): no targets (Eq. 7, 9), a loss of ``0 * sum(z_s)``
  connected to the student's embedding, so that the projector runs forward and backward, and no bank or
  prototype update (Eq. 8, 12). Everything else is the real ``ESLSegmentor.loss()``.
* ``esl`` (e): the config as it is (DSL + pixel-to-part contrast, Eq. 11).

Each timed iteration is what mmengine runs for one ``train_step``, minus the data preprocessor (the random
batch already lies on the device): ``model.loss()`` inside ``optim_wrapper.optim_context`` (autocast under
AMP), ``model.parse_losses``, ``optim_wrapper.update_params`` (the config's optimizer, built by the config's
constructor, i.e. ``StudentOptimWrapperConstructor``), ``EMATeacherHook.after_train_iter`` (the config's hook,
with a stand-in runner at a steady-state iteration, so the decay is the configured one and not the warm-up's),
and the ``.item()`` of every logged value (as mmengine's ``RuntimeInfoHook`` does). Iterations are
synchronised (``torch.cuda.synchronize``) before and after; the table gives the median and the inter-quartile
range of ``--iters`` iterations after ``--warmup``. By default the methods run one after another;
``--interleave`` runs them round-robin in one process instead (one iteration of each in turn), so that a
shared machine's changing load hits all of them alike, and adds per-round differences to (d) with their
standard error.

**Steady state.** Before (d) and (e) run, the prototypes are random unit vectors with ``prototypes_ready`` set
and every queue of the memory bank is *pre-filled* (``fill = q``, random entries): a full bank is both the
state of a long run and the worst case (negatives are drawn over all filled slots; the InfoNCE matmul is
against all ``C·K·q`` slots in any case).

**A confident teacher.** A randomly initialised teacher is not confident (max probability ≈ 1/C), so the
unlabeled pixels would never pass ζ and the contrastive term would see labeled anchors only. Every model first
gets BatchNorm statistics of the batch (:func:`calibrate_batchnorm`, as after a long training; with the initial
(0, 1) statistics an eval-mode random network outputs nearly the same logits everywhere), and the teacher starts
as a copy of the student. With ``--confident-teacher`` (default on) the teacher's classifier ``conv_seg`` is then
re-centred (each class's mean logit over the batch is 0, so the arg-max varies from pixel to pixel) and scaled
by the smallest factor that lifts ``--confident-fraction`` (default 0.9) of the weak-view pixels above ζ, times
``1 / decay**n`` so that the ``n`` EMA steps of the run do not erode it (:func:`make_teacher_confident`). The
inputs are N(0, 1) images, the labels piecewise constant (a coarse grid of 3 classes per image, 5 % ignored
pixels). The JSON reports the anchors per iteration (``contrast.anchors``), the teacher's mean confidence and
the fraction that passed ζ: the benchmark measures ESL doing its full work (10 % of about 95 % of the pixels
as anchors; every part present in every image), not a case where it has nothing to contrast.

**Memory.** On CUDA, ``torch.cuda.max_memory_allocated`` over the timed iterations (reset after warm-up),
absolute, so it includes parameters, gradients, optimizer state, teacher, bank and prototypes. On CPU, each
(method, AMP mode) runs in a fresh subprocess of this script (``--isolate auto``, the CPU default): after its
timed iterations it runs 3 more while a thread samples the process's anonymous resident memory (``RssAnon``,
every 0.5 ms) and reports the peak minus the value before them, i.e. what a step needs on top of model,
teacher, optimizer state, bank and batch: activations, gradients, temporaries. (The peak RSS, ``ru_maxrss``,
never decreases in a process and also counts shared-library pages, whose number here varied by 0.3 GiB
between identical runs.) With ``--interleave`` the memory comes from short extra subprocesses whose glibc
returns every freed block of 64 KiB or more to the system at once (``MALLOC_MMAP_THRESHOLD_``).

**AMP.** ``--amp fp16,bf16`` uses mmengine's ``AmpOptimWrapper(dtype=...)`` on CUDA (dynamic loss scaling).
``AmpOptimWrapper`` asserts CUDA, so on CPU only ``bf16`` is offered, through :class:`CPUAutocastOptimWrapper`
(``torch.autocast('cpu', dtype=torch.bfloat16)`` around the forward, no loss scaling); ``fp16`` on CPU is
refused.

**Components** (``--components``): a separate pass of (e) iterations in which the functions of the real
path are wrapped by synchronised timers (so the pass is slower than the timed (e) iterations, and it runs
after them): DSL (``pseudo_label`` + the soft-CE forward), part grouping (Eq. 7, ``assign``), MAP (the two
mask-average-pools of ``update``, z^t for the bank and the L2-normalised E^t for Eq. 12), bank update
(``enqueue``), prototype update (the rest of ``update``: batch means and the momentum step of Eq. 12), anchor
sampling (Eq. 9 sampling, positive/negative draws, gathering the anchors), InfoNCE forward (Eq. 10) and,
measured right after on the captured tensors, InfoNCE backward, and the rest of the contrastive steps
(``contrast_targets``, ``loss_contrast``, ``update_bank_and_prototypes``: label downsampling, CutMix of the maps,
masks, class mean, and since 2026-12-06 the student projector's forward, which ``loss_contrast`` runs).
Percentages are of the median (e) step of the timed pass.

Examples::

    # CPU, small scale (docs/benchmarks.md): timing round-robin, memory in separate processes
    python tools/benchmarks/train_step.py --config configs/esl/esl_effnet-lite0_demo.py --crop 128 \\
        --labeled 4 --unlabeled 4 --iters 20 --warmup 3 --device cpu --threads 1 --interleave --components \\
        --json bench.json --md bench.md
    # GPU, paper scale (what tools/benchmarks/gpu_all.sh runs):
    python tools/benchmarks/train_step.py --config configs/esl/esl_r101_voc_1-8.py --crop 513 --labeled 8 \\
        --unlabeled 8 --device cuda --amp none,fp16,bf16 --amp-methods floor,esl --components
"""
from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import math
import os
import os.path as osp
import platform
import subprocess
import sys
import tempfile
import time
import types
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

#: The environment this script was started with, for its child processes: importing mmengine imports OpenCV,
#: which prepends its own library folder to LD_LIBRARY_PATH; children started with that see other shared
#: libraries (their peak RSS grew by 0.3 GiB).
LAUNCH_ENV: Dict[str, str] = dict(os.environ)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402
from mmengine.optim import OptimWrapper, build_optim_wrapper  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402
from torch import Tensor, nn  # noqa: E402

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:  # run as a script from anywhere: the package of this checkout
    sys.path.insert(0, REPO_ROOT)

METHODS: Tuple[str, ...] = ('sup', 'mt-hard', 'mt-dsl', 'floor', 'esl')
METHOD_LABELS: Dict[str, str] = {'sup': '(a) sup', 'mt-hard': '(b) MT-hard', 'mt-dsl': '(c) MT-DSL',
                                 'floor': '(d) floor', 'esl': '(e) ESL'}
AMP_MODES: Tuple[str, ...] = ('none', 'fp16', 'bf16')
#: Component names of ``--components``, in table order.
COMPONENTS: Tuple[str, ...] = ('dsl', 'part_grouping', 'map', 'bank_update', 'prototype_update',
                               'anchor_sampling', 'infonce_forward', 'infonce_backward', 'contrast_other')
COMPONENT_LABELS: Dict[str, str] = {
    'dsl': 'DSL (pseudo_label + soft-CE forward, Eq. 3-6)',
    'part_grouping': 'part grouping (assign, Eq. 7)',
    'map': 'MAP: z^t (Eq. 8) + normalised E^t (Eq. 12)',
    'bank_update': 'bank update (enqueue)',
    'prototype_update': 'prototype update (batch means, momentum, Eq. 12)',
    'anchor_sampling': 'anchor sampling (Eq. 9, pos./neg. draws)',
    'infonce_forward': 'InfoNCE forward (Eq. 10)',
    'infonce_backward': 'InfoNCE backward',
    'contrast_other': 'rest of the contrast steps (maps, CutMix, masks, student projector)',
}
#: ``runner.iter`` seen by EMATeacherHook: far past its warm-up, so the decay is the configured one.
STEADY_STATE_ITER = 1_000_000
#: Built-in config name: DeepLabv3+ ResNet-101 (mmseg's model) on 21 classes with the paper's ESL settings.
BUILTIN_R101 = 'builtin:r101-voc'


# ---------------------------------------------------------------------------------------------------- args


def _csv(choices: Sequence[str]) -> Callable[[str], List[str]]:
    def parse(text: str) -> List[str]:
        items = [t.strip() for t in text.split(',') if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f'expected a comma-separated subset of {",".join(choices)}, got {text!r}')
        return items
    return parse


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', required=True,
                        help=f'an ESLSegmentor config, or {BUILTIN_R101!r} (DeepLabv3+ R101, 21 classes, paper '
                             'settings, random init) when no paper config is at hand')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='override config keys, as in tools/train.py')
    parser.add_argument('--crop', type=int, default=513, help='square crop size (paper: 513)')
    parser.add_argument('--labeled', type=int, default=8, help='labeled images per iteration (paper: 8)')
    parser.add_argument('--unlabeled', type=int, default=8,
                        help="unlabeled images per iteration (paper: 8); cutmix.partner='extra' adds as many partners")
    parser.add_argument('--iters', type=int, default=20, help='timed iterations per run (>= 20 for the docs)')
    parser.add_argument('--warmup', type=int, default=5, help='untimed iterations before them')
    parser.add_argument('--device', default='auto', choices=('auto', 'cuda', 'cpu'))
    parser.add_argument('--methods', type=_csv(METHODS), default=list(METHODS),
                        help='comma-separated subset of ' + ','.join(METHODS))
    parser.add_argument('--amp', type=_csv(AMP_MODES), default=['none'],
                        help='comma-separated AMP modes: none (fp32), fp16, bf16')
    parser.add_argument('--amp-methods', type=_csv(METHODS), default=None,
                        help='methods run under the AMP modes other than none (default: all of --methods)')
    parser.add_argument('--components', action='store_true',
                        help='also time each ESL component (a separate instrumented pass of (e))')
    parser.add_argument('--component-iters', type=int, default=5, help='instrumented (e) iterations')
    parser.add_argument('--confident-teacher', dest='confident_teacher', action='store_true', default=True,
                        help='(default) scale the teacher classifier so that most pixels pass the confidence threshold')
    parser.add_argument('--no-confident-teacher', dest='confident_teacher', action='store_false',
                        help='keep the randomly initialised teacher (few or no unlabeled anchors)')
    parser.add_argument('--confident-fraction', type=float, default=0.9,
                        help='fraction of weak-view pixels the confident teacher puts above conf_thresh')
    parser.add_argument('--isolate', default='auto', choices=('auto', 'always', 'never'),
                        help='run every (method, amp) in a fresh subprocess (auto: on CPU, for the peak RSS)')
    parser.add_argument('--interleave', action='store_true',
                        help='time the methods of an AMP mode round-robin in one process (fair on a shared CPU); '
                             'with --isolate, memory comes from short separate runs')
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--time-budget', type=float, default=None,
                        help='seconds; runs that would start after it are skipped (recorded as skipped)')
    parser.add_argument('--json', default=None, help='write the results here (rewritten after every run)')
    parser.add_argument('--md', default=None, help='write the markdown tables here')
    # Internal: one (method, amp) run whose result goes to --single-out as JSON (used by --isolate).
    parser.add_argument('--single', default=None, choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument('--single-amp', default='none', choices=AMP_MODES, help=argparse.SUPPRESS)
    parser.add_argument('--single-out', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ('crop', 'labeled', 'unlabeled', 'iters', 'component_iters'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if args.warmup < 0:
        parser.error(f'--warmup must be >= 0, got {args.warmup}')
    if not 0.0 < args.confident_fraction < 1.0:
        parser.error(f'--confident-fraction must be in (0, 1), got {args.confident_fraction}')
    if args.device == 'auto':
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available (this torch build or machine has no GPU); use --device cpu')
    if args.device == 'cpu' and 'fp16' in args.amp:
        parser.error('--amp fp16 needs CUDA (mmengine AmpOptimWrapper); on CPU use --amp none,bf16 '
                     '(bf16 runs under torch.autocast("cpu"))')
    if args.amp_methods is None:
        args.amp_methods = list(args.methods)
    return args


# -------------------------------------------------------------------------------------------------- config


def builtin_r101_config() -> Config:
    """DeepLabv3+ ResNet-101-D8 of mmseg (``_base_/models/deeplabv3plus_r50-d8.py`` with depth 101) on 21
    classes, wrapped in ``ESLSegmentor`` with the paper's settings (K = 5, λ1 = 0.2, λ2 = 0.1, projector
    256 -> 512, E^t = layer4 with 2048 channels), SGD lr 0.001 with 10x on the heads. Random init (no
    download). Used when the paper config is not available; a stand-in for timing, not for training."""
    import mmseg
    base = osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs', '_base_', 'models', 'deeplabv3plus_r50-d8.py')
    segmentor = copy.deepcopy(Config.fromfile(base).model)
    segmentor.pretrained = None
    segmentor.backbone.depth = 101
    segmentor.decode_head.num_classes = 21
    segmentor.auxiliary_head.num_classes = 21
    cfg = Config(dict(
        custom_imports=dict(imports=['mmseg_esl'], allow_failed_imports=False),
        model=dict(
            type='ESLSegmentor', segmentor=segmentor,
            semi_train_cfg=dict(
                loss_unsup=dict(type='DSLLoss', mode='dsl', eta=0.95, loss_weight=0.2),
                cutmix=dict(prob=1.0, partner='extra'),
                loss_contrast=dict(type='PixelPartContrastLoss', feat_channels=2048, num_parts=5, loss_weight=0.1)),
            semi_test_cfg=dict(predict_on='teacher')),
        optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=1e-4),
                           paramwise_cfg=dict(custom_keys=dict(decode_head=dict(lr_mult=10.0),
                                                               projector=dict(lr_mult=10.0))),
                           constructor='StudentOptimWrapperConstructor'),
        custom_hooks=[dict(type='EMATeacherHook', decay=0.99)],
        env_cfg=dict(cudnn_benchmark=True)))
    return cfg


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """The ESL config, with ``--cfg-options`` merged; raises a ValueError naming the problem if it is not one."""
    cfg = builtin_r101_config() if path == BUILTIN_R101 else Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model = cfg.get('model')
    if not model or model.get('type') != 'ESLSegmentor':
        raise ValueError(f'{path}: model.type must be ESLSegmentor (the variants are derived from its '
                         f'semi_train_cfg), got {None if not model else model.get("type")!r}. Pass an ESL config such '
                         f'as configs/esl/tiny_esl_voc.py, or --config {BUILTIN_R101}.')
    return cfg


def esl_imports() -> None:
    """Registers mmseg's and this package's modules and makes mmseg the default registry scope."""
    from mmengine.registry import init_default_scope

    import mmseg_esl  # noqa: F401  (registers ESLSegmentor, losses, hooks, the optimizer constructor)
    init_default_scope('mmseg')


def maybe_convert_sync_bn(model_cfg: ConfigDict, device: str) -> ConfigDict:
    """On CPU, SyncBN -> BN in place (``mmseg_esl.utils.sync_bn.convert_sync_bn_cfg``); on CUDA, unchanged.

    This process has no process group, so torch's ``SyncBatchNorm`` computes plain batch norm anyway (on CUDA,
    and on CPU in torch 2.x): the conversion changes no number, it only spares SyncBN's device checks on CPU.
    """
    if device == 'cpu' and 'SyncBN' in str(model_cfg):
        from mmseg_esl.utils.sync_bn import convert_sync_bn_cfg
        convert_sync_bn_cfg(model_cfg, warn=False)
    return model_cfg


def semi_cfg_for(cfg: Config, method: str) -> dict:
    """``semi_train_cfg`` of ``method`` derived from the config's (only ``loss_unsup.mode`` and the contrast)."""
    from mmseg_esl.models.segmentors.esl_segmentor import merge_semi_train_cfg
    semi = merge_semi_train_cfg(cfg.model.get('semi_train_cfg')).to_dict()
    if semi['loss_contrast'] is None or semi['loss_contrast'].get('num_parts', 5) == 0:
        if method in ('floor', 'esl'):
            raise ValueError('The config has no contrastive term (semi_train_cfg.loss_contrast is None or '
                             'num_parts=0), so (d) and (e) cannot be derived from it: pass a full ESL config.')
    if method in ('mt-hard', 'mt-dsl', 'floor'):
        semi['loss_unsup'] = dict(semi['loss_unsup'], mode='dsl' if method == 'mt-dsl' else 'hard')
    if method in ('mt-hard', 'mt-dsl'):
        semi['loss_contrast'] = None
    return semi


# --------------------------------------------------------------------------------------------------- model


def use_floor_contrast(model: nn.Module) -> None:
    """(d): replaces the contrastive steps of one ``ESLSegmentor`` instance (the class is not touched).

    ``contrast_targets`` returns only the contrastive size (no Eq. 7 or 9), ``loss_contrast`` a zero loss
    ``0 * sum(z_s)`` that keeps the student's projector in the graph (forward and backward) as in (e), and
    ``update_bank_and_prototypes`` does nothing (no Eq. 8 or 12). The teacher's projector and its pass over the
    labeled images still run in ``teacher_weak_pass``.
    """
    def targets(self, batch, teacher, mixed) -> Tuple[int, int]:
        return self.contrast_size(*batch.size)

    def loss(self, size: Tuple[int, int]) -> Dict[str, Tensor]:
        z_s = self._embed(self.student, size)
        return {f'contrast.{self.contrast_loss.loss_name}': z_s.float().sum() * 0.0}

    def update(self, teacher, size) -> None:
        return None

    model.contrast_targets = types.MethodType(targets, model)
    model.loss_contrast = types.MethodType(loss, model)
    model.update_bank_and_prototypes = types.MethodType(update, model)


def build_model(cfg: Config, method: str, device: str, seed: int) -> nn.Module:
    """The model of ``method``: a plain segmentor for ``sup``, else an ``ESLSegmentor`` of the derived config."""
    from mmseg.registry import MODELS
    torch.manual_seed(seed)  # the same weights for every method
    if method == 'sup':
        segmentor = ConfigDict(copy.deepcopy(cfg.model.segmentor))
        segmentor.pop('data_preprocessor', None)
        model = MODELS.build(maybe_convert_sync_bn(segmentor, device))
    else:
        model_cfg = ConfigDict(copy.deepcopy(cfg.model))
        model_cfg.semi_train_cfg = semi_cfg_for(cfg, method)
        model_cfg.segmentor = maybe_convert_sync_bn(model_cfg.segmentor, device)
        model = MODELS.build(model_cfg)
        if method == 'floor':
            use_floor_contrast(model)
    model.to(device)
    model.train()
    return model


@torch.no_grad()
def prepare_steady_state(model: nn.Module, seed: int) -> None:
    """Random unit prototypes (ready) and a full memory bank (random entries, ``fill = q``), if contrast is on."""
    loss_fn = getattr(model, 'contrast_loss', None)
    if loss_fn is None:
        return
    g = torch.Generator().manual_seed(seed + 1)
    loss_fn.set_prototypes_(F.normalize(torch.randn(tuple(loss_fn.prototypes.shape), generator=g), dim=-1))
    bank = loss_fn.bank
    bank.queues.copy_(torch.randn(tuple(bank.queues.shape), generator=g))
    bank.fill.fill_(bank.queue_size)
    bank.pointers.zero_()


def ema_hook_of(cfg: Config):
    """The config's ``EMATeacherHook`` (built from its ``custom_hooks`` entry), or one with the defaults."""
    from mmseg.registry import HOOKS
    for hook in cfg.get('custom_hooks', []) or []:
        if hook.get('type') in ('EMATeacherHook', 'mmseg.EMATeacherHook'):
            return HOOKS.build(copy.deepcopy(hook))
    return HOOKS.build(dict(type='EMATeacherHook'))


@torch.no_grad()
def calibrate_batchnorm(segmentor: nn.Module, images: Tensor) -> None:
    """Sets every BatchNorm's running statistics to those of ``images`` (one train-mode forward, no gradient).

    A randomly initialised network has running statistics (0, 1), so in eval mode (the teacher) its BN layers do
    not normalise and its output hardly varies from pixel to pixel. After a long training the running statistics
    match the data; this gives the random model the same property (cumulative average over one forward).
    """
    norms = [m for m in segmentor.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = segmentor.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    segmentor.train()
    segmentor.decode_head.forward(segmentor.extract_feat(images))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    segmentor.train(was_training)


@torch.no_grad()
def make_teacher_confident(model: nn.Module, x_pool: Tensor, *, zeta: float, fraction: float,
                           margin_steps: int, decay: float) -> Dict[str, float]:
    """Makes ``fraction`` of the teacher's pixels of ``x_pool`` exceed ``zeta``, with several classes per image.

    The teacher's classifier ``conv_seg`` is changed, nothing else: its bias is shifted so that every class has a
    mean logit of 0 over the pixels of ``x_pool`` (the arg-max then varies from pixel to pixel instead of
    following the bias), and weight and bias are multiplied by a factor ``s``. Logits are linear in them, so a
    bisection on ``s`` in ``softmax(s * logits)`` finds the smallest ``s`` that meets ``fraction`` (at the
    classifier's resolution); the applied factor is ``s / decay**margin_steps``, so that ``margin_steps`` EMA
    updates towards the student keep the teacher at least that confident.

    Returns:
        ``scale`` (the applied factor) and ``fraction`` (measured at ``s``).
    """
    teacher = model.teacher
    teacher.eval()
    conv = teacher.decode_head.conv_seg
    logits = teacher.decode_head.forward(teacher.extract_feat(x_pool)).float()
    shift = logits.mean(dim=(0, 2, 3))
    logits = logits - shift[None, :, None, None]

    def confident(scale: float) -> float:
        return float(((logits * scale).softmax(dim=1).amax(dim=1) > zeta).float().mean())

    low, high = 1.0, 1e4
    if confident(high) < fraction:
        print(f'warning: even 1e4 x the teacher classifier leaves only {confident(high):.2f} of the pixels above '
              f'conf_thresh={zeta}; using 1e4.', flush=True)
    elif confident(low) >= fraction:
        high = low
    else:
        for _ in range(40):
            mid = math.sqrt(low * high)
            low, high = (low, mid) if confident(mid) >= fraction else (mid, high)
    applied = high / (decay ** margin_steps if decay > 0 else 1.0)
    if conv.bias is None:
        raise ValueError('--confident-teacher needs a bias in decode_head.conv_seg; use --no-confident-teacher.')
    conv.bias.sub_(shift.to(conv.bias)).mul_(applied)
    conv.weight.mul_(applied)
    return dict(scale=applied, fraction=confident(high))


# --------------------------------------------------------------------------------------------------- batch


def blob_labels(num: int, size: int, num_classes: int, generator: torch.Generator, *, classes_per_image: int = 3,
                cells: int = 8, ignore_fraction: float = 0.05, ignore_index: int = 255) -> Tensor:
    """Piecewise-constant label maps ``(num, size, size)``: a ``cells``² grid of ``classes_per_image`` classes."""
    k = min(classes_per_image, num_classes)
    classes = torch.stack([torch.randperm(num_classes, generator=generator)[:k] for _ in range(num)])  # (N, k)
    grid = torch.randint(0, k, (num, cells, cells), generator=generator)
    coarse = classes.gather(1, grid.reshape(num, -1)).reshape(num, 1, cells, cells).float()
    labels = F.interpolate(coarse, size=(size, size), mode='nearest')[:, 0].long()
    labels[torch.rand(labels.shape, generator=generator) < ignore_fraction] = ignore_index
    return labels


def make_batch(*, num_classes: int, labeled: int, unlabeled: int, partners: int, crop: int, device: str,
               seed: int) -> Tuple[Tensor, List[SegDataSample]]:
    """Random normalised images ``[labeled | unlabeled | partners]`` and their samples, on ``device``."""
    g = torch.Generator().manual_seed(seed)
    total = labeled + unlabeled + partners
    inputs = torch.randn(total, 3, crop, crop, generator=g).to(device)
    labels = blob_labels(labeled, crop, num_classes, g).to(device)
    samples = []
    for i in range(total):
        meta = dict(is_labeled=i < labeled, img_shape=(crop, crop), pad_shape=(crop, crop), ori_shape=(crop, crop))
        sample = SegDataSample(metainfo=meta)
        if i < labeled:
            sample.gt_sem_seg = PixelData(data=labels[i][None])
        samples.append(sample)
    return inputs, samples


# ----------------------------------------------------------------------------------------------- optimizer


class CPUAutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose ``optim_context`` runs the forward under ``torch.autocast('cpu', dtype)``.

    mmengine's ``AmpOptimWrapper`` asserts a GPU; this is its CPU stand-in for bf16 (no loss scaling is needed
    for bf16, whose exponent range is fp32's). Used by ``--amp bf16 --device cpu`` only.
    """

    def __init__(self, *, dtype: torch.dtype = torch.bfloat16, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cast_dtype = dtype

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield


def make_optim_wrapper(cfg: Config, model: nn.Module, method: str, amp: str, device: str) -> OptimWrapper:
    """The config's optimizer wrapper for ``model`` (``StudentOptimWrapperConstructor`` for ESL models)."""
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    if method == 'sup':
        optim_cfg.pop('constructor', None)  # the plain segmentor is the "student"
    if amp != 'none':
        dtype = {'fp16': 'float16', 'bf16': 'bfloat16'}[amp]
        if device == 'cuda':
            optim_cfg.update(type='AmpOptimWrapper', dtype=dtype, loss_scale='dynamic')
        else:
            optim_cfg.update(type=CPUAutocastOptimWrapper, dtype=getattr(torch, dtype))
    return build_optim_wrapper(model, optim_cfg)


# ------------------------------------------------------------------------------------------------ stepping


def synchronize(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def anon_rss_bytes() -> Optional[int]:
    """Anonymous resident memory of this process (``RssAnon`` of ``/proc/self/status``), None where unknown.

    Tensors live in anonymous memory; shared-library pages do not (the peak RSS counts those too, and on a
    machine whose kernel reclaims cold pages their count moves by hundreds of MB from run to run).
    """
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('RssAnon:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class AnonPeakSampler:
    """Samples :func:`anon_rss_bytes` every ``interval`` seconds in a thread; ``peak`` is the largest value.

    torch releases the GIL inside its operators, so the thread samples during them; a tensor that lives for
    less than ``interval`` may be missed. Reading the file costs ~30 µs a sample (a few % of one core).
    """

    def __init__(self, interval: float = 5e-4) -> None:
        import threading
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, anon_rss_bytes() or 0)

    def __enter__(self) -> AnonPeakSampler:
        self.peak = anon_rss_bytes() or 0
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anon_rss_bytes() or 0)


class Run:
    """One method at one AMP mode: the model, its optimizer, the batch, and one training iteration."""

    def __init__(self, cfg: Config, method: str, amp: str, args: argparse.Namespace) -> None:
        self.method, self.amp, self.device = method, amp, args.device
        self.model = build_model(cfg, method, args.device, args.seed)
        self.esl = method != 'sup'
        num_classes = (self.model.student if self.esl else self.model).decode_head.num_classes
        # (a) gets the labeled images only; the others [labeled | unlabeled | partners] as the sampler lays it out.
        unlabeled = args.unlabeled if self.esl else 0
        partners = unlabeled if self.esl and self.model.semi_train_cfg.cutmix.partner == 'extra' else 0
        self.inputs, self.samples = make_batch(num_classes=num_classes, labeled=args.labeled, unlabeled=unlabeled,
                                               partners=partners, crop=args.crop, device=args.device,
                                               seed=args.seed)
        self.num_labeled = args.labeled
        self.hook = ema_hook_of(cfg) if self.esl else None
        self.confidence: Dict[str, float] = {}
        student = self.model.student if self.esl else self.model
        calibrate_batchnorm(student, self.inputs[:args.labeled + unlabeled])  # what the student sees
        if self.esl:
            from mmseg_esl.engine.hooks.ema_teacher_hook import ema_update_
            ema_update_(self.model.teacher, student, 0.0)  # the teacher starts as a copy, as in training
            prepare_steady_state(self.model, args.seed)
            if args.confident_teacher:
                contrast_cfg = cfg.model.get('semi_train_cfg', {}).get('loss_contrast') or {}
                zeta = (self.model.contrast_loss.conf_thresh if self.model.contrast_loss is not None
                        else contrast_cfg.get('conf_thresh', 0.95))  # (b), (c): ζ of the config's (e)
                # EMA steps this run takes: warm-up, timed, component (+ backward probe) and CPU memory iterations.
                steps = args.warmup + args.iters + (args.component_iters if args.components else 0) + 4
                self.confidence = make_teacher_confident(
                    self.model, self.inputs[self.num_labeled:], zeta=zeta, fraction=args.confident_fraction,
                    margin_steps=steps, decay=self.hook.decay)
        self.optim_wrapper = make_optim_wrapper(cfg, self.model, method, amp, args.device)
        self.iteration = 0

    def step(self) -> Dict[str, float]:
        """One training iteration as mmengine runs it (after the data preprocessor); returns the logged values."""
        model = self.model
        if self.hook is not None:
            runner = types.SimpleNamespace(model=model, iter=STEADY_STATE_ITER + self.iteration)
            self.hook.before_train_iter(runner, batch_idx=self.iteration)
        with self.optim_wrapper.optim_context(model):
            if self.esl:
                losses = model.loss(self.inputs, self.samples)
            else:
                losses = model.loss(self.inputs[:self.num_labeled], self.samples[:self.num_labeled])
        parsed, log_vars = model.parse_losses(losses)
        self.optim_wrapper.update_params(parsed)
        if self.hook is not None:
            self.hook.after_train_iter(runner, batch_idx=self.iteration)
        self.iteration += 1
        return {key: float(value.item()) for key, value in log_vars.items()}  # as RuntimeInfoHook logs them


def iqr(values: Sequence[float]) -> float:
    return float(np.percentile(values, 75) - np.percentile(values, 25))


def timed_step(run: Run) -> Tuple[float, Dict[str, float]]:
    """One synchronised, timed iteration: ``(seconds, logged values)``."""
    synchronize(run.device)
    start = time.perf_counter()
    log = run.step()
    synchronize(run.device)
    return time.perf_counter() - start, log


def summarize(run: Run, times: List[float], logs: List[Dict[str, float]]) -> Dict:
    """Median and IQR of the step times, and the means of the logged anchors, confidence and loss."""
    result = dict(step_ms_median=1e3 * float(np.median(times)), step_ms_iqr=1e3 * iqr(times),
                  step_ms=[round(1e3 * t, 3) for t in times])
    for key, name in (('contrast.anchors', 'anchors_mean'), ('unsup.teacher_conf', 'teacher_conf_mean'),
                      ('loss', 'loss_mean')):
        values = [log[key] for log in logs if key in log]
        result[name] = float(np.mean(values)) if values else (0.0 if name == 'anchors_mean' else None)
    result['finite_losses'] = all(math.isfinite(v) for log in logs for k, v in log.items() if 'loss' in k)
    if run.confidence:
        result['teacher_scale'] = run.confidence['scale']
        result['confident_fraction'] = run.confidence['fraction']
    return result


def release(device: str) -> None:
    gc.collect()
    if device == 'cuda':
        torch.cuda.empty_cache()


def run_method(cfg: Config, method: str, amp: str, args: argparse.Namespace) -> Dict:
    """Builds, warms up and times one (method, amp); with ``--components`` also the component pass of (e).

    The peak memory covers the timed iterations: on CUDA ``max_memory_allocated`` (reset after the warm-up); on
    CPU, in a child of ``--isolate`` only, the peak RSS minus the RSS after building model, optimizer and batch.
    """
    device = args.device
    release(device)
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    run = Run(cfg, method, amp, args)
    for _ in range(args.warmup):
        run.step()
    synchronize(device)
    if device == 'cuda':
        static = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times, logs = zip(*[timed_step(run) for _ in range(args.iters)])
    result = summarize(run, list(times), list(logs))
    if device == 'cuda':
        result.update(peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30, static_mem_gib=static / 2**30,
                      peak_reserved_gib=torch.cuda.max_memory_reserved() / 2**30)
    else:
        result['peak_rss_gib'] = cpu_step_memory(run) if args.single is not None else None
    if args.components and method == 'esl':
        result['components_raw'] = component_pass(run, args.component_iters)
    del run
    release(device)
    return result


def cpu_step_memory(run: Run, steps: int = 3) -> Optional[float]:
    """GiB of anonymous memory that ``steps`` more iterations need above the state before them (CPU).

    Measured after the timed iterations (the sampler would perturb them): the baseline holds the model, the
    teacher, optimizer state, bank and batch; the peak adds activations, gradients and every temporary.
    """
    gc.collect()
    base = anon_rss_bytes()
    if base is None:
        return None
    with AnonPeakSampler() as sampler:
        for _ in range(steps):
            run.step()
    return max(sampler.peak - base, 0) / 2**30


def run_interleaved(cfg: Config, methods: Sequence[str], amp: str, args: argparse.Namespace) -> Dict[str, Dict]:
    """Times ``methods`` round-robin, one iteration of each in turn (rotating the order), in one process.

    A slow drift of the machine's load (a shared CPU) then hits every method alike, so ratios are fair. All
    models are held at once, so no memory is reported here (``--isolate`` measures it in separate processes).
    """
    runs = {method: Run(cfg, method, amp, args) for method in methods}
    for run in runs.values():
        for _ in range(args.warmup):
            run.step()
    times: Dict[str, List[float]] = {m: [] for m in methods}
    logs: Dict[str, List[Dict[str, float]]] = {m: [] for m in methods}
    for i in range(args.iters):
        for method in methods[i % len(methods):] + methods[:i % len(methods)]:
            seconds, log = timed_step(runs[method])
            times[method].append(seconds)
            logs[method].append(log)
    results = {}
    for method, run in runs.items():
        results[method] = summarize(run, times[method], logs[method])
        results[method]['peak_mem_gib' if args.device == 'cuda' else 'peak_rss_gib'] = None
        if 'floor' in runs:  # same rounds: per-round differences cancel the load shared by both
            diff = 1e3 * (np.array(times[method]) - np.array(times['floor']))
            results[method]['paired_vs_floor'] = dict(
                diff_ms_mean=float(diff.mean()), diff_ms_sem=float(diff.std(ddof=1) / math.sqrt(len(diff)))
                if len(diff) > 1 else None,
                ratio_median=float(np.median(np.array(times[method]) / np.array(times['floor']))))
    if args.components and 'esl' in runs:
        results['esl']['components_raw'] = component_pass(runs['esl'], args.component_iters)
    del runs
    release(args.device)
    return results


# ---------------------------------------------------------------------------------------------- components


@contextmanager
def instrumented(run: Run, records: Dict[str, List[float]], captured: Dict) -> Iterator[None]:
    """Wraps the functions of the real (e) path with synchronised timers; restores them on exit.

    Instance attributes shadow the bound methods (``DSLLoss.pseudo_label``/``forward``,
    ``PixelPartContrastLoss.assign``/``forward``/``update``, the bank's ``enqueue`` and samplers,
    ``ESLSegmentor``'s three contrastive steps); the pure functions are patched in the namespace of
    ``pixel_part_contrast_loss``, which is where ``forward`` and ``update`` look them up.
    """
    from mmseg_esl.models.losses import pixel_part_contrast_loss as ppcl
    model, device = run.model, run.device
    loss_fn = model.contrast_loss

    def timer(name: str, fn: Callable, capture: bool = False) -> Callable:
        def wrapper(*a, **k):
            synchronize(device)
            start = time.perf_counter()
            out = fn(*a, **k)
            synchronize(device)
            records.setdefault(name, []).append(time.perf_counter() - start)
            if capture:
                captured[name] = (a, k)
            return out
        return wrapper

    instance_patches = [(model.unsup_loss, 'pseudo_label'), (model.unsup_loss, 'forward'),
                        (model, 'contrast_targets'), (model, 'loss_contrast'), (model, 'update_bank_and_prototypes'),
                        (loss_fn, 'assign'), (loss_fn, 'forward'), (loss_fn, 'update'), (loss_fn.bank, 'enqueue'),
                        (loss_fn.bank, 'sample_positive_idx'), (loss_fn.bank, 'sample_negative_idx')]
    names = ['pseudo_label', 'unsup_forward', 'contrast_targets', 'loss_contrast', 'update_bank', 'assign',
             'contrast_forward', 'update', 'enqueue',
             'sample_positive_idx', 'sample_negative_idx']
    module_patches = ['masked_average_pool', 'upsampled_masked_average_pool', 'sample_anchors', 'gather_pixels',
                      'part_infonce_from_bank']
    saved_modules = {name: getattr(ppcl, name) for name in module_patches}
    try:
        for (obj, attr), name in zip(instance_patches, names):
            setattr(obj, attr, timer(name, getattr(obj, attr)))
        for name in module_patches:
            setattr(ppcl, name, timer(name, saved_modules[name], capture=name == 'part_infonce_from_bank'))
        yield
    finally:
        for obj, attr in instance_patches:
            obj.__dict__.pop(attr, None)
        for name, fn in saved_modules.items():
            setattr(ppcl, name, fn)


def infonce_backward_seconds(run: Run, captured: Dict) -> Optional[float]:
    """Backward time of Eq. 10 on the tensors of the last real call (forward again, then timed backward)."""
    from mmseg_esl.models.losses.part_contrast import part_infonce_from_bank
    if 'part_infonce_from_bank' not in captured:
        return None
    args, kwargs = captured['part_infonce_from_bank']
    anchors = args[0].detach().clone().requires_grad_(True)
    with run.optim_wrapper.optim_context(run.model):
        out = part_infonce_from_bank(anchors, *args[1:], **kwargs)
        loss = (out[0] if isinstance(out, tuple) else out).sum()
    synchronize(run.device)
    start = time.perf_counter()
    loss.backward()
    synchronize(run.device)
    return time.perf_counter() - start


def component_pass(run: Run, iters: int) -> Dict[str, float]:
    """Median milliseconds of each component over ``iters`` instrumented (e) iterations."""
    per_step: List[Dict[str, float]] = []
    for _ in range(iters):
        records: Dict[str, List[float]] = {}
        captured: Dict = {}
        with instrumented(run, records, captured):
            synchronize(run.device)
            start = time.perf_counter()
            run.step()
            synchronize(run.device)
            total = time.perf_counter() - start
        t = {k: sum(v) for k, v in records.items()}
        get = t.get
        comp = dict(
            dsl=get('pseudo_label', 0) + get('unsup_forward', 0),
            part_grouping=get('assign', 0),
            map=get('masked_average_pool', 0) + get('upsampled_masked_average_pool', 0),
            bank_update=get('enqueue', 0),
            anchor_sampling=(get('sample_anchors', 0) + get('sample_positive_idx', 0)
                             + get('sample_negative_idx', 0) + get('gather_pixels', 0)),
            infonce_forward=get('part_infonce_from_bank', 0),
        )
        comp['prototype_update'] = get('update', 0) - comp['map'] - comp['bank_update']
        contrast_steps = get('contrast_targets', 0) + get('loss_contrast', 0) + get('update_bank', 0)
        comp['contrast_other'] = (contrast_steps - comp['part_grouping'] - get('update', 0)
                                  - comp['anchor_sampling'] - comp['infonce_forward'])
        comp['infonce_backward'] = infonce_backward_seconds(run, captured) or 0.0
        comp['instrumented_step'] = total
        per_step.append(comp)
    return {name: 1e3 * float(np.median([c[name] for c in per_step])) for name in per_step[0]}


# ----------------------------------------------------------------------------------------------- reporting


def machine_name(device: str) -> str:
    from mmseg_esl.utils.experiment import cpu_name
    cpu = cpu_name()
    text = f'{cpu}, {os.cpu_count()} CPU(s) visible, torch threads {torch.get_num_threads()}'
    if device == 'cuda':
        props = torch.cuda.get_device_properties(0)
        text = f'{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}; ' + text
    return text


def meta_info(args: argparse.Namespace, argv: Sequence[str]) -> Dict:
    import mmcv
    import mmengine
    import mmseg
    return dict(
        command='python tools/benchmarks/train_step.py ' + ' '.join(argv),
        device=args.device, device_name=machine_name(args.device), torch=torch.__version__, mmseg=mmseg.__version__,
        mmcv=mmcv.__version__, mmengine=mmengine.__version__, python=platform.python_version(), config=args.config,
        cfg_options=args.cfg_options, crop=args.crop, labeled=args.labeled, unlabeled=args.unlabeled,
        iters=args.iters, warmup=args.warmup, confident_teacher=args.confident_teacher,
        confident_fraction=args.confident_fraction, date=datetime.datetime.now().isoformat(timespec='seconds'))


def add_ratios(results: Dict[str, Dict[str, Dict]]) -> None:
    """``ratio_vs_sup`` and ``ratio_vs_floor``: step-time ratios at the same AMP mode (None when missing)."""
    for by_amp in results.values():
        for amp, res in by_amp.items():
            for key, ref in (('ratio_vs_sup', 'sup'), ('ratio_vs_floor', 'floor')):
                base = results.get(ref, {}).get(amp, {}).get('step_ms_median')
                own = res.get('step_ms_median')
                res[key] = own / base if own is not None and base else None


def components_table(raw: Dict[str, float], step_ms: Optional[float]) -> Dict[str, Dict[str, Optional[float]]]:
    reference = step_ms or raw.get('instrumented_step')
    return {name: dict(ms=raw[name], pct_of_step=100.0 * raw[name] / reference if reference else None)
            for name in COMPONENTS if name in raw}


def _fmt(value: Optional[float], spec: str, suffix: str = '') -> str:
    return '–' if value is None else f'{value:{spec}}{suffix}'


def markdown_tables(report: Dict) -> str:
    meta = report['meta']
    mem_key = 'peak_mem_gib' if meta['device'] == 'cuda' else 'peak_rss_gib'
    mem_name = 'peak mem (GiB, max allocated)' if meta['device'] == 'cuda' else 'step memory (GiB, anon. RSS)'
    lines = [f'| method | AMP | step ms (median) | IQR ms | ×(a) | ×(d) | {mem_name} | anchors / iter |',
             '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |']
    for method in METHODS:
        for amp in AMP_MODES:
            res = report['results'].get(method, {}).get(amp)
            if res is None:
                continue
            if 'error' in res or 'skipped' in res:
                lines.append(f'| {METHOD_LABELS[method]} | {amp} | {res.get("error") or res.get("skipped")} '
                             '| | | | | |')
                continue
            lines.append(
                f'| {METHOD_LABELS[method]} | {amp} | {res["step_ms_median"]:.1f} | {res["step_ms_iqr"]:.1f} | '
                f'{_fmt(res.get("ratio_vs_sup"), ".3f")} | {_fmt(res.get("ratio_vs_floor"), ".3f")} | '
                f'{_fmt(res.get(mem_key), ".3f")} | {res.get("anchors_mean", 0):.0f} |')
    paired = [(method, amp, res['paired_vs_floor']) for method in METHODS for amp in AMP_MODES
              for res in [report['results'].get(method, {}).get(amp)] if res and 'paired_vs_floor' in res
              and method != 'floor']
    if paired:
        lines += ['', 'Interleaved rounds, each method against (d) in the same round: mean ± standard error of the '
                  'per-round step-time difference, and the median per-round ratio:', '',
                  '| method | AMP | Δ vs (d) ms | median ratio vs (d) |', '| --- | --- | ---: | ---: |']
        for method, amp, entry in paired:
            sem = _fmt(entry['diff_ms_sem'], '.1f')
            lines.append(f'| {METHOD_LABELS[method]} | {amp} | {entry["diff_ms_mean"]:+.1f} ± {sem} | '
                         f'{entry["ratio_median"]:.3f} |')
    for amp, comps in report.get('components_by_amp', {}).items():
        step = report['results'].get('esl', {}).get(amp, {}).get('step_ms_median')
        lines += ['', f'ESL components, AMP {amp} (medians of {meta.get("component_iters")} instrumented (e) '
                  f'iterations; % of the median (e) step, {_fmt(step, ".1f")} ms):', '',
                  '| component | ms | % of (e) step |', '| --- | ---: | ---: |']
        total = 0.0
        for name, entry in comps.items():
            total += entry['ms']
            lines.append(f'| {COMPONENT_LABELS[name]} | {entry["ms"]:.2f} | {_fmt(entry["pct_of_step"], ".2f")} |')
        lines.append(f'| sum | {total:.2f} | {_fmt(100 * total / step if step else None, ".2f")} |')
    return '\n'.join(lines)


def write_report(report: Dict, args: argparse.Namespace) -> None:
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
    if args.md:
        os.makedirs(osp.dirname(osp.abspath(args.md)), exist_ok=True)
        with open(args.md, 'w') as f:
            f.write(markdown_tables(report) + '\n')


# ---------------------------------------------------------------------------------------------------- main


def run_isolated(argv: Sequence[str], method: str, amp: str, *, memory_only: bool = False) -> Dict:
    """Runs one (method, amp) in a fresh process of this script and returns its result.

    With ``memory_only`` the child runs 1 warm-up and 1 timed iteration, then the 3 sampled iterations of
    :func:`cpu_step_memory`, and no component pass; its timing is not reported.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = osp.join(tmp, 'result.json')
        drop = ['--json', '--md', '--methods', '--amp', '--amp-methods', '--isolate', '--time-budget', '--interleave']
        keep = strip_options(argv, drop + (['--components', '--iters', '--warmup'] if memory_only else []))
        cmd = [sys.executable, osp.abspath(__file__), *keep, '--methods', method, '--amp', amp, '--isolate', 'never',
               '--single', method, '--single-amp', amp, '--single-out', out]
        env = dict(LAUNCH_ENV)
        if memory_only:
            cmd += ['--iters', '1', '--warmup', '1']
            # glibc: a fixed mmap threshold returns every freed block of >= 64 KiB to the OS at once, so the peak
            # RSS follows the live tensors instead of heap blocks kept by the default dynamic threshold (which
            # saves page faults, hence only here, where no time is reported).
            env.update(MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='0')
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        if proc.returncode != 0 or not osp.isfile(out):
            tail = '\n'.join(proc.stdout.splitlines()[-30:])
            raise RuntimeError(f'{method} / {amp} failed in its subprocess (exit {proc.returncode}):\n{tail}')
        with open(out) as f:
            return json.load(f)


def strip_options(argv: Sequence[str], names: Sequence[str]) -> List[str]:
    """``argv`` without the given options and their values (``--opt v`` and ``--opt=v`` forms)."""
    out, skip = [], False
    argv = list(argv)
    for i, token in enumerate(argv):
        if skip:
            if token.startswith('--'):
                skip = False
            else:
                continue
        name = token.split('=', 1)[0]
        if name in names:
            skip = '=' not in token and i + 1 < len(argv)
            continue
        out.append(token)
    return out


def print_run(method: str, amp: str, res: Dict) -> None:
    if 'error' in res or 'skipped' in res:
        print(f'== {METHOD_LABELS[method]} / {amp}: {res.get("error") or res.get("skipped")}', flush=True)
        return
    mem = res.get('peak_mem_gib', res.get('peak_rss_gib'))
    print(f'== {METHOD_LABELS[method]} / {amp}: {res["step_ms_median"]:.1f} ms (IQR {res["step_ms_iqr"]:.1f}), '
          f'peak {_fmt(mem, ".3f")} GiB, anchors {res.get("anchors_mean", 0):.0f}', flush=True)


def failure(exc: BaseException) -> Dict[str, str]:
    """The result entry of a run that raised: the error, and a hint for running out of GPU memory."""
    import traceback
    traceback.print_exc()
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        release('cuda')
        return dict(error=f'out of GPU memory ({str(exc).splitlines()[0][:160]}); reduce --labeled/--unlabeled '
                          'or --crop')
    return dict(error=f'{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ""}')


def record(report: Dict, method: str, amp: str, result: Dict, args: argparse.Namespace) -> None:
    """Stores one run's result (its component table apart), updates the ratios and rewrites the outputs."""
    raw = result.pop('components_raw', None)
    report['results'].setdefault(method, {})[amp] = result
    if raw is not None:
        report.setdefault('components_by_amp', {})[amp] = components_table(raw, result.get('step_ms_median'))
        report.setdefault('components_instrumented_step_ms', {})[amp] = raw.get('instrumented_step')
    add_ratios(report['results'])
    print_run(method, amp, result)
    write_report(report, args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    esl_imports()
    cfg = load_config(args.config, args.cfg_options)
    if args.device == 'cuda':
        torch.backends.cudnn.benchmark = bool(cfg.get('env_cfg', {}).get('cudnn_benchmark', False))

    if args.single is not None:  # child of --isolate: one run, result to --single-out
        result = run_method(cfg, args.single, args.single_amp, args)
        with open(args.single_out, 'w') as f:
            json.dump(result, f)
        return 0

    isolate = args.isolate == 'always' or (args.isolate == 'auto' and args.device == 'cpu')
    report: Dict = dict(meta=meta_info(args, argv), results={})
    report['meta'].update(isolated=isolate, interleaved=args.interleave, amp_methods=args.amp_methods,
                          component_iters=args.component_iters if args.components else None)
    start = time.perf_counter()
    for amp in args.amp:
        methods = [m for m in args.methods if amp == 'none' or m in args.amp_methods]
        if args.interleave:
            if args.time_budget is not None and time.perf_counter() - start > args.time_budget:
                for method in methods:
                    record(report, method, amp, dict(skipped=f'skipped: time budget of {args.time_budget:.0f} s '
                                                             'spent'), args)
                continue
            try:
                results = run_interleaved(cfg, methods, amp, args)
            except Exception as exc:  # noqa: BLE001  (recorded; the other AMP modes still run)
                results = {method: failure(exc) for method in methods}
            for method in methods:
                if isolate and 'error' not in results[method]:
                    try:
                        memory = run_isolated(argv, method, amp, memory_only=True)
                        for key in ('peak_rss_gib', 'peak_mem_gib', 'static_mem_gib', 'peak_reserved_gib'):
                            if key in memory:
                                results[method][key] = memory[key]
                    except Exception as exc:  # noqa: BLE001
                        results[method]['memory_error'] = failure(exc)['error']
                record(report, method, amp, results[method], args)
            continue
        for method in methods:
            if args.time_budget is not None and time.perf_counter() - start > args.time_budget:
                record(report, method, amp, dict(skipped=f'skipped: time budget of {args.time_budget:.0f} s spent'),
                       args)
                continue
            try:
                result = run_isolated(argv, method, amp) if isolate else run_method(cfg, method, amp, args)
            except Exception as exc:  # noqa: BLE001  (recorded; the other runs still run)
                result = failure(exc)
            record(report, method, amp, result, args)
    if report.get('components_by_amp'):
        first = next(iter(report['components_by_amp']))
        report['components'] = report['components_by_amp'][first]
        report['meta']['components_amp'] = first
    report['meta']['wall_s'] = time.perf_counter() - start
    write_report(report, args)
    print('\n' + markdown_tables(report))
    if args.json:
        print(f'\nJSON: {args.json}')
    failed = [f'{m}/{a}' for m, by_amp in report['results'].items() for a, r in by_amp.items() if 'error' in r]
    if failed:
        print(f'\nFAILED runs: {", ".join(failed)} (see the errors above and in the JSON)', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
