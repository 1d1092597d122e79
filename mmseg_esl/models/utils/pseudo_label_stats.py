"""Logged statistics of the pseudo labels: dominant classes, teacher confidence, accuracy against ground truth."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor


@torch.no_grad()
def pseudo_label_stats(probs: Tensor, pseudo: Tensor, valid: Tensor, gt: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """How the pseudo labels behave, averaged over valid unlabeled pixels.

    Args:
        probs: Mixed teacher probabilities ``(U, C, H, W)``.
        pseudo: The pseudo labels built from them ``(U, C, H, W)`` (soft or one-hot).
        valid: Valid pixels ``(U, H, W)``.
        gt: Optional mixed ground truth ``(U, H, W)`` (255 = ignore), logged only; without a valid pixel of
            known truth the accuracy keys are left out (not logged as 0).

    Returns:
        ``dominant_classes`` (mean number of classes with non-zero pseudo-label mass), ``multi_dominant``
        (fraction of pixels with >= 2 of them), ``teacher_conf`` (mean max probability) and, with
        ``gt``, ``pseudo_acc`` (accuracy of the teacher's argmax on labeled-in-truth pixels) and, on the
        labeled-in-truth pixels with >= 2 dominant classes (where a soft label differs from a hard one),
        ``pseudo_acc_multi`` (the argmax's accuracy: the mass a hard label puts on the true class, on average),
        ``gt_mass_multi`` (the mass the pseudo label puts on the true class) and ``teacher_conf_multi`` (the mean
        max probability there). For a calibrated teacher ``gt_mass_multi <= pseudo_acc_multi`` always
        (``Σ_D p_c² / Σ_D p_c <= max_c p_c``), so their gap alone does not judge soft against hard labels;
        ``teacher_conf_multi`` against ``pseudo_acc_multi`` shows how calibrated the teacher is where they differ.
    """
    count = valid.sum().clamp(min=1)
    conf, top = probs.max(dim=1)  # the teacher's confidence and arg-max, (U, H, W) each
    dominant = (pseudo > 0).sum(dim=1).float()
    stats = dict(
        dominant_classes=(dominant * valid).sum() / count,
        multi_dominant=((dominant >= 2) & valid).sum() / count,
        teacher_conf=(conf * valid).sum() / count)
    known = None if gt is None else valid & (gt != 255)
    if known is not None and known.any():  # a batch whose ground-truth pixels all fell outside: nothing to log
        correct = (top == gt) & known
        stats['pseudo_acc'] = correct.sum() / known.sum().clamp(min=1)
        multi = known & (dominant >= 2)
        on_truth = pseudo.gather(1, gt.clamp(0, pseudo.shape[1] - 1).long().unsqueeze(1)).squeeze(1)
        stats['pseudo_acc_multi'] = (correct & multi).sum() / multi.sum().clamp(min=1)
        stats['gt_mass_multi'] = (on_truth * multi).sum() / multi.sum().clamp(min=1)
        stats['teacher_conf_multi'] = (conf * multi).sum() / multi.sum().clamp(min=1)
    return stats
