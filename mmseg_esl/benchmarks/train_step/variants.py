"""The five methods (a)-(e) as models that differ only in ``semi_train_cfg``, brought to a training's steady state."""
from __future__ import annotations

import copy
import math
import types
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from mmengine.config import Config, ConfigDict
from torch import Tensor, nn

from .config import maybe_convert_sync_bn

METHODS: Tuple[str, ...] = ('sup', 'mt-hard', 'mt-dsl', 'floor', 'esl')
METHOD_LABELS: Dict[str, str] = {'sup': '(a) sup', 'mt-hard': '(b) MT-hard', 'mt-dsl': '(c) MT-DSL',
                                 'floor': '(d) floor', 'esl': '(e) ESL'}


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
