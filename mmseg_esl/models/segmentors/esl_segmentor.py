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
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.logging import MessageHub
from mmseg.models.segmentors import BaseSegmentor
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import OptConfigType, OptSampleList, SampleList, add_prefix
from torch import Tensor
from torch.profiler import record_function

from ..decode_heads.projector_head import DecodeFeatureTap
from ..utils.batch_norm import batch_norm_modes_of
from ..utils.cutmix import cutmix, cutmix_masks, derangement, resize_mask, sample_cutmix_boxes
from .step_data import ContrastTargets, MixedBatch, SemiBatch, StudentOutput, TeacherOutput

#: Defaults of ``semi_train_cfg``; every key can be overridden in the config.
DEFAULT_SEMI_TRAIN_CFG = dict(
    # Eq. 3-6 with the paper's η = 0.95 and λ1 = 0.2. mode='hard' gives Tab. 2's hard-label baseline.
    loss_unsup=dict(type='DSLLoss', mode='dsl', eta=0.95, loss_weight=0.2),
    # The strong view is CutMix only, applied every iteration (prob 1.0; U2PL uses 0.5). Boxes as UniMatch.
    # partner='extra': partners are the extra images SemiSupervisedSampler adds (works with 1 unlabeled
    # image per GPU); 'batch': a random derangement of the unlabeled images of the batch (needs >= 2).
    cutmix=dict(prob=1.0, area_range=(0.02, 0.4), ratio_range=(0.3, 1 / 0.3), partner='extra'),
    # Pixel-to-part contrast (Eq. 7-10, 12) with the paper's K = 5, λ2 = 0.1 and the other defaults of
    # PixelPartContrastLoss. feat_channels (channels of E^t) must be set; num_classes and embed_channels are
    # filled from the model. num_parts=0 (or loss_contrast=None) disables the term.
    loss_contrast=dict(type='PixelPartContrastLoss', num_parts=5, loss_weight=0.1),
)


class NonFiniteLossError(FloatingPointError):
    """A loss term is NaN or infinite; raised by :meth:`ESLSegmentor.parse_losses` before the optimizer step."""


#: Default projector (U2PL's representation head); ``in_channels`` and ``norm_cfg`` come from the decode head.
DEFAULT_PROJECTOR = dict(type='ProjectorHead', channels=256, out_channels=512)


def merge_semi_train_cfg(cfg: Optional[dict]) -> ConfigDict:
    """Fills ``semi_train_cfg`` with :data:`DEFAULT_SEMI_TRAIN_CFG` (nested dicts merged key by key)."""
    merged = ConfigDict(copy.deepcopy(DEFAULT_SEMI_TRAIN_CFG))
    for key, value in (cfg or {}).items():
        if key not in merged:
            raise KeyError(f'Unknown semi_train_cfg key {key!r}; known keys: {sorted(merged)}.')
        if key == 'cutmix':
            merged.cutmix.update(value)
        elif key == 'loss_contrast' and value is not None and value.get('type', merged[key].type) == merged[key].type:
            merged.loss_contrast.update(value)
        else:
            merged[key] = value
    if merged.cutmix.partner not in ('extra', 'batch'):
        raise ValueError(f"semi_train_cfg.cutmix.partner must be 'extra' or 'batch', got {merged.cutmix.partner!r}.")
    return merged


def valid_pixel_masks(data_samples: SampleList, height: int, width: int, device: torch.device) -> Tensor:
    """Pixels that hold image content, not padding added by the data preprocessor.

    mmseg's ``stack_batch`` pads at the bottom and right and records each image's size in ``img_shape``.

    Args:
        data_samples: Samples of the batch (after the data preprocessor).
        height: Padded batch height H.
        width: Padded batch width W.
        device: Device of the result.

    Returns:
        Bool tensor ``(N, H, W)``.
    """
    sizes = torch.tensor([ds.img_shape[:2] for ds in data_samples], device=device)
    rows = torch.arange(height, device=device)[None, :, None] < sizes[:, 0, None, None]
    cols = torch.arange(width, device=device)[None, None, :] < sizes[:, 1, None, None]
    return rows & cols


