"""Dynamic Soft Label (DSL, paper Sec. 3.2) and the soft cross-entropy that trains the student with it.

For an unlabeled image the teacher's probabilities ``p^t`` are turned into a *soft* pseudo label instead of
a one-hot one. The paper's equations map onto this module as follows:

* **Eq. 3-4 -> :func:`dominant_classes`.** Per pixel, sort ``p^t`` in descending order and take the
  shortest prefix whose sum reaches ``eta`` (Eq. 4); the last probability of that prefix is the dynamic
  threshold ``delta_j``, and the dominant classes are ``{c : p_c >= delta_j}`` (Eq. 3), ties with ``delta_j``
  included. The result is the dominant-class mask ``h``. ``top_k`` gives the "Top-5" row of Tab. 3 instead.
* **Eq. 5 -> :func:`dynamic_soft_label`.** ``y* = h * p / ||h * p||_1`` over the class dimension.
* **Eq. 6 -> :func:`soft_cross_entropy` and :class:`DSLLoss`.** ``-sum_c y*_c log p^s_c`` per pixel,
  averaged over the valid pixels; :class:`DSLLoss` is the registered module (``type='DSLLoss'``) that builds
  ``y*`` from the teacher and weighs the result by ``lambda_1`` of Eq. 11.

:func:`hard_label` is the one-hot arg-max label that DSL degenerates to when ``eta <= max_c p_c``
(the "hard label" of Tab. 2).

Conventions: probability and logit maps are ``(N, C, H, W)``, class dimension 1; valid masks are bool
``(N, H, W)``, False at ignored or padded pixels. Everything is computed in fp32 whatever the input dtype
(in fp16 a cumulative sum of probabilities may never reach ``eta``) and is device-agnostic, without Python
loops over pixels.
"""
from __future__ import annotations

import numbers
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from ...checks import is_non_negative_number

__all__ = [
    'DSLLoss',
    'dominant_classes',
    'dynamic_soft_label',
    'hard_label',
    'soft_cross_entropy',
]

#: A prefix of the sorted probabilities counts as reaching ``eta`` when its fp32 sum is at most this far below
#: it. fp32 rounding of a sum of probabilities is of the order of 1e-7 per term, so without this slack a
#: prefix that reaches ``eta`` exactly in real arithmetic (p = (.45, .35, .2), eta = .8) may fall a few ulps
#: short and pull in one class too many. Its effect on ``y*`` is at most of the same order.
CUMSUM_ATOL: float = 1e-6

MODES: Tuple[str, ...] = ('dsl', 'top_k', 'hard')
NORMALIZATIONS: Tuple[str, ...] = ('valid', 'total', 'u2pl')


def _check_eta(eta: float) -> None:
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 0.0 < eta <= 1.0:
        raise ValueError(f'eta must be a number in (0, 1], got eta={eta!r}')


def _check_top_k(top_k: int, num_classes: Optional[int] = None) -> None:
    upper = 'C (the number of classes)' if num_classes is None else f'C={num_classes}'
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1 or (
            num_classes is not None and top_k > num_classes):
        raise ValueError(f'top_k must be an integer in [1, {upper}], got top_k={top_k!r}')


def _check_4d(name: str, tensor: Tensor) -> None:
    if tensor.ndim != 4:
        raise ValueError(f'{name} must be 4-D (N, C, H, W), got shape {tuple(tensor.shape)}')


