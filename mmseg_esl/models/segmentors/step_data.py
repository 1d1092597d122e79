"""The typed values one ESL training step passes between its named steps (``ESLSegmentor.loss``).

Shapes: ``N_l`` labeled images, ``U`` unlabeled images, ``P`` weak pool = the unlabeled images then their CutMix
partners (``P = 2U`` with ``cutmix.partner='extra'``, ``P = U`` with ``'batch'``), ``C`` classes, ``(H, W)`` the
padded batch, ``(h, w)`` the contrastive resolution (``ceil(H / τ)``), ``L`` / ``L'`` the channels of the
projector's ``z`` / the encoder's ``E^t``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from mmseg.utils import SampleList
from torch import Tensor


@dataclass
class SemiBatch:
    """A training batch split by role.

    Attributes:
        labeled: Labeled images ``(N_l, 3, H, W)``.
        labeled_samples: Their samples (``gt_sem_seg``).
        pool: Weak views of the unlabeled images then their partners ``(P, 3, H, W)``.
        pool_samples: Their samples.
        num_unlabeled: ``U``, the leading rows of ``pool`` that are trained on.
    """

    labeled: Tensor
    labeled_samples: SampleList
    pool: Tensor
    pool_samples: SampleList
    num_unlabeled: int

    @property
    def size(self) -> Tuple[int, int]:
        """``(H, W)`` of the padded batch."""
        return tuple(self.labeled.shape[2:])


@dataclass
class TeacherOutput:
    """The teacher's weak pass (no gradient).

    Attributes:
        probs: ``p^t`` of the pool, fp32 softmax at ``(H, W)``: ``(P, C, H, W)`` (Eq. 1).
        valid: Pool pixels that are image, not padding ``(P, H, W)``.
        enc: ``E^t`` of ``[labeled | pool]`` ``(N_l + P, L', h', w')``; None without the contrastive term.
        embed: ``z^t`` of ``[labeled | pool]`` ``(N_l + P, L, h, w)``; None without the contrastive term.
    """

    probs: Tensor
    valid: Tensor
    enc: Optional[Tensor] = None
    embed: Optional[Tensor] = None


@dataclass
class MixedBatch:
    """The strong views: each unlabeled image CutMix'd with its partner, and its targets mixed the same way.

    Attributes:
        images: ``(U, 3, H, W)``.
        probs: Mixed ``p^t`` ``(U, C, H, W)``.
        valid: Mixed valid pixels ``(U, H, W)``.
        gt: Mixed unlabeled ground truth ``(U, H, W)`` if every pool sample has one (logged, never a loss).
        partner: Index of each unlabeled image's partner in the pool ``(U,)``.
        mask: CutMix boxes at ``(H, W)``, True where the partner is pasted ``(U, H, W)``.
    """

    images: Tensor
    probs: Tensor
    valid: Tensor
    gt: Optional[Tensor]
    partner: Tensor
    mask: Tensor


@dataclass
class StudentOutput:
    """The student's one forward over ``[labeled | mixed]``.

    Attributes:
        feats: Its encoder features (``extract_feat``), batch ``N_l + U``.
        logits: Decode-head logits ``(N_l + U, C, h_d, w_d)``.
        num_labeled: ``N_l``.
    """

    feats: List[Tensor]
    logits: Tensor
    num_labeled: int


@dataclass
class ContrastTargets:
    """What Eq. 7-10 and 12 need, at the contrastive resolution ``(h, w)`` (no gradient).

    Attributes:
        anchor_classes: Class of each student pixel of ``[labeled | mixed]`` ``(N_l + U, h, w)``.
        anchor_parts: Its part ``k*`` (Eq. 7) ``(N_l + U, h, w)``.
        anchor_mask: Pixels that may be anchors (Eq. 9): labeled and not ignored, or unlabeled with teacher
            confidence > ζ ``(N_l + U, h, w)``.
        bank_classes: Class of each weak pixel of ``[labeled | pool]`` that enters the bank and the prototypes
            (ignore index elsewhere) ``(N_l + P, h, w)``.
        bank_parts: Its part, -1 where its class is ignored ``(N_l + P, h, w)``.
    """

    anchor_classes: Tensor
    anchor_parts: Tensor
    anchor_mask: Tensor
    bank_classes: Tensor
    bank_parts: Tensor

    @property
    def size(self) -> Tuple[int, int]:
        """``(h, w)``."""
        return tuple(self.anchor_classes.shape[1:])