@MODELS.register_module()
class ESLSegmentor(BaseSegmentor):
    """Enhanced Soft Label: a teacher/student wrapper around any mmseg segmentor config.

    Args:
        segmentor: Config of the wrapped mmseg segmentor (e.g. ``EncoderDecoder``); student and teacher are
            both built from it. Its ``data_preprocessor`` moves to the wrapper.
        semi_train_cfg: Overrides of :data:`DEFAULT_SEMI_TRAIN_CFG`: ``loss_unsup`` (config of the
            unlabeled loss, default ``DSLLoss``), ``cutmix`` (``prob``, ``area_range``, ``ratio_range``,
            ``partner``) and ``loss_contrast`` (``PixelPartContrastLoss`` arguments, merged key by key; needs
            ``feat_channels``; ``num_parts=0`` or ``None`` disables the contrastive term).
        projector: Config of the projector head P built into student and teacher (as ``.projector``) when the
            contrastive term is on; default :data:`DEFAULT_PROJECTOR`. Missing ``in_channels`` is the decode
            head's classifier input channels, missing ``norm_cfg`` the decode head's ``norm_cfg``.
        semi_test_cfg: ``predict_on``: ``'teacher'`` (default, the EMA model) or ``'student'``, the model that
            ``predict`` (``tools/test.py``, inference) uses; ``val_both`` (default True): every validation during
            training predicts with both models, for ``SemiIoUMetric``'s ``teacher/*`` and ``student/*`` keys.

    Switches set by ``EMATeacherHook`` before each iteration (public, plain attributes):

    * ``semi_supervised`` (default True): False trains the supervised term only (no teacher pass, no unlabeled
      or contrastive loss): the supervised-only phase.
    * ``teacher_own_bn_stats`` (default False): True runs the teacher's weak pass with its BN layers in the
      student's modes, so the teacher normalises with, and keeps running statistics of, its own batches.
        data_preprocessor: Overrides the wrapped segmentor's data preprocessor.
        train_cfg: If not None, replaces the wrapped segmentor's ``train_cfg`` (mmseg tools set it).
        test_cfg: If not None, replaces the wrapped segmentor's ``test_cfg``.
        pretrained: If not None, replaces the wrapped segmentor's ``pretrained``.
        init_cfg: Initialisation config of the wrapper.
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
        self._check_num_classes(self.semi_train_cfg.loss_contrast)
        self.contrast_loss = self._build_contrast(self.semi_train_cfg.loss_contrast, projector)
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
        semi_test_cfg = dict(semi_test_cfg or {})
        self.predict_on = semi_test_cfg.pop('predict_on', 'teacher')
        if self.predict_on not in ('teacher', 'student'):
            raise ValueError(f"semi_test_cfg.predict_on must be 'teacher' or 'student', got {self.predict_on!r}.")
        self.val_both = semi_test_cfg.pop('val_both', True)
        if not isinstance(self.val_both, bool):
            raise ValueError(f'semi_test_cfg.val_both must be True or False, got {self.val_both!r}.')
        if semi_test_cfg:
            raise KeyError(f'Unknown semi_test_cfg key(s) {sorted(semi_test_cfg)}; known: predict_on, val_both.')
        self.semi_supervised = True
        self.teacher_own_bn_stats = False

    def _check_num_classes(self, loss_cfg: Optional[dict]) -> None:
        """Decode head, auxiliary heads and an explicit ``loss_contrast.num_classes`` must agree on C.

        Raises:
            ValueError: Naming every config key and its value.
        """
        found = {'segmentor.decode_head.num_classes': self.student.num_classes}  # the last head of a cascade
        aux = getattr(self.student, 'auxiliary_head', None)
        if isinstance(aux, torch.nn.ModuleList):
            found.update({f'segmentor.auxiliary_head.{i}.num_classes': head.num_classes for i, head in enumerate(aux)})
        elif aux is not None:
            found['segmentor.auxiliary_head.num_classes'] = aux.num_classes
        if loss_cfg is not None and loss_cfg.get('num_parts', 5) != 0 and loss_cfg.get('num_classes') is not None:
            found['semi_train_cfg.loss_contrast.num_classes'] = loss_cfg.num_classes
        if len(set(found.values())) > 1:
            listed = ', '.join(f'model.{key}={value}' for key, value in found.items())
            raise ValueError(
                f'ESLSegmentor: the number of classes C differs between {listed}. Set them all to the number of '
                "classes of the dataset (len(metainfo['classes'])); semi_train_cfg.loss_contrast.num_classes can "
                "be left out: it is then the decode head's.")

    def _build_contrast(self, loss_cfg: Optional[dict], projector: Optional[dict]) -> Optional[torch.nn.Module]:
        """Builds the contrastive loss and the student's projector, or nothing when K = 0 / ``None``."""
        if loss_cfg is None or loss_cfg.get('num_parts', 5) == 0:
            return None
        loss_cfg = ConfigDict(copy.deepcopy(loss_cfg))
        if loss_cfg.get('feat_channels') is None:
            raise ValueError(
                'semi_train_cfg.loss_contrast.feat_channels is required: the channels of the encoder output E^t '
                '(teacher.extract_feat(x)[in_index], default the last backbone stage), e.g. 2048 for ResNet-50/101, '
                '512 for ResNet-18/34. Or set semi_train_cfg.loss_contrast.num_parts=0 to train without the '
                'pixel-to-part contrastive term.')
        head = self.student.decode_head
        conv_seg = getattr(head, 'conv_seg', None)
        proj_cfg = ConfigDict(copy.deepcopy(projector or DEFAULT_PROJECTOR))
        if proj_cfg.get('in_channels') is None:
            if not isinstance(conv_seg, torch.nn.Conv2d):
                raise ValueError(f'Cannot infer projector.in_channels from {type(head).__name__}, which has no '
                                 'conv_seg; set projector.in_channels.')
            proj_cfg.in_channels = conv_seg.in_channels
        if 'norm_cfg' not in proj_cfg and getattr(head, 'norm_cfg', None) is not None:
            proj_cfg.norm_cfg = copy.deepcopy(head.norm_cfg)
        self.student.projector = MODELS.build(proj_cfg)
        loss_cfg.setdefault('num_classes', self.student.num_classes)
        loss_cfg.setdefault('embed_channels', self.student.projector.out_channels)
        loss_cfg.setdefault('ignore_index', getattr(head, 'ignore_index', 255))
        return MODELS.build(loss_cfg)

    # ----------------------------------------------------------------------------------------------------
    # What mmseg's predict/TTA/benchmark read: delegated to the model that predicts.
    @property
    def inference_model(self) -> BaseSegmentor:
        """The wrapped segmentor used by ``predict``/``_forward`` (``semi_test_cfg.predict_on``)."""
        return getattr(self, self.predict_on)

    @property
    def decode_head(self):
        return self.inference_model.decode_head

    @property
    def align_corners(self) -> bool:
        return self.inference_model.align_corners

    @property
    def num_classes(self) -> int:
        return self.inference_model.num_classes

    @property
    def out_channels(self) -> int:
        return self.inference_model.out_channels

    def extract_feat(self, inputs: Tensor) -> List[Tensor]:
        return self.inference_model.extract_feat(inputs)

    def encode_decode(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        return self.inference_model.encode_decode(inputs, batch_img_metas)

    def predict(self, inputs: Tensor, data_samples: OptSampleList = None) -> SampleList:
        return self.inference_model.predict(inputs, data_samples)

    def _forward(self, inputs: Tensor, data_samples: OptSampleList = None) -> Tensor:
        return self.inference_model._forward(inputs, data_samples)

    def val_step(self, data) -> SampleList:
        """``predict`` with ``predict_on``; with ``val_both`` also ``teacher_pred_sem_seg``/``student_pred_sem_seg``.

        Only validation during training (mmengine's ``ValLoop``) calls ``val_step``; ``tools/test.py`` and
        benchmarks call ``test_step``, which runs the ``predict_on`` model alone.
        """
        data = self.data_preprocessor(data, False)
        if not self.val_both:
            return self._run_forward(data, mode='predict')
        other = 'student' if self.predict_on == 'teacher' else 'teacher'
        other_samples = copy.deepcopy(data['data_samples'])
        samples = self._run_forward(data, mode='predict')
        others = getattr(self, other).predict(data['inputs'], other_samples)
        for sample, other_sample in zip(samples, others):
            sample.set_field(sample.pred_sem_seg, f'{self.predict_on}_pred_sem_seg')
            sample.set_field(other_sample.pred_sem_seg, f'{other}_pred_sem_seg')
        return samples

    # ----------------------------------------------------------------------------------------------------
    # What hooks and analysis tools read of the teacher (PrototypeInitHook, tools/analysis).
    @torch.no_grad()
    def teacher_encoder_features(self, inputs: Tensor) -> Tensor:
        """``E^t = teacher.extract_feat(inputs)[loss_contrast.in_index]`` ``(N, L', h', w')`` (Eq. 7, 12).

        Raises:
            ValueError: Naming ``semi_train_cfg.loss_contrast.in_index`` / ``feat_channels`` when they do not fit
                the backbone's outputs, or when the contrastive term is off.
        """
        contrast = self.contrast_loss
        if contrast is None:
            raise ValueError('E^t is the contrastive term\'s input, which is off (semi_train_cfg.loss_contrast.'
                             'num_parts=0 or loss_contrast=None).')
        outputs = self.teacher.extract_feat(inputs)
        if isinstance(outputs, Tensor):
            outputs = [outputs]
        in_index, dim = int(contrast.in_index), int(contrast.feat_channels)
        if not -len(outputs) <= in_index < len(outputs):
            raise ValueError(f'teacher.extract_feat(x) returns {len(outputs)} feature maps, so '
                             f'semi_train_cfg.loss_contrast.in_index={in_index} names none; use -1 for the last '
                             'backbone stage.')
        feats = outputs[in_index]
        if feats.ndim != 4 or feats.shape[1] != dim:
            raise ValueError(
                f'E^t = teacher.extract_feat(x)[{in_index}] has shape {tuple(feats.shape)}, i.e. '
                f'{feats.shape[1] if feats.ndim == 4 else "?"} channels, but '
                f'semi_train_cfg.loss_contrast.feat_channels={dim}. Set feat_channels to the channels of that '
                f'backbone output (e.g. 2048 for ResNet-101 layer4), or choose another output with '
                f'semi_train_cfg.loss_contrast.in_index (now {in_index}).')
        return feats

    @torch.no_grad()
    def unlabeled_teacher_probs(self, data_batch: dict, max_images: int) -> Tuple[List[int], SampleList, Tensor]:
        """``p^t`` (Eq. 1) of the first ``max_images`` unlabeled weak views of a training batch, as ``loss`` sees
        them (the data preprocessor, then :meth:`split_batch`).

        Args:
            data_batch: The batch as the data loader gives it.
            max_images: How many unlabeled images at most.

        Returns:
            ``(positions, samples, probs)``: the images' positions in the batch, their preprocessed samples
            (``img_shape`` without padding) and ``(U', C, H, W)`` fp32 probabilities; ``([], [], None)`` when the
            batch has no unlabeled image.
        """
        data = self.data_preprocessor(data_batch, True)
        _, unlabeled, _ = self.split_batch(data['data_samples'])
        chosen = unlabeled[:max_images]
        if not chosen:
            return [], [], None
        return chosen, [data['data_samples'][i] for i in chosen], self.teacher_probs(data['inputs'][chosen])

    @torch.no_grad()
    def teacher_part_maps(self, inputs: Tensor, class_map: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Eq. 7 on the teacher: the part of each pixel of ``class_map`` (default: the teacher's arg-max).

        Args:
            inputs: Images ``(N, 3, H, W)``.
            class_map: ``(N, H', W')`` long classes (ignore index where unknown), any resolution.

        Returns:
            ``(class_map, parts)``, both ``(N, H', W')`` long (``(N, H, W)`` for the teacher's arg-max); parts
            are -1 where the class is ignored.
        """
        if class_map is None:
            class_map = self.teacher_probs(inputs).argmax(dim=1)
        enc = self.teacher_encoder_features(inputs)
        parts = self.contrast_loss.assign(enc, class_map.to(enc.device), align_corners=self.teacher.align_corners)
        return class_map, parts

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
        synchronisation per iteration (the logger synchronises them anyway).

        Args:
            losses: The losses dict of :meth:`loss`.

        Returns:
            ``(total_loss, log_vars)`` as ``BaseModel.parse_losses``.

        Raises:
            NonFiniteLossError: Naming the non-finite terms (e.g. ``unsup.loss_dsl``) and the iteration.
        """
        loss, log_vars = super().parse_losses(losses)
        names = [name for name, value in log_vars.items() if 'loss' in name and isinstance(value, Tensor)]
        if not names:
            return loss, log_vars
        values = torch.stack([log_vars[name].detach().float().reshape(()) for name in names])
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            raise NonFiniteLossError(self._non_finite_message(names, values.tolist(), finite.tolist()))
        return loss, log_vars

    @staticmethod
    def _non_finite_message(names: List[str], values: List[float], finite: List[bool]) -> str:
        terms = [f'{name}={value}' for name, value, ok in zip(names, values, finite) if not ok and name != 'loss']
        total = dict(zip(names, values)).get('loss')
        iteration = MessageHub.get_current_instance().get_info('iter')
        where = ('outside a training loop' if iteration is None else
                 f'at training iteration {iteration + 1} (as logged; runner.iter={iteration})')
        return (f'ESLSegmentor: non-finite loss {where}: {", ".join(terms) or "the total"} (total loss={total}). '
                'Training stopped before the optimizer step, so the parameters and every checkpoint written so far '
                'are untouched. Usual causes: a learning rate too high (optim_wrapper.optimizer.lr), fp16 overflow '
                '(train in fp32 or bf16, or fp16 with --amp and its dynamic loss scaling), a corrupt label or image '
                '(tools/train.py checks every file before training unless --data-check off), a loss weight too '
                'large. Fix the cause, then continue from the last checkpoint with --resume.')

    # ----------------------------------------------------------------------------------------------------
    def split_batch(self, data_samples: SampleList) -> Tuple[List[int], List[int], List[int]]:
        """Positions of the labeled, unlabeled and CutMix-partner samples of a batch.

        Args:
            data_samples: The batch; every sample carries ``is_labeled`` in its metainfo.

        Returns:
            ``(labeled, unlabeled, partners)`` index lists; ``partners`` is empty for ``partner='batch'``.

        Raises:
            ValueError: If the flag is missing or the batch is not laid out as the sampler makes it.
        """
        flags = [ds.metainfo.get('is_labeled') for ds in data_samples]
        if any(flag is None for flag in flags):
            raise ValueError("Training samples need 'is_labeled' in their metainfo: build the datasets with "
                             "SplitSegDataset and add 'is_labeled' to PackSegInputs(meta_keys=...).")
        num_labeled = sum(bool(flag) for flag in flags)
        if not all(flags[:num_labeled]) or num_labeled == 0 or num_labeled == len(flags):
            raise ValueError(
                f'Expected a batch of labeled then unlabeled samples, got is_labeled={flags}. Use '
                'SemiSupervisedSampler and set train_dataloader.batch_size to its batch_size '
                '(num_labeled + num_unlabeled * (2 if cutmix_partners else 1)).')
        labeled = list(range(num_labeled))
        rest = list(range(num_labeled, len(flags)))
        if self.semi_train_cfg.cutmix.partner == 'batch':
            return labeled, rest, []
        if len(rest) % 2:
            raise ValueError(f"cutmix.partner='extra' needs as many partners as unlabeled images, got "
                             f'{len(rest)} unlabeled samples; enable cutmix_partners in SemiSupervisedSampler '
                             "or use cutmix.partner='batch'.")
        half = len(rest) // 2
        return labeled, rest[:half], rest[half:]

    def teacher_probs(self, inputs: Tensor) -> Tensor:
        """Teacher probabilities ``p^t`` (Eq. 1) at input resolution, in fp32, without gradient.

        Args:
            inputs: Weakly augmented images ``(N, 3, H, W)``.

        Returns:
            ``(N, C, H, W)`` fp32 softmax probabilities.
        """
        with torch.no_grad():
            logits = self.teacher.decode_head.forward(self.teacher.extract_feat(inputs))
            return self._upsampled_probs(logits, inputs.shape[2:])

    def _upsampled_probs(self, logits: Tensor, size: Tuple[int, int]) -> Tensor:
        logits = resize(logits.float(), size=size, mode='bilinear', align_corners=self.teacher.align_corners)
        return logits.softmax(dim=1)

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

    def partner_index(self, num_unlabeled: int, num_partners: int, device: torch.device) -> Tensor:
        """Index of each unlabeled image's partner in ``cat(unlabeled, partners)``."""
        if num_partners:
            return torch.arange(num_unlabeled, device=device) + num_unlabeled
        return derangement(num_unlabeled, device=device)

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
            ``unsup.teacher_conf`` and, when unlabeled ground truth exists, ``unsup.pseudo_acc``) and, with the
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
        valid = valid_pixel_masks(batch.pool_samples, *batch.size, batch.pool.device)
        return TeacherOutput(probs=probs, valid=valid, enc=enc, embed=embed)

    @record_function('esl.cutmix_unlabeled')
    def cutmix_unlabeled(self, batch: SemiBatch, teacher: TeacherOutput) -> MixedBatch:
        """CutMix each unlabeled weak view with its partner (§4.1), and its ``p^t``, valid pixels and ground truth
        with the same box."""
        cfg = self.semi_train_cfg.cutmix
        device = batch.pool.device
        partner = self.partner_index(batch.num_unlabeled, len(batch.pool) - batch.num_unlabeled, device)
        boxes, apply = sample_cutmix_boxes(batch.num_unlabeled, *batch.size, area_range=cfg.area_range,
                                           ratio_range=cfg.ratio_range, prob=cfg.prob, device=device)
        mask = cutmix_masks(boxes, apply, *batch.size)
        gt = self._unlabeled_gt(batch.pool_samples, device)
        mixed = self._mix([batch.pool, teacher.probs, teacher.valid] + gt, partner, mask)
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

        cls_mix, conf_mix, part_mix = self._mix([cls_small, conf_small, parts[num_labeled:]], mixed.partner,
                                                resize_mask(mixed.mask, small))
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

    @staticmethod
    def _mix(tensors: Sequence[Tensor], partner: Tensor, mask: Tensor) -> List[Tensor]:
        """CutMix rows ``[:U]`` of each pool tensor with rows ``partner`` of the same pool."""
        num = mask.shape[0]
        pool_size = tensors[0].shape[0]
        if pool_size == num:
            return cutmix(tensors, partner, mask)
        # Pool = unlabeled + extra partners: pair i <-> U + i so that cutmix() sees one batch.
        swap = torch.cat([partner, torch.arange(num, device=partner.device)])
        full_mask = torch.cat([mask, torch.zeros_like(mask)])
        return [t[:num] for t in cutmix(tensors, swap, full_mask)]

    @staticmethod
    def _unlabeled_gt(samples: SampleList, device: torch.device) -> List[Tensor]:
        """Ground truth of unlabeled samples if all have it (for logged accuracy only, never a loss)."""
        if not samples or not all('gt_sem_seg' in ds for ds in samples):
            return []
        return [torch.stack([ds.gt_sem_seg.data[0] for ds in samples]).to(device)]

    @torch.no_grad()
    def pseudo_label_stats(self, probs: Tensor, pseudo: Tensor, valid: Tensor,
                           gt: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """How the pseudo labels behave, averaged over valid unlabeled pixels.

        Args:
            probs: Mixed teacher probabilities ``(U, C, H, W)``.
            pseudo: The pseudo labels built from them ``(U, C, H, W)`` (soft or one-hot).
            valid: Valid pixels ``(U, H, W)``.
            gt: Optional mixed ground truth ``(U, H, W)`` (255 = ignore), logged only.

        Returns:
            ``dominant_classes`` (mean number of classes with non-zero pseudo-label mass), ``multi_dominant``
            (fraction of pixels with >= 2 of them), ``teacher_conf`` (mean max probability) and, with
            ``gt``, ``pseudo_acc`` (accuracy of the teacher's argmax on labeled-in-truth pixels).
        """
        count = valid.sum().clamp(min=1)
        dominant = (pseudo > 0).sum(dim=1).float()
        stats = dict(
            dominant_classes=(dominant * valid).sum() / count,
            multi_dominant=((dominant >= 2) & valid).sum() / count,
            teacher_conf=(probs.max(dim=1).values * valid).sum() / count)
        if gt is not None:
            known = valid & (gt != 255)
            correct = (probs.argmax(dim=1) == gt) & known
            stats['pseudo_acc'] = correct.sum() / known.sum().clamp(min=1)
        return stats
