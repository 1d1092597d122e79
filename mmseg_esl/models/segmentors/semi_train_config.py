"""ESLSegmentor's ``semi_train_cfg`` and ``projector``: defaults, merging, and the contrastive term they build."""
from __future__ import annotations

import copy
from typing import Optional

import torch
from mmengine.config import ConfigDict
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS

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


def check_num_classes(student: BaseSegmentor, loss_cfg: Optional[dict]) -> None:
    """Decode head, auxiliary heads and an explicit ``loss_contrast.num_classes`` must agree on C.

    Raises:
        ValueError: Naming every config key and its value.
    """
    found = {'segmentor.decode_head.num_classes': student.num_classes}  # the last head of a cascade
    aux = getattr(student, 'auxiliary_head', None)
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


def build_contrast(student: BaseSegmentor, loss_cfg: Optional[dict],
                   projector: Optional[dict]) -> Optional[torch.nn.Module]:
    """Builds the contrastive loss and sets ``student.projector``, or builds nothing when K = 0 / ``None``.

    Call it before the teacher is copied from the student, so that the teacher gets its own projector.
    """
    if loss_cfg is None or loss_cfg.get('num_parts', 5) == 0:
        return None
    loss_cfg = ConfigDict(copy.deepcopy(loss_cfg))
    if loss_cfg.get('feat_channels') is None:
        raise ValueError(
            'semi_train_cfg.loss_contrast.feat_channels is required: the channels of the encoder output E^t '
            '(teacher.extract_feat(x)[in_index], default the last backbone stage), e.g. 2048 for ResNet-50/101, '
            '512 for ResNet-18/34. Or set semi_train_cfg.loss_contrast.num_parts=0 to train without the '
            'pixel-to-part contrastive term.')
    head = student.decode_head
    conv_seg = getattr(head, 'conv_seg', None)
    proj_cfg = ConfigDict(copy.deepcopy(projector or DEFAULT_PROJECTOR))
    if proj_cfg.get('in_channels') is None:
        if not isinstance(conv_seg, torch.nn.Conv2d):
            raise ValueError(f'Cannot infer projector.in_channels from {type(head).__name__}, which has no '
                             'conv_seg; set projector.in_channels.')
        proj_cfg.in_channels = conv_seg.in_channels
    if 'norm_cfg' not in proj_cfg and getattr(head, 'norm_cfg', None) is not None:
        proj_cfg.norm_cfg = copy.deepcopy(head.norm_cfg)
    student.projector = MODELS.build(proj_cfg)
    loss_cfg.setdefault('num_classes', student.num_classes)
    loss_cfg.setdefault('embed_channels', student.projector.out_channels)
    loss_cfg.setdefault('ignore_index', getattr(head, 'ignore_index', 255))
    return MODELS.build(loss_cfg)
