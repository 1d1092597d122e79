"""ESLSegmentor: the semi-supervised wrapper of ESL (paper §3.1, §3.2, §3.4) around any mmseg segmentor.

One training step (:meth:`ESLSegmentor.loss`, one named method per line), for a batch laid out by
``SemiSupervisedSampler`` as ``[labeled | unlabeled | CutMix partners]``::

    teacher_weak_pass     p_t, E_t, z_t = teacher(x_l ∪ x_u ∪ x_partner)   no gradient, fp32      (Eq. 1)
    cutmix_unlabeled      x_mix = CutMix(x_u, x_partner); p_mix, valid_mix with the same boxes       (§4.1)
    student_pass          logits, z_s = student(x_l ∪ x_mix)              one forward, BN sees both
    loss_sup              L_CE   = the student's decode-head (+ auxiliary) losses on x_l             (Eq. 2)
    loss_unsup            λ1·L_SCE = λ1 · soft-CE(logits_mix, DSL(p_mix)) over valid pixels     (Eq. 3-6)
    contrast_targets      k* = parts of the weak views from E_t; anchors: labels, conf > ζ      (Eq. 7, 9)
    loss_contrast         λ2·L_CTR = λ2 · InfoNCE(z_s anchors, bank)                           (Eq. 9-10)
    (mmengine's sum)      L = L_CE + λ1·L_SCE + λ2·L_CTR                                            (Eq. 11)
    update_bank_and_prototypes   bank ← MAP(z_t); P ← θ·P + (1-θ)·MAP(E_t), after the loss       (Eq. 8, 12)

The values passed between the steps are the typed containers of :mod:`.step_data`; each step is labelled
``esl.<step>`` for ``torch.profiler`` (and mmengine's ``ProfilerHook``).

Beside this file: :mod:`.semi_train_config` (``semi_train_cfg`` defaults and checks, the contrastive term it
builds), :mod:`.batch_layout` (batch roles, partners, valid pixels, pool CutMix), :mod:`.non_finite_loss` (the
NaN/Inf stop of :meth:`ESLSegmentor.parse_losses`), and the mixins :mod:`.inference` (prediction on
``predict_on``) and :mod:`.teacher_queries` (what hooks and tools ask of the teacher).

All contrastive maps (classes, parts, confidences, anchors) live at the projector's stride τ
(``loss_contrast.stride``, 4): the labels are nearest-downsampled, the CutMix boxes resized with
``resize_mask``, the teacher's class and confidence maps nearest-downsampled from full resolution, and
``E_t`` (stride 8/16) is never upsampled (Eq. 7 upsamples its C·K cosine map, Eq. 12 pools it with the
transposed interpolation weights). ``semi_train_cfg.loss_contrast.num_parts = 0`` removes the term (Tab. 4,
K = 0): no projector is built and the teacher skips the labeled images.

The teacher has the same architecture as the student, no gradients, no optimizer state (see
``StudentOptimWrapperConstructor``), and stays in ``eval()`` even though mmengine's loop calls
``model.train()`` every iteration; ``EMATeacherHook`` updates it after each optimizer step.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager, nullcontext
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmseg.models.segmentors import BaseSegmentor
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import OptConfigType, SampleList, add_prefix
from torch import Tensor
from torch.profiler import record_function

from ..decode_heads.projector_head import DecodeFeatureTap
from ..utils.batch_norm import batch_norm_modes_of
from ..utils.cutmix import cutmix_masks, resize_mask, sample_cutmix_boxes
from ..utils.pseudo_label_stats import pseudo_label_stats as _pseudo_label_stats
from . import batch_layout
from .inference import InferenceMixin, parse_semi_test_cfg
from .non_finite_loss import NonFiniteLossError, non_finite_loss_message
from .semi_train_config import build_contrast, check_num_classes, merge_semi_train_cfg
from .step_data import ContrastTargets, MixedBatch, SemiBatch, StudentOutput, TeacherOutput
from .teacher_queries import TeacherQueriesMixin


@MODELS.register_module()
class ESLSegmentor(TeacherQueriesMixin, InferenceMixin, BaseSegmentor):
    """Enhanced Soft Label: a teacher/student wrapper around any mmseg segmentor config.

    Args:
        segmentor: Config of the wrapped mmseg segmentor (e.g. ``EncoderDecoder``); student and teacher are
            both built from it. Its ``data_preprocessor`` moves to the wrapper.
        semi_train_cfg: Overrides of :data:`.semi_train_config.DEFAULT_SEMI_TRAIN_CFG`: ``loss_unsup`` (config of
            the unlabeled loss, default ``DSLLoss``), ``cutmix`` (``prob``, ``area_range``, ``ratio_range``,
            ``partner``) and ``loss_contrast`` (``PixelPartContrastLoss`` arguments, merged key by key; needs
            ``feat_channels``; ``num_parts=0`` or ``None`` disables the contrastive term).
        projector: Config of the projector head P built into student and teacher (as ``.projector``) when the
            contrastive term is on; default :data:`.semi_train_config.DEFAULT_PROJECTOR`. Missing ``in_channels``
            is the decode head's classifier input channels, missing ``norm_cfg`` the decode head's ``norm_cfg``.
        semi_test_cfg: ``predict_on``: ``'teacher'`` (default, the EMA model) or ``'student'``, the model that
            ``predict`` (``tools/test.py``, inference) uses; ``val_both`` (default True): every validation during
            training predicts with both models, for ``SemiIoUMetric``'s ``teacher/*`` and ``student/*`` keys.
        data_preprocessor: Overrides the wrapped segmentor's data preprocessor.
        train_cfg: If not None, replaces the wrapped segmentor's ``train_cfg`` (mmseg tools set it).
        test_cfg: If not None, replaces the wrapped segmentor's ``test_cfg``.
        pretrained: If not None, replaces the wrapped segmentor's ``pretrained``.
        init_cfg: Initialisation config of the wrapper.

    Switches set by ``EMATeacherHook`` before each iteration (public, plain attributes):

    * ``semi_supervised`` (default True): False trains the supervised term only (no teacher pass, no unlabeled
      or contrastive loss): the supervised-only phase.
    * ``teacher_own_bn_stats`` (default False): True runs the teacher's weak pass with its BN layers in the
      student's modes, so the teacher normalises with, and keeps running statistics of, its own batches.

    Prediction (:class:`.inference.InferenceMixin`) and the teacher queries of hooks and tools
    (:class:`.teacher_queries.TeacherQueriesMixin`) come from the mixins.
    """

    def __init__(self, *, segmentor: dict, semi_train_cfg: Optional[dict] = None,
                 semi_test_cfg: Optional[dict] = None, projector: Optional[dict] = None,
                 data_preprocessor: OptConfigType = None,
                 train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None, init_cfg: OptConfigType = None) -> None:
        segmentor = ConfigDict(copy.deepcopy(segmentor))
        inner_preprocessor = segmentor.pop('data_preprocessor', None)
        for key, value in (('train_cfg', train_cfg), ('test_cfg', test_cfg), ('pretrained', pretrained)):
            if value is not None:
                segmentor[key] = value
        super().__init__(data_preprocessor=data_preprocessor or inner_preprocessor, init_cfg=init_cfg)
        self.semi_train_cfg = merge_semi_train_cfg(semi_train_cfg)
        self.student = MODELS.build(segmentor)
        check_num_classes(self.student, self.semi_train_cfg.loss_contrast)
        self.contrast_loss = build_contrast(self.student, self.semi_train_cfg.loss_contrast, projector)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        # Taps on each decode head's classifier input (before dropout) feed the projectors; created after
        # the deepcopy so that each model feeds its own tap. They capture only inside loss().
        self._taps: Dict[str, DecodeFeatureTap] = {}
        if self.contrast_loss is not None:
            for name in ('student', 'teacher'):
                self._taps[name] = DecodeFeatureTap(getattr(self, name).decode_head)
                self._taps[name].enabled = False

        self.unsup_loss = MODELS.build(self.semi_train_cfg.loss_unsup)
        self.predict_on, self.val_both = parse_semi_test_cfg(semi_test_cfg)
        self.semi_supervised = True
        self.teacher_own_bn_stats = False

    # ----------------------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> ESLSegmentor:
        """Sets the student's mode; the teacher always stays in eval mode (BN statistics, dropout)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def init_weights(self) -> None:
        """Initialises the student (e.g. ImageNet backbone) and starts the teacher as an exact copy."""
        super().init_weights()
        self.teacher.load_state_dict(self.student.state_dict())

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Loads a plain mmseg checkpoint (no ``student.``/``teacher.`` keys) into both student and teacher."""
        own = [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + 'data_preprocessor.')]
        if own and not any(k.startswith((prefix + 'student.', prefix + 'teacher.')) for k in own):
            for key in own:
                value = state_dict.pop(key)
                rest = key[len(prefix):]
                state_dict[f'{prefix}student.{rest}'] = value
                state_dict[f'{prefix}teacher.{rest}'] = value
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def parse_losses(self, losses: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """mmengine's ``parse_losses``, then a stop on a NaN/Inf loss before the optimizer step can use it.

        Checks every logged loss term (keys containing ``'loss'``, and the total) with one host-device
        synchronisation per iteration (:func:`.non_finite_loss.non_finite_loss_message`).

        Args:
            losses: The losses dict of :meth:`loss`.

        Returns:
            ``(total_loss, log_vars)`` as ``BaseModel.parse_losses``.

        Raises:
            NonFiniteLossError: Naming the non-finite terms (e.g. ``unsup.loss_dsl``) and the iteration.
        """
        loss, log_vars = super().parse_losses(losses)
        message = non_finite_loss_message(log_vars)
        if message is not None:
            raise NonFiniteLossError(message)
        return loss, log_vars

    # ----------------------------------------------------------------------------------------------------
    def split_batch(self, data_samples: SampleList) -> Tuple[List[int], List[int], List[int]]:
        """``(labeled, unlabeled, partners)`` positions of the batch for ``semi_train_cfg.cutmix.partner``
        (:func:`.batch_layout.split_batch`)."""
        return batch_layout.split_batch(data_samples, partner=self.semi_train_cfg.cutmix.partner)

    def contrast_size(self, height: int, width: int) -> Tuple[int, int]:
        """Resolution ``(ceil(H / τ), ceil(W / τ))`` of the contrastive maps (``loss_contrast.stride`` = τ)."""
        stride = self.contrast_loss.stride
        return math.ceil(height / stride), math.ceil(width / stride)

    def _embed(self, model: BaseSegmentor, size: Tuple[int, int]) -> Tensor:
        """``z`` of ``model``'s projector from the features its decode head just fed ``cls_seg``, at ``size``."""
        name = 'student' if model is self.student else 'teacher'
        z = model.projector(self._taps[name].pop())
        if tuple(z.shape[2:]) != tuple(size):
            z = resize(z, size=size, mode='bilinear', align_corners=model.align_corners)
        return z

    def semi_batch(self, inputs: Tensor, data_samples: SampleList) -> SemiBatch:
        """The batch split by role (:meth:`split_batch`): labeled images, and the weak pool of unlabeled + partners."""
        labeled, unlabeled, partners = self.split_batch(data_samples)
        pool = unlabeled + partners
        return SemiBatch(labeled=inputs[labeled], labeled_samples=[data_samples[i] for i in labeled],
                         pool=inputs[pool], pool_samples=[data_samples[i] for i in pool],
                         num_unlabeled=len(unlabeled))

    def loss(self, inputs: Tensor, data_samples: SampleList) -> Dict[str, Tensor]:
        """Eq. 11, ``L = L_CE + λ1·L_SCE + λ2·L_CTR``: mmengine sums every ``loss*`` key of the result.

        λ1 is ``semi_train_cfg.loss_unsup.loss_weight`` and λ2 ``semi_train_cfg.loss_contrast.loss_weight``; each
        loss module applies its own, so ``unsup.loss_*`` is λ1·L_SCE and ``contrast.loss_ctr`` is λ2·L_CTR.

        Args:
            inputs: Batch ``(B, 3, H, W)`` laid out as ``[labeled | unlabeled | partners]``.
            data_samples: Matching samples (``gt_sem_seg`` on labeled ones; ``is_labeled`` on all).

        Returns:
            mmseg's supervised loss keys (``decode.loss_ce``, ``decode.acc_seg``, ``aux.*``),
            ``unsup.<loss_name>`` plus logged statistics (``unsup.dominant_classes``, ``unsup.multi_dominant``,
            ``unsup.teacher_conf`` and, when unlabeled ground truth exists, ``unsup.pseudo_acc``,
            ``unsup.pseudo_acc_multi``, ``unsup.gt_mass_multi``, ``unsup.teacher_conf_multi``) and, with the
            contrastive term, ``contrast.<loss_name>`` (``loss_ctr``), ``contrast.anchors``,
            ``contrast.bank_fill``, ``contrast.pos_cos`` and ``contrast.neg_cos``.
        """
        batch = self.semi_batch(inputs, data_samples)
        with self._decode_feature_taps():
            if not self.semi_supervised:  # EMATeacherHook's supervised-only phase
                return self._supervised_only_loss(batch)
            teacher = self.teacher_weak_pass(batch)                       # p^t (Eq. 1); E^t, z^t for Eq. 7-8
            mixed = self.cutmix_unlabeled(batch, teacher)                 # the strong views (§4.1)
            student = self.student_pass(batch.labeled, mixed.images)      # one forward, BN sees both
            losses = self.loss_sup(student, batch.labeled_samples)        # L_CE (Eq. 2)
            losses.update(self.loss_unsup(student, mixed))                # λ1·L_SCE (Eq. 3-6)
            if self.contrast_loss is not None:
                targets = self.contrast_targets(batch, teacher, mixed)    # parts (Eq. 7), anchor rule (Eq. 9)
                losses.update(self.loss_contrast(targets))                # λ2·L_CTR (Eq. 9-10)
                self.update_bank_and_prototypes(teacher, targets)         # Eq. 8 and 12, after the loss
        return losses

    @contextmanager
    def _decode_feature_taps(self) -> Iterator[None]:
        """The decode heads' classifier inputs are captured (for the projectors) only inside :meth:`loss`."""
        for tap in self._taps.values():
            tap.enabled = True
        try:
            yield
        finally:
            for tap in self._taps.values():
                tap.enabled = False
                tap.features = None

    @record_function('esl.teacher_weak_pass')
    def teacher_weak_pass(self, batch: SemiBatch) -> TeacherOutput:
        """The teacher on the weak views, no gradient: ``p^t`` of the pool (Eq. 1) and, with the contrastive term,
        ``E^t`` and ``z^t`` of ``[labeled | pool]`` (Eq. 7-8). With ``teacher_own_bn_stats`` its BN layers
        normalise with, and keep running statistics of, this batch."""
        contrast = self.contrast_loss is not None
        own_bn = batch_norm_modes_of(self.teacher, self.student) if self.teacher_own_bn_stats else nullcontext()
        with torch.no_grad(), own_bn:
            inputs = torch.cat([batch.labeled, batch.pool]) if contrast else batch.pool
            feats = self.teacher.extract_feat(inputs)
            logits = self.teacher.decode_head.forward(feats)
            enc = embed = None
            if contrast:
                embed = self._embed(self.teacher, self.contrast_size(*batch.size))
                enc = feats[self.contrast_loss.in_index]
                logits = logits[len(batch.labeled):]
            probs = self._upsampled_probs(logits, batch.size)
        valid = batch_layout.valid_pixel_masks(batch.pool_samples, *batch.size, batch.pool.device)
        return TeacherOutput(probs=probs, valid=valid, enc=enc, embed=embed)

    @record_function('esl.cutmix_unlabeled')
    def cutmix_unlabeled(self, batch: SemiBatch, teacher: TeacherOutput) -> MixedBatch:
        """CutMix each unlabeled weak view with its partner (§4.1), and its ``p^t``, valid pixels and ground truth
        with the same box."""
        cfg = self.semi_train_cfg.cutmix
        device = batch.pool.device
        partner = batch_layout.partner_index(batch.num_unlabeled, len(batch.pool) - batch.num_unlabeled, device)
        boxes, apply = sample_cutmix_boxes(batch.num_unlabeled, *batch.size, area_range=cfg.area_range,
                                           ratio_range=cfg.ratio_range, prob=cfg.prob, device=device)
        mask = cutmix_masks(boxes, apply, *batch.size)
        gt = batch_layout.unlabeled_gt(batch.pool_samples, device)
        mixed = batch_layout.mix_pool([batch.pool, teacher.probs, teacher.valid] + gt, partner, mask)
        return MixedBatch(images=mixed[0], probs=mixed[1], valid=mixed[2], gt=mixed[3] if gt else None,
                          partner=partner, mask=mask)

    @record_function('esl.student_pass')
    def student_pass(self, labeled: Tensor, mixed: Tensor) -> StudentOutput:
        """The student's one forward over ``[labeled | mixed]`` (its BN normalises both together)."""
        feats = self.student.extract_feat(torch.cat([labeled, mixed]))
        return StudentOutput(feats=feats, logits=self.student.decode_head.forward(feats), num_labeled=len(labeled))

    @record_function('esl.loss_sup')
    def loss_sup(self, student: StudentOutput, labeled_samples: SampleList) -> Dict[str, Tensor]:
        """L_CE (Eq. 2): the student's decode-head (+ auxiliary) losses on the labeled images."""
        num_labeled = student.num_labeled
        losses = add_prefix(self.student.decode_head.loss_by_feat(student.logits[:num_labeled], labeled_samples),
                            'decode')
        if self.student.with_auxiliary_head:
            losses.update(self.student._auxiliary_head_forward_train(
                [f[:num_labeled] for f in student.feats], labeled_samples))
        return losses

    @record_function('esl.loss_unsup')
    def loss_unsup(self, student: StudentOutput, mixed: MixedBatch) -> Dict[str, Tensor]:
        """λ1·L_SCE (Eq. 3-6): soft cross-entropy of the student on the mixed images against ``DSL(p^t)``, over
        valid pixels, and the pseudo-label statistics; keys prefixed ``unsup.``."""
        logits = resize(student.logits[student.num_labeled:], size=mixed.images.shape[2:], mode='bilinear',
                        align_corners=self.student.align_corners)
        pseudo = self.unsup_loss.pseudo_label(mixed.probs)
        unsup = {self.unsup_loss.loss_name: self.unsup_loss(logits, mixed.probs, mixed.valid, pseudo_label=pseudo)}
        unsup.update(self.pseudo_label_stats(mixed.probs, pseudo, mixed.valid, mixed.gt))
        return add_prefix(unsup, 'unsup')

    def _supervised_only_loss(self, batch: SemiBatch) -> Dict[str, Tensor]:
        """The supervised-only phase: L_CE on the labeled images; the unlabeled ones are not used.

        With the contrastive term the projector still runs, in a loss of exactly 0 (U2PL's ``0 * rep.sum()``),
        so that DDP sees a gradient for every parameter. Like U2PL, only the labeled images are forwarded: with one
        labeled image per process, a BatchNorm after global pooling (ASPP's image pool) has nothing to normalise,
        which is turned into an error that says what to change.
        """
        inputs = batch.labeled
        try:
            feats = self.student.extract_feat(inputs)
            logits = self.student.decode_head.forward(feats)
        except ValueError as error:
            if 'Expected more than 1 value per channel' not in str(error):
                raise
            raise ValueError(
                f'The supervised-only phase (EMATeacherHook.sup_only_iters) forwards the {len(inputs)} labeled '
                'image(s) of this process alone, and a BatchNorm layer got one value per channel. Use >= 2 labeled '
                'images per process (train_dataloader.sampler.num_labeled and batch_size), SyncBN over several '
                'processes (the paper configs on GPUs), or EMATeacherHook(sup_only_iters=0).') from error
        losses = self.loss_sup(StudentOutput(feats, logits, len(inputs)), batch.labeled_samples)
        if self.contrast_loss is not None:
            z_s = self._embed(self.student, self.contrast_size(*inputs.shape[2:]))
            losses[f'contrast.{self.contrast_loss.loss_name}'] = z_s.sum() * 0.0
        return losses

    @record_function('esl.contrast_targets')
    @torch.no_grad()
    def contrast_targets(self, batch: SemiBatch, teacher: TeacherOutput, mixed: MixedBatch) -> ContrastTargets:
        """Classes, parts (Eq. 7) and the anchor rule (Eq. 9) at the contrastive resolution ``(h, w)``.

        Weak views ``[labeled | pool]``: the labels, else the teacher's arg-max (ignore outside the image); parts
        from ``E^t`` and the prototypes. Student views ``[labeled | mixed]``: the pool's classes, confidences and
        parts CutMix'd with the same boxes; anchors are labeled pixels, and unlabeled pixels whose teacher
        confidence exceeds ζ (``loss_contrast.conf_thresh``). The bank (Eq. 8) and the prototypes (Eq. 12) take
        labeled pixels and unlabeled pixels with confidence > σ (``loss_contrast.unlabeled_part_thresh``).
        """
        loss_fn = self.contrast_loss
        ignore = loss_fn.ignore_index
        small = self.contrast_size(*batch.size)
        num_labeled = len(batch.labeled)

        def down(label_map: Tensor) -> Tensor:  # nearest, as mmseg resizes labels
            return F.interpolate(label_map[:, None].float(), size=small, mode='nearest')[:, 0]

        gt = torch.stack([ds.gt_sem_seg.data[0] for ds in batch.labeled_samples]).to(batch.labeled.device)
        gt_small = down(gt).long()
        conf, cls = teacher.probs.max(dim=1)
        cls = torch.where(teacher.valid, cls, ignore)
        conf_small, cls_small = down(conf), down(cls).long()
        class_map = torch.cat([gt_small, cls_small])  # weak views: labels | teacher arg-max
        parts = loss_fn.assign(teacher.enc, class_map, align_corners=self.teacher.align_corners)  # Eq. 7

        cls_mix, conf_mix, part_mix = batch_layout.mix_pool([cls_small, conf_small, parts[num_labeled:]],
                                                            mixed.partner, resize_mask(mixed.mask, small))
        anchor_mask = torch.cat([gt_small != ignore, (cls_mix != ignore) & (conf_mix > loss_fn.conf_thresh)])

        bank_classes = class_map.clone()
        bank_classes[num_labeled:][conf_small <= loss_fn.unlabeled_part_thresh] = ignore
        return ContrastTargets(anchor_classes=torch.cat([gt_small, cls_mix]),
                               anchor_parts=torch.cat([parts[:num_labeled], part_mix]),
                               anchor_mask=anchor_mask, bank_classes=bank_classes,
                               bank_parts=torch.where(bank_classes == ignore, -1, parts))

    @record_function('esl.loss_contrast')
    def loss_contrast(self, targets: ContrastTargets) -> Dict[str, Tensor]:
        """λ2·L_CTR (Eq. 9-10): the student's ``z`` of ``[labeled | mixed]`` (from the decode features of
        :meth:`student_pass`) against the bank; keys prefixed ``contrast.``."""
        z_s = self._embed(self.student, targets.size)
        loss, stats = self.contrast_loss(z_s, targets.anchor_classes, targets.anchor_parts, targets.anchor_mask)
        return add_prefix({self.contrast_loss.loss_name: loss, **stats}, 'contrast')

    @record_function('esl.update_bank_and_prototypes')
    @torch.no_grad()
    def update_bank_and_prototypes(self, teacher: TeacherOutput, targets: ContrastTargets) -> None:
        """After the loss (MoCo order): ``z^t`` of the weak views into the bank (Eq. 8), and the prototypes
        ``P ← θ·P + (1-θ)·MAP(E^t)`` (Eq. 12)."""
        self.contrast_loss.update(teacher.embed, teacher.enc, targets.bank_classes, targets.bank_parts,
                                  align_corners=self.teacher.align_corners)

    def pseudo_label_stats(self, probs: Tensor, pseudo: Tensor, valid: Tensor,
                           gt: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """The ``unsup.*`` statistics of the pseudo labels (:func:`~mmseg_esl.models.utils.pseudo_label_stats`)."""
        return _pseudo_label_stats(probs, pseudo, valid, gt)