def dominant_classes(probs: Tensor, eta: float = 0.95, top_k: Optional[int] = None) -> Tensor:
    """The dominant-class mask ``h`` of Eq. 3-4.

    Per pixel ``j``, the probabilities are sorted in descending order and the shortest prefix whose sum is
    ``>= eta`` is taken (Eq. 4); its last value is the threshold ``delta_j`` and the dominant classes are
    ``C_j = {c : p_c >= delta_j}`` (Eq. 3), so classes tied with ``delta_j`` are included. Consequences:

    * ``eta <= max_c p_c`` gives the arg-max class only (plus exact ties with the maximum): the hard label.
    * If the sum never reaches ``eta`` (fp rounding: probabilities summing to 0.99999 with ``eta = 1``), every
      class is dominant (``delta_j`` is the smallest probability).
    * A prefix whose fp32 sum falls short of ``eta`` by at most :data:`CUMSUM_ATOL` counts as reaching it,
      so results agree with Eq. 4 in exact arithmetic when a prefix sums to ``eta`` exactly.

    With ``top_k = k`` (the "Top-5" row of Tab. 3), ``delta_j`` is the k-th largest probability instead and
    ``eta`` is not used (it is still validated); ties with it are included too.

    Args:
        probs: Teacher probabilities (softmax output), shape (N, C, H, W), any floating dtype. Computed in
            fp32 internally.
        eta: Accumulated-probability threshold of Eq. 4, in (0, 1]. The paper uses 0.95.
        top_k: If given, keep the ``top_k`` most probable classes instead, in [1, C].

    Returns:
        BoolTensor of shape (N, C, H, W) on ``probs.device``: ``h[n, c, y, x]`` is True iff class ``c`` is
        dominant at that pixel. At least one class is True per pixel (for finite inputs).

    Raises:
        ValueError: If ``probs`` is not 4-D, ``eta`` is not in (0, 1] or ``top_k`` is not in [1, C].
    """
    _check_4d('probs', probs)
    _check_eta(eta)
    num_classes = probs.shape[1]
    if top_k is not None:
        _check_top_k(top_k, num_classes)
    p = probs.float()
    if top_k is not None:
        delta = p.topk(int(top_k), dim=1).values[:, -1:]
    else:
        sorted_p = p.sort(dim=1, descending=True).values
        cumsum = sorted_p.cumsum(dim=1)
        # Prefix sums are non-decreasing, so the number of prefixes still below eta is the 0-based index of
        # the threshold class C* of Eq. 4; when none reaches eta, C* is the last (smallest) class.
        threshold_idx = (cumsum < eta - CUMSUM_ATOL).sum(dim=1, keepdim=True).clamp_max(num_classes - 1)
        delta = sorted_p.gather(1, threshold_idx)
    return p >= delta


def dynamic_soft_label(probs: Tensor, eta: float = 0.95, top_k: Optional[int] = None) -> Tensor:
    """The Dynamic Soft Label ``y* = h * p / ||h * p||_1`` of Eq. 5.

    The teacher probabilities are masked to the dominant classes of :func:`dominant_classes` (Eq. 3-4) and
    renormalised to sum to 1 over the classes. A pixel whose probabilities are all zero gets an all-zero
    label (it then contributes nothing to :func:`soft_cross_entropy`) instead of NaN.

    Args:
        probs: Teacher probabilities, shape (N, C, H, W), fp32, fp16 or bf16. Computed in fp32 internally.
        eta: Accumulated-probability threshold of Eq. 4, in (0, 1].
        top_k: If given, keep the ``top_k`` most probable classes instead (Tab. 3 "Top-5"), in [1, C].

    Returns:
        Tensor of the shape, dtype and device of ``probs``: the soft label, summing to 1 over dim 1 (up to
        the rounding of the output dtype) and zero outside the dominant classes.

    Raises:
        ValueError: As :func:`dominant_classes`.
    """
    mask = dominant_classes(probs, eta=eta, top_k=top_k)
    masked = probs.float() * mask
    norm = masked.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return (masked / norm).to(probs.dtype)


def hard_label(probs: Tensor) -> Tensor:
    """The one-hot arg-max label, i.e. the "hard label" of Tab. 2 (DSL with ``eta <= max_c p_c``, Eq. 3-4).

    Exact ties are broken towards the lowest class index (``torch.argmax``), so each pixel has exactly one 1.

    Args:
        probs: Teacher probabilities (or logits: only the arg-max matters), shape (N, C, H, W).

    Returns:
        Tensor of the shape, dtype and device of ``probs``, one-hot over dim 1.

    Raises:
        ValueError: If ``probs`` is not 4-D.
    """
    _check_4d('probs', probs)
    one_hot = F.one_hot(probs.argmax(dim=1), num_classes=probs.shape[1])  # (N, H, W, C)
    return one_hot.permute(0, 3, 1, 2).to(probs.dtype)


