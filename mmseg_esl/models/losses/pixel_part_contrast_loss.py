"""``PixelPartContrastLoss``: ESL's pixel-to-part contrast (paper §3.3) with its state, as one mmseg loss module.

The module owns everything the contrastive term needs to carry from one iteration to the next, in registered
buffers so that checkpoints save it and a resumed run continues exactly:

* ``prototypes`` (C, K, L'): the subclass prototypes ``P`` of Eq. 7, set once by ``PrototypeInitHook``
  (K-means on the labeled set) and then moved by Eq. 12; ``prototypes_ready`` says whether they were set.
* ``bank`` (:class:`~mmseg_esl.models.utils.PartMemoryBank`): the C × K FIFO queues of teacher part means.

Per iteration, ``ESLSegmentor`` calls (all maps at one resolution, the projector's stride ``stride = 4``):

1. :meth:`assign` — Eq. 7, the part ``k*`` of every pixel from the teacher encoder features ``E^t``;
2. :meth:`forward` — Eq. 9 (anchors) and Eq. 10 (InfoNCE against the bank) on the student's embedding
   ``z^s``, reduced over classes to ``L_CTR`` and multiplied by ``loss_weight`` (λ2 of Eq. 11);
3. :meth:`update` — after the loss: Eq. 8 on the teacher's embedding ``z^t`` into the bank (MoCo order: an
   anchor's positive is never its own image's part mean of this step) and Eq. 12 on ``E^t``.

It is a collective under DDP: :meth:`update` all-gathers the part means and all-reduces the Eq. 12 sums, so
every rank holds the same bank and prototypes. Every rank must call it every iteration.

Choices the paper does not make (each a constructor argument):

* ``queue_size = 256``: see :class:`~mmseg_esl.models.utils.PartMemoryBank`.
* ``max_anchors_per_class = None``: no cap, the paper's 10 %; set a cap if memory is short.
* ``reduction = 'paper'``: ``(1/C) Σ_c L^c`` over all C classes; ``'present'`` (U2PL) divides by the classes
  that have anchors instead, i.e. it scales the effective λ2 by ``C / C_present``.
* ``negatives = 'part'``: the paper's "other queues excluding (c, k*)"; ``'class'`` excludes all of class c.
* ``normalize_prototype_feats = True``: Eq. 12 averages L2-normalised ``E^t`` pixels, because the K-means
  prototypes are unit vectors (K-means ran on normalised pixels, Eq. 7 compares cosines); averaging raw
  post-ReLU features (norms ≫ 1) into unit prototypes would let ``P'`` dominate after a few steps.
* ``unlabeled_part_thresh = 0.0``: the bank and Eq. 12 use every valid unlabeled pixel with its teacher arg-max
  class, as the paper's mask ``M`` is defined; a threshold (e.g. ζ) keeps only confident pixels.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.dist import all_reduce
from mmseg.registry import MODELS
from torch import Tensor, nn

from ...checks import is_non_negative_number, is_positive_int
from ..utils.memory_bank import EXCLUDE_RULES, PartMemoryBank
from .anchor_sampling import gather_pixels, sample_anchors
from .infonce import REDUCTIONS, class_mean_loss, part_infonce_from_bank
from .masked_pooling import masked_average_pool, upsampled_masked_average_pool
from .part_assignment import assign_parts
from .prototype_update import batch_part_means, momentum_update_prototypes_

__all__ = ['PixelPartContrastLoss', 'negative_pool_size']


#: Where the arguments of this loss live in an ESL config (``model.semi_train_cfg.loss_contrast``), for messages.
CONFIG_KEY = 'semi_train_cfg.loss_contrast'

#: What some arguments are in the paper, appended to their error messages.
_MEANING = dict(
    num_parts='K, the parts per class; paper 5. K = 0 (no contrastive term) is set on the ESLSegmentor',
    num_negatives='N_s of Eq. 10; paper 255',
    conf_thresh='ζ of Eq. 9; paper 0.95',
    temperature='σ of Eq. 10; paper 0.5',
    loss_weight='λ2 of Eq. 11; paper 0.1',
    queue_size='q, the length of each of the C × K queues; default 256',
)


def _argument_error(name: str, problem: str, value: object) -> ValueError:
    meaning = f' ({_MEANING[name]})' if name in _MEANING else ''
    return ValueError(f'PixelPartContrastLoss: {name} must be {problem}, got {name}={value!r}. Set '
                      f'{CONFIG_KEY}.{name}{meaning} to a valid value.')


def _positive_int(name: str, value: int) -> int:
    if not is_positive_int(value):
        raise _argument_error(name, 'an integer >= 1', value)
    return int(value)


def _unit_interval(name: str, value: float, *, open_low: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and (
        (0.0 < value <= 1.0) if open_low else (0.0 <= value <= 1.0))
    if not ok:
        raise _argument_error(name, f'a number in {"(0, 1]" if open_low else "[0, 1]"}', value)
    return float(value)


def negative_pool_size(*, num_classes: int, num_parts: int, queue_size: int, negatives: str = 'part') -> int:
    """How many bank slots the negatives of one anchor can come from, once the bank is full.

    ``'part'`` (the paper): every queue but the anchor's own ``(c, k*)``, ``(C·K − 1)·q`` slots; ``'class'``: the
    queues of the other classes, ``(C − 1)·K·q`` slots. Negatives are drawn with replacement, so ``N_s`` larger
    than this repeats entries in every anchor's negative set (and 0 means no anchor ever gets a negative).

    Args:
        num_classes: C.
        num_parts: K.
        queue_size: q.
        negatives: ``'part'`` or ``'class'``.

    Returns:
        The number of eligible slots of a full bank.
    """
    if negatives == 'class':
        return (num_classes - 1) * num_parts * queue_size
    return (num_classes * num_parts - 1) * queue_size


@MODELS.register_module()
class PixelPartContrastLoss(nn.Module):
    """Pixel-to-part InfoNCE (Eq. 9-10), its memory bank (Eq. 8) and prototypes (Eq. 7, 12). Paper defaults.

    Args:
        num_classes: C. ``ESLSegmentor`` fills it from the wrapped decode head when omitted.
        feat_channels: L', channels of the encoder output ``E^t`` that feeds Eq. 7 and Eq. 12 (e.g. 2048
            for ResNet-101's last stage). Required: it sizes the ``prototypes`` buffer.
        embed_channels: L, channels of the projector's embedding ``z`` (paper: 512). ``ESLSegmentor`` fills it
            from its projector when omitted.
        num_parts: K, subclasses per class (paper: 5; 1 is the pixel-to-region variant of Tab. 4). K = 0
            (no contrastive term) is handled by ``ESLSegmentor``, which then builds neither this loss nor a
            projector.
        in_index: Which entry of the teacher's ``extract_feat`` output is ``E^t`` (default -1: the last
            backbone stage, or the last neck output if the model has a neck).
        stride: τ, the stride at which Eq. 7-10 and 12 are computed: maps are at ``ceil(H / stride)`` ×
            ``ceil(W / stride)`` (paper: 4, the resolution of DeepLabv3+'s decoder features).
        conf_thresh: ζ of Eq. 9, the teacher probability an unlabeled pixel needs to be an anchor (paper 0.95).
        anchor_ratio: Fraction of each class's qualifying pixels sampled as anchors (paper 0.1).
        max_anchors_per_class: Optional cap on anchors per class and batch, for memory (None: no cap).
        num_negatives: N_s, negatives per anchor (paper 255).
        temperature: σ of ``Φ(a, b) = exp(cos(a, b) / σ)`` (paper 0.5).
        negatives: ``'part'`` (paper: all queues but ``(c, k*)``) or ``'class'`` (other classes only).
        reduction: ``'paper'`` or ``'present'``, see :func:`~mmseg_esl.models.losses.class_mean_loss`.
        queue_size: q, length of each of the C × K FIFO queues (not given by the paper; default 256).
        prototype_momentum: θ of Eq. 12 (paper 0.99).
        normalize_prototype_feats: L2-normalise ``E^t`` pixels before the Eq. 12 average (see module doc).
        unlabeled_part_thresh: Teacher probability an unlabeled pixel needs to enter the bank and Eq. 12
            (default 0.0: all pixels, the paper's mask ``M``).
        chunk_size: Anchors per anchor × bank matmul in :func:`part_infonce_from_bank` (2048: 220 MB of fp32
            similarities per chunk against a 21 · 5 · 256 bank).
        ignore_index: Label value of ignored pixels.
        loss_weight: λ2 of Eq. 11 (paper 0.1).
        loss_name: Key of the loss in the log; must contain ``'loss'`` so that mmengine adds it to the total.

    Raises:
        ValueError: On an invalid argument, naming it and its config key (``semi_train_cfg.loss_contrast.<name>``),
            and for a bank that can never give a negative (C·K = 1, or C = 1 with ``negatives='class'``).
            ``num_negatives`` larger than the bank slots negatives come from (:func:`negative_pool_size`) only
            warns here (they are drawn with replacement); ``tools/train.py``'s pre-flight refuses it.
        ValueError: From ``load_state_dict`` (also under mmengine's ``strict=False``), for a checkpoint whose
            prototypes or bank have another C, K, q, L or L'.
    """

    prototypes: Tensor
    prototypes_ready: Tensor

    def __init__(self, *, num_classes: int, feat_channels: int, embed_channels: int = 512, num_parts: int = 5,
                 in_index: int = -1, stride: int = 4, conf_thresh: float = 0.95, anchor_ratio: float = 0.1,
                 max_anchors_per_class: Optional[int] = None, num_negatives: int = 255, temperature: float = 0.5,
                 negatives: str = 'part', reduction: str = 'paper', queue_size: int = 256,
                 prototype_momentum: float = 0.99, normalize_prototype_feats: bool = True,
                 unlabeled_part_thresh: float = 0.0, chunk_size: int = 2048, ignore_index: int = 255,
                 loss_weight: float = 0.1, loss_name: str = 'loss_ctr') -> None:
        super().__init__()
        if num_parts == 0:
            raise ValueError('PixelPartContrastLoss: num_parts=0 means "no contrastive term" (Tab. 4, K = 0); '
                             'ESLSegmentor then builds no PixelPartContrastLoss and no projector. Set '
                             'semi_train_cfg.loss_contrast.num_parts=0 on the ESLSegmentor, not on this loss.')
        self.num_classes = _positive_int('num_classes', num_classes)
        self.feat_channels = _positive_int('feat_channels', feat_channels)
        self.embed_channels = _positive_int('embed_channels', embed_channels)
        self.num_parts = _positive_int('num_parts', num_parts)
        self.stride = _positive_int('stride', stride)
        self.num_negatives = _positive_int('num_negatives', num_negatives)
        self.chunk_size = _positive_int('chunk_size', chunk_size)
        if max_anchors_per_class is not None:
            max_anchors_per_class = _positive_int('max_anchors_per_class', max_anchors_per_class)
        self.max_anchors_per_class = max_anchors_per_class
        if isinstance(in_index, bool) or not isinstance(in_index, numbers.Integral):
            raise ValueError(f'PixelPartContrastLoss: in_index must be an int (index into extract_feat outputs), '
                             f'got in_index={in_index!r}.')
        self.in_index = int(in_index)
        self.conf_thresh = _unit_interval('conf_thresh', conf_thresh)
        self.anchor_ratio = _unit_interval('anchor_ratio', anchor_ratio, open_low=True)
        self.prototype_momentum = _unit_interval('prototype_momentum', prototype_momentum)
        self.unlabeled_part_thresh = _unit_interval('unlabeled_part_thresh', unlabeled_part_thresh)
        if isinstance(temperature, bool) or not (isinstance(temperature, numbers.Real) and temperature > 0
                                                  and math.isfinite(temperature)):
            raise _argument_error('temperature', 'a finite number > 0', temperature)
        self.temperature = float(temperature)
        if negatives not in EXCLUDE_RULES:
            raise _argument_error('negatives', f'one of {EXCLUDE_RULES}', negatives)
        self.negatives = negatives
        self._check_num_negatives(_positive_int('queue_size', queue_size))
        if reduction not in REDUCTIONS:
            raise ValueError(f'PixelPartContrastLoss: reduction must be one of {REDUCTIONS}, got {reduction!r}.')
        self.reduction = reduction
        if 0 <= ignore_index < num_classes:
            raise ValueError(f'PixelPartContrastLoss: ignore_index={ignore_index} is a class index; use e.g. 255.')
        self.ignore_index = ignore_index
        self.normalize_prototype_feats = bool(normalize_prototype_feats)
        if not is_non_negative_number(loss_weight):
            raise _argument_error('loss_weight', 'a finite number >= 0', loss_weight)
        self.loss_weight = float(loss_weight)
        if 'loss' not in loss_name:
            raise ValueError(f"PixelPartContrastLoss: loss_name must contain 'loss' (mmengine sums only such keys), "
                             f'got {loss_name!r}.')
        self._loss_name = loss_name
        self.register_buffer('prototypes', torch.zeros(self.num_classes, self.num_parts, self.feat_channels))
        self.register_buffer('prototypes_ready', torch.zeros((), dtype=torch.bool))
        self.bank = PartMemoryBank(num_classes=self.num_classes, num_parts=self.num_parts, dim=self.embed_channels,
                                   queue_size=queue_size)

    @property
    def loss_name(self) -> str:
        """Key of the weighted loss in the loss dict (default ``'loss_ctr'``)."""
        return self._loss_name

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, num_parts={self.num_parts}, feat_channels={self.feat_channels}, '
                f'embed_channels={self.embed_channels}, loss_weight={self.loss_weight}')

    def _check_num_negatives(self, queue_size: int) -> None:
        """Refuses a bank that can never give a negative; warns when N_s exceeds the slots they come from.

        A hard error for ``num_negatives`` larger than :func:`negative_pool_size` would be wrong for this module
        (negatives are drawn with replacement, and small banks with ``N_s = 255`` are valid, e.g. in unit
        tests); ``mmseg_esl.utils.preflight`` refuses it for training runs of a config.
        """
        pool = negative_pool_size(num_classes=self.num_classes, num_parts=self.num_parts, queue_size=queue_size,
                                  negatives=self.negatives)
        if pool == 0:
            raise ValueError(
                f'PixelPartContrastLoss: with C={self.num_classes}, K={self.num_parts} and '
                f"negatives={self.negatives!r} no queue is ever eligible for an anchor's negatives, so L_CTR would "
                f"always be 0. Use negatives='part' with C·K >= 2 ({CONFIG_KEY}.negatives, "
                f'{CONFIG_KEY}.num_parts), or disable the term with {CONFIG_KEY}.num_parts=0.')
        if self.num_negatives > pool:
            warnings.warn(
                f'PixelPartContrastLoss: {CONFIG_KEY}.num_negatives={self.num_negatives} exceeds the {pool} bank '
                f'slots the negatives of an anchor can come from ({self.describe_negative_pool(queue_size)}); they are '
                f'drawn with replacement, so every anchor repeats negatives. Lower num_negatives to <= {pool} or '
                f'raise {CONFIG_KEY}.queue_size.', stacklevel=3)

    def describe_negative_pool(self, queue_size: Optional[int] = None) -> str:
        """The formula of :attr:`negative_pool_size` with this module's numbers, for messages."""
        queue_size = self.bank.queue_size if queue_size is None else queue_size
        if self.negatives == 'class':
            return f"(C - 1)·K·q = ({self.num_classes} - 1)·{self.num_parts}·{queue_size} with negatives='class'"
        return f"(C·K - 1)·q = ({self.num_classes}·{self.num_parts} - 1)·{queue_size} with negatives='part'"

    @property
    def negative_pool_size(self) -> int:
        """Bank slots the negatives of one anchor can come from, see :func:`negative_pool_size`."""
        return negative_pool_size(num_classes=self.num_classes, num_parts=self.num_parts,
                                  queue_size=self.bank.queue_size, negatives=self.negatives)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: List[str], unexpected_keys: List[str], error_msgs: List[str]) -> None:
        """Refuses a checkpoint of a different C, K, q, L or L' before anything is copied.

        mmengine's ``load_checkpoint`` (``load_from``, ``resume``) loads with ``strict=False`` and would only
        warn about the size-mismatched prototypes and bank, leaving this run with fresh ones. So a mismatch
        raises here, whatever ``strict`` says.

        Raises:
            ValueError: If the checkpoint's ``prototypes`` or ``bank.*`` shapes differ from this module's.
        """
        own = {'prototypes': self.prototypes, 'bank.queues': self.bank.queues, 'bank.pointers': self.bank.pointers,
               'bank.fill': self.bank.fill}
        mismatched = [name for name, tensor in own.items() if prefix + name in state_dict
                      and tuple(state_dict[prefix + name].shape) != tuple(tensor.shape)]
        if mismatched:
            raise ValueError(self._checkpoint_mismatch_message(state_dict, prefix, {k: own[k] for k in mismatched}))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _checkpoint_mismatch_message(self, state_dict: dict, prefix: str, mismatched: Dict[str, Tensor]) -> str:
        """What the checkpoint was trained with (as far as its shapes tell) against this config."""
        theirs = {}
        if prefix + 'prototypes' in state_dict and state_dict[prefix + 'prototypes'].ndim == 3:
            theirs['C'], theirs['K'], theirs["L'"] = tuple(state_dict[prefix + 'prototypes'].shape)
        if prefix + 'bank.queues' in state_dict and state_dict[prefix + 'bank.queues'].ndim == 3:
            queues, theirs['queue_size'], theirs['L'] = tuple(state_dict[prefix + 'bank.queues'].shape)
            if 'C' not in theirs:
                theirs['C·K'] = queues
        ours = {'C': self.num_classes, 'K': self.num_parts, 'queue_size': self.bank.queue_size,
                'L': self.embed_channels, "L'": self.feat_channels}
        if 'C·K' in theirs:
            ours['C·K'] = self.num_classes * self.num_parts
        fmt = ', '.join
        shapes = fmt(f'{prefix}{name} {tuple(state_dict[prefix + name].shape)} vs {tuple(tensor.shape)}'
                     for name, tensor in mismatched.items())
        return (f'PixelPartContrastLoss: the checkpoint was trained with '
                f'{fmt(f"{k}={v}" for k, v in theirs.items())}; this config has '
                f'{fmt(f"{k}={ours[k]}" for k in theirs)} ({CONFIG_KEY}.num_classes / num_parts / queue_size, '
                f"projector.out_channels for L, {CONFIG_KEY}.feat_channels for L'). Shapes (checkpoint vs model): "
                f'{shapes}. Resume with the same config, or start without --resume / load_from.')

    @torch.no_grad()
    def set_prototypes_(self, prototypes: Tensor) -> None:
        """Sets ``P`` (e.g. from K-means) and marks the prototypes ready.

        Args:
            prototypes: (C, K, L') floating tensor, any device.

        Raises:
            ValueError: If the shape is not (C, K, L').
        """
        if tuple(prototypes.shape) != tuple(self.prototypes.shape):
            raise ValueError(f'prototypes must have shape (C, K, L\') = {tuple(self.prototypes.shape)}, got '
                             f'{tuple(prototypes.shape)}')
        self.prototypes.copy_(prototypes.to(self.prototypes))
        self.prototypes_ready.fill_(True)

    def _check_ready(self) -> None:
        if not bool(self.prototypes_ready):
            raise RuntimeError(
                'PixelPartContrastLoss: the part prototypes P are not initialised. Add '
                "dict(type='PrototypeInitHook', dataloader=...) to custom_hooks (it runs K-means on the labeled set "
                'before training), or load a checkpoint that has them, or disable the term with '
                'semi_train_cfg.loss_contrast.num_parts=0.')

    def check_encoder_feats(self, feats: Tensor) -> None:
        """Raises a ValueError naming the config keys if ``E^t`` does not have ``feat_channels`` channels."""
        if feats.ndim != 4 or feats.shape[1] != self.feat_channels:
            raise ValueError(
                f'The encoder output E^t selected by semi_train_cfg.loss_contrast.in_index={self.in_index} has shape '
                f'{tuple(feats.shape)}, but semi_train_cfg.loss_contrast.feat_channels={self.feat_channels}; set '
                f'feat_channels to its channel count (or choose another in_index).')

    # ---------------------------------------------------------------------------------------------- Eq. 7
    def assign(self, enc_feats: Tensor, class_map: Tensor, *, align_corners: bool = False) -> Tensor:
        """Eq. 7: the part of each pixel of ``class_map`` (see :func:`assign_parts`).

        Args:
            enc_feats: Teacher encoder features ``E^t`` (N, L', h, w).
            class_map: (N, H, W) long classes at the loss resolution, ``ignore_index`` where unknown.
            align_corners: Of the bilinear upsampling of the cosine map.

        Returns:
            (N, H, W) long parts, -1 where the class is ignored.
        """
        self._check_ready()
        self.check_encoder_feats(enc_feats)
        return assign_parts(enc_feats, class_map, self.prototypes, ignore_index=self.ignore_index,
                            align_corners=align_corners)

    # ------------------------------------------------------------------------------------------- Eq. 9-10
    def forward(self, embed: Tensor, class_map: Tensor, part_map: Tensor, anchor_mask: Tensor,
                *, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
        """``λ2 · L_CTR``: anchors of Eq. 9 contrasted with the bank by Eq. 10, averaged over classes.

        Anchors: ``anchor_ratio`` of the pixels of each class where ``anchor_mask`` is True (the caller sets it
        to Eq. 9's rule: labeled pixels with a class, unlabeled pixels with teacher probability > ζ; see
        ``conf_thresh``), drawn over the whole batch. Each anchor's queue is ``(c, k*)`` with ``k*`` from
        ``part_map``; its positive is a random filled slot of that queue and its ``num_negatives`` negatives are
        drawn from the filled slots of the other queues (``negatives`` rule), with replacement. Anchors whose
        queue is empty or that have no eligible negative (early in training) are dropped. With no anchor left
        the loss is 0, still connected to ``embed`` so that every parameter gets a (zero) gradient under DDP.

        Args:
            embed: Student embedding ``z^s`` (N, L, H, W) at the loss resolution; gradients flow into it only.
            class_map: (N, H, W) long class of each pixel (label, or the teacher's arg-max of the mixed view).
            part_map: (N, H, W) long part ``k*`` of each pixel (-1 where none).
            anchor_mask: (N, H, W) bool, the pixels that may be anchors.
            generator: Optional generator for the anchor, positive and negative draws (tests).

        Returns:
            ``(loss, stats)``: the weighted scalar loss and detached logging scalars ``anchors`` (anchors used),
            ``bank_fill`` (filled fraction of the bank), ``pos_cos`` and ``neg_cos`` (mean cosine similarity of
            the anchors to their positive and to their negatives; 0 without anchors).
        """
        self._check_ready()
        if embed.ndim != 4 or embed.shape[1] != self.embed_channels:
            raise ValueError(f'embed must be (N, L={self.embed_channels}, H, W), got {tuple(embed.shape)}; set '
                             'embed_channels to the projector out_channels.')
        expected = (embed.shape[0], *embed.shape[2:])
        for name, label_map in (('class_map', class_map), ('part_map', part_map), ('anchor_mask', anchor_mask)):
            if tuple(label_map.shape) != expected:
                raise ValueError(f'{name} must have shape (N, H, W) = {expected} like embed, got '
                                 f'{tuple(label_map.shape)}')
        qualifies = anchor_mask & (part_map >= 0) & (class_map != self.ignore_index)
        flat_idx, classes = sample_anchors(class_map, qualifies, ratio=self.anchor_ratio,
                                           max_per_class=self.max_anchors_per_class, ignore_index=self.ignore_index,
                                           generator=generator)
        queue = classes * self.num_parts + part_map.reshape(-1)[flat_idx]
        pos = self.bank.sample_positive_idx(queue, generator=generator)
        neg = self.bank.sample_negative_idx(queue, self.num_negatives, exclude=self.negatives, generator=generator)
        keep = (pos >= 0) & (neg[:, 0] >= 0)
        flat_idx, classes, pos, neg = flat_idx[keep], classes[keep], pos[keep], neg[keep]
        anchors = gather_pixels(embed, flat_idx)
        per_anchor, pos_cos, neg_cos = part_infonce_from_bank(anchors, self.bank.flat_entries(), pos, neg,
                                                              self.temperature, chunk_size=self.chunk_size,
                                                              return_cos=True)
        loss = class_mean_loss(per_anchor, classes, self.num_classes, reduction=self.reduction)
        num = torch.tensor(float(flat_idx.numel()), device=embed.device)
        stats = dict(
            anchors=num,
            bank_fill=self.bank.fill_fraction().detach().to(embed.device),
            pos_cos=pos_cos.sum() / num.clamp_min(1),
            neg_cos=neg_cos.sum() / num.clamp_min(1))
        return self.loss_weight * loss, stats

    # -------------------------------------------------------------------------------------- Eq. 8 and 12
    @torch.no_grad()
    def update(self, teacher_embed: Tensor, enc_feats: Tensor, class_map: Tensor, part_map: Tensor,
               *, align_corners: bool = False) -> Dict[str, Tensor]:
        """After the loss: teacher part means into the bank (Eq. 8) and the prototype momentum update (Eq. 12).

        A collective under DDP (every rank must call it every iteration, with its own batch): the bank gathers
        the means of all ranks (see :meth:`PartMemoryBank.enqueue`); Eq. 12 all-reduces the pixel-weighted sums
        and counts before dividing, so ``P'`` is the MAP over the global batch and ``P`` stays identical on all
        ranks. Only the parts present in the global batch move.

        Args:
            teacher_embed: ``z^t`` of the weak views (N, L, H, W) at the loss resolution.
            enc_feats: ``E^t`` of the same views (N, L', h, w) at its own resolution; pooled as if bilinearly
                resized to (H, W) by :func:`upsampled_masked_average_pool`, never resized.
            class_map: (N, H, W) long classes (``ignore_index`` for pixels that are excluded).
            part_map: (N, H, W) long parts from :meth:`assign`.
            align_corners: Of the emulated resize of ``E^t``.

        Returns:
            Logging scalars: ``parts_enqueued`` (part means pushed by this rank) and ``prototypes_moved``
            (number of (c, k) updated by Eq. 12).
        """
        self._check_ready()
        means, counts = masked_average_pool(teacher_embed, class_map, part_map, self.num_classes, self.num_parts,
                                            ignore_index=self.ignore_index)
        self.bank.enqueue(means, counts)

        # Normalised (Eq. 12 averages unit E^t pixels) inside the pool, one chunk of images at a time: never an
        # fp32 or normalised copy of the whole batch's E^t.
        feat_means, feat_counts = upsampled_masked_average_pool(
            enc_feats, class_map, part_map, self.num_classes, self.num_parts, align_corners=align_corners,
            ignore_index=self.ignore_index, normalize=self.normalize_prototype_feats)
        batch_means, batch_counts = batch_part_means(feat_means, feat_counts, all_reduce=all_reduce)
        momentum_update_prototypes_(self.prototypes, batch_means, batch_counts, self.prototype_momentum)
        return dict(parts_enqueued=(counts > 0).sum().float(), prototypes_moved=(batch_counts > 0).sum().float())