def soft_cross_entropy(logits: Tensor,
                       target: Tensor,
                       valid_mask: Optional[Tensor] = None,
                       normalize: str = 'valid') -> Tensor:
    """Soft cross-entropy of Eq. 6: ``-sum_c y_c log softmax(logits)_c`` per pixel, reduced over pixels.

    Let ``S`` be the sum of the per-pixel losses over the valid pixels, ``V`` the number of valid pixels and
    ``T = N * H * W`` the number of all pixels. ``normalize`` chooses the reduction:

    * ``'valid'`` (default): ``S / V``, the mean over valid pixels. Default because it keeps the loss scale
      independent of how many pixels are ignored or padded (the UniMatch convention); with all pixels valid
      it is exactly Eq. 6.
    * ``'total'``: ``S / T``, Eq. 6 read literally (its ``N = H * W`` counts all pixels); ignored pixels
      then dilute the loss.
    * ``'u2pl'``: U2PL's convention, the mean over valid pixels times ``T / V``, i.e. ``S * T / V**2``; it
      up-weights batches in which many pixels are ignored.

    With no valid pixel every normalisation returns 0 (not NaN), still connected to the graph of ``logits``
    so that ``backward()`` works (and gives zero gradients).

    Args:
        logits: Student logits before softmax, shape (N, C, H, W), any floating dtype. ``log_softmax`` runs
            in fp32.
        target: Soft labels summing to 1 over dim 1 (e.g. :func:`dynamic_soft_label`), shape (N, C, H, W),
            same spatial size as ``logits`` (resize first). Treated as a constant only if the caller detaches
            it; values at invalid pixels are never used.
        valid_mask: BoolTensor of shape (N, H, W), False at ignored or padded pixels. None means all valid.
        normalize: ``'valid'``, ``'total'`` or ``'u2pl'``, see above.

    Returns:
        Scalar fp32 tensor.

    Raises:
        ValueError: If the shapes of ``logits``, ``target`` and ``valid_mask`` do not match, or ``normalize``
            is unknown.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f'normalize must be one of {NORMALIZATIONS}, got normalize={normalize!r}')
    _check_4d('logits', logits)
    _check_4d('target', target)
    if target.shape != logits.shape:
        raise ValueError(
            f'target shape {tuple(target.shape)} does not match logits shape {tuple(logits.shape)}; resize the '
            f'target (or the logits) to the same (N, C, H, W) before calling soft_cross_entropy')
    n, _, h, w = logits.shape
    if valid_mask is None:
        valid_mask = torch.ones((n, h, w), dtype=torch.bool, device=logits.device)
    elif valid_mask.shape != (n, h, w):
        raise ValueError(
            f'valid_mask shape {tuple(valid_mask.shape)} does not match (N, H, W) = {(n, h, w)} of logits shape '
            f'{tuple(logits.shape)}')
    valid_mask = valid_mask.bool()
    # Zero the target at invalid pixels so that garbage there (NaN, padding) reaches neither value nor gradient.
    target = torch.where(valid_mask.unsqueeze(1), target.float(), 0.0)
    per_pixel = -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)  # (N, H, W)
    total_loss = per_pixel.sum()
    num_valid = valid_mask.sum().clamp_min(1).float()
    loss_mean = total_loss / num_valid
    if normalize == 'valid':
        return loss_mean
    num_pixels = float(n * h * w)
    if normalize == 'total':
        return total_loss / max(num_pixels, 1.0)
    return loss_mean * (num_pixels / num_valid)


#: Where each :class:`DSLLoss` argument lives in an ESL config, for error messages.
_CONFIG_KEY = 'semi_train_cfg.loss_unsup'


def _check_loss_name(loss_name: str) -> None:
    if not isinstance(loss_name, str) or not loss_name.startswith('loss_'):
        raise ValueError(
            f"loss_name must start with 'loss_' so that it is summed into the total loss, got "
            f'loss_name={loss_name!r}')


def _check_loss_weight(loss_weight: float) -> None:
    if not is_non_negative_number(loss_weight):
        raise ValueError(f'loss_weight must be a finite number >= 0, got loss_weight={loss_weight!r}')


def _check_choice(name: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {name}={value!r}')


def _check_dsl_arguments(*, mode: str, eta: float, top_k: int, normalize: str, loss_weight: float,
                         loss_name: str) -> None:
    """Validates the :class:`DSLLoss` arguments; the error names the argument and its ESL config key.

    Raises:
        ValueError: ``DSLLoss: <what is wrong>; it is semi_train_cfg.loss_unsup.<name> in an ESL config``.
    """
    checks = (('mode', lambda: _check_choice('mode', mode, MODES)),
              ('eta', lambda: _check_eta(eta)),
              ('top_k', lambda: _check_top_k(top_k)),
              ('normalize', lambda: _check_choice('normalize', normalize, NORMALIZATIONS)),
              ('loss_weight', lambda: _check_loss_weight(loss_weight)),
              ('loss_name', lambda: _check_loss_name(loss_name)))
    hints = dict(eta=' (η of Eq. 4, the probability mass the dominant classes must reach; paper 0.95; 1.0 keeps '
                     'every class with non-zero probability)',
                 loss_weight=' (λ1 of Eq. 11; paper 0.2)')
    for name, check in checks:
        try:
            check()
        except ValueError as e:
            raise ValueError(f'DSLLoss: {e}. Set {_CONFIG_KEY}.{name} of the ESLSegmentor config (or the DSLLoss '
                             f'argument {name}) to a valid value{hints.get(name, "")}.') from None


@MODELS.register_module()
class DSLLoss(nn.Module):
    """Unsupervised loss of ESL: soft cross-entropy (Eq. 6) against the Dynamic Soft Label (Eq. 3-5).

    ``forward`` builds the pseudo label from the teacher's probabilities (detached, fp32) and returns
    ``loss_weight * soft_cross_entropy(student_logits, y*, valid_mask, normalize)``. ``mode`` selects the
    label for the ablations: ``'dsl'`` (Eq. 5 with ``eta``; Tab. 3), ``'top_k'`` (the ``top_k`` most probable
    classes, renormalised; Tab. 3 "Top-5") or ``'hard'`` (one-hot arg-max; Tab. 2 "hard label").

    This is not a decode-head ``loss_decode`` (it takes teacher probabilities, not a label map); the
    segmentor calls it on the strong view after resizing the student logits and CutMix-ing the teacher
    probabilities and the valid mask alike. Build it from a config with
    ``MODELS.build(dict(type='DSLLoss', eta=0.95, loss_weight=0.2))``.

    Args:
        mode: ``'dsl'``, ``'top_k'`` or ``'hard'``.
        eta: Accumulated-probability threshold of Eq. 4, in (0, 1]. Paper: 0.95.
        top_k: Number of classes kept when ``mode == 'top_k'``, >= 1 (and <= C at call time). Paper: 5.
        normalize: Pixel reduction of :func:`soft_cross_entropy`: ``'valid'``, ``'total'`` or ``'u2pl'``.
        loss_weight: ``lambda_1`` of Eq. 11, >= 0. Paper: 0.2.
        loss_name: Key of the loss in the losses dict; must start with ``'loss_'`` so that mmengine sums it
            into the total loss.

    Raises:
        ValueError: If an argument is out of range; the message names it and its ESL config key
            (``semi_train_cfg.loss_unsup.<name>``). All arguments are validated whatever the mode, so a typo
            in an unused one does not go unnoticed.
    """

    def __init__(self,
                 *,
                 mode: str = 'dsl',
                 eta: float = 0.95,
                 top_k: int = 5,
                 normalize: str = 'valid',
                 loss_weight: float = 0.2,
                 loss_name: str = 'loss_dsl') -> None:
        super().__init__()
        _check_dsl_arguments(mode=mode, eta=eta, top_k=top_k, normalize=normalize, loss_weight=loss_weight,
                             loss_name=loss_name)
        self.mode = mode
        self.eta = float(eta)
        self.top_k = int(top_k)
        self.normalize = normalize
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        """Key of this loss in the losses dict (starts with ``'loss_'``), as for mmseg's losses."""
        return self._loss_name

    def extra_repr(self) -> str:
        return (f'mode={self.mode!r}, eta={self.eta}, top_k={self.top_k}, normalize={self.normalize!r}, '
                f'loss_weight={self.loss_weight}, loss_name={self._loss_name!r}')

    def pseudo_label(self, teacher_probs: Tensor) -> Tensor:
        """The pseudo label of the configured mode (Eq. 5 for ``'dsl'``), detached from the graph.

        Args:
            teacher_probs: Teacher probabilities, shape (N, C, H, W), any floating dtype.

        Returns:
            Tensor of the shape, dtype and device of ``teacher_probs``, summing to 1 over dim 1.
        """
        teacher_probs = teacher_probs.detach()
        if self.mode == 'hard':
            return hard_label(teacher_probs)
        if self.mode == 'top_k':
            return dynamic_soft_label(teacher_probs, eta=self.eta, top_k=self.top_k)
        return dynamic_soft_label(teacher_probs, eta=self.eta)

    def forward(self, student_logits: Tensor, teacher_probs: Tensor, valid_mask: Optional[Tensor] = None, *,
                pseudo_label: Optional[Tensor] = None) -> Tensor:
        """``loss_weight * L_SCE`` of Eq. 6 (weighted by ``lambda_1`` as in Eq. 11).

        Args:
            student_logits: Student logits before softmax on the strong view, shape (N, C, H, W).
            teacher_probs: Teacher probabilities for the same pixels, shape (N, C, H, W); detached and cast to
                fp32 here, so no gradient reaches the teacher.
            valid_mask: BoolTensor (N, H, W), False at ignored or padded pixels; None means all valid.
            pseudo_label: ``self.pseudo_label(teacher_probs)`` if the caller already computed it (the
                segmentor does, for its statistics); detached here.

        Returns:
            Scalar fp32 tensor.
        """
        if pseudo_label is None:
            target = self.pseudo_label(teacher_probs.detach().float())
        else:
            target = pseudo_label.detach().float()
        return self.loss_weight * soft_cross_entropy(student_logits, target, valid_mask, self.normalize)
