"""Eq. 10 and L_CTR: the per-anchor part InfoNCE loss, against samples or the memory bank, and its class mean."""
from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ...checks import positive_int
from .contrast_common import _check_index_range, _check_integer_dtype, _check_ndim, autocast_dtype, no_autocast

__all__ = ['class_mean_loss', 'part_infonce', 'part_infonce_from_bank']

#: Reductions of :func:`class_mean_loss`.
REDUCTIONS: Tuple[str, ...] = ('paper', 'present')


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ValueError(f'temperature must be a finite number > 0, got temperature={temperature!r}')


def part_infonce(anchors: Tensor, positives: Tensor, negatives: Tensor, temperature: float = 0.5) -> Tensor:
    """Per-anchor InfoNCE loss of Eq. 10, reference form taking the samples themselves.

    ``loss_j = -log(Phi(v_j, v_j+) / (Phi(v_j, v_j+) + sum_i Phi(v_j, v_ji-)))`` with
    ``Phi_sigma(a, b) = exp(cos(a, b) / sigma)``, computed stably as
    ``logsumexp([s+, s-_1, ..., s-_Ns]) - s+`` with ``s = cos / sigma``. A zero vector has cosine 0 with
    everything (``F.normalize``). With no negatives (``N_s = 0``) the loss is 0. Gradients flow to all three
    inputs; detach the samples to treat them as constants. This form holds an (A, N_s, L) tensor; use
    :func:`part_infonce_from_bank` in training.

    Args:
        anchors: Anchor features ``v``, shape (A, L).
        positives: One positive per anchor ``v+``, shape (A, L).
        negatives: ``N_s`` negatives per anchor, shape (A, N_s, L).
        temperature: ``sigma`` > 0. Paper: 0.5.

    Returns:
        fp32 tensor of shape (A,), each entry >= 0 up to rounding.

    Raises:
        ValueError: If the shapes disagree or ``temperature`` is not a finite number > 0.
    """
    _check_ndim('anchors', anchors, 2, '(A, L)')
    _check_ndim('positives', positives, 2, '(A, L)')
    _check_ndim('negatives', negatives, 3, '(A, N_s, L)')
    _check_temperature(temperature)
    if positives.shape != anchors.shape:
        raise ValueError(
            f'positives shape {tuple(positives.shape)} does not match anchors shape {tuple(anchors.shape)}')
    if negatives.shape[0] != anchors.shape[0] or negatives.shape[2] != anchors.shape[1]:
        raise ValueError(
            f'negatives shape {tuple(negatives.shape)} does not match (A, N_s, L) with (A, L) = '
            f'{tuple(anchors.shape)} of anchors')
    v = F.normalize(anchors.float(), dim=-1)
    pos = (v * F.normalize(positives.float(), dim=-1)).sum(-1, keepdim=True)  # (A, 1)
    neg = torch.einsum('al,anl->an', v, F.normalize(negatives.float(), dim=-1))  # (A, N_s)
    logits = torch.cat([pos, neg], dim=1) / temperature
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


class _GatheredBankCosines(torch.autograd.Function):
    """``cos[a, j] = <u_a, keys[:, columns[a, j]]>``, chunk by chunk, keeping no (A, Q) tensor for the backward.

    Why: plain autograd on ``(u @ keys).gather(1, columns)`` saves every chunk's (chunk, Q) similarity matrix
    (the backward of ``gather`` keeps the tensor it gathered from), A x Q values in all (measured at paper scale:
    docs/benchmarks.md). The cosines are linear in ``u``, so the backward is
    ``grad_u[a] = sum_j grad_cos[a, j] * keys[:, columns[a, j]]``, a weighted sum of bank rows that one
    ``embedding_bag`` computes: ``A x (1 + N_s) x L`` multiply-adds instead of ``A x Q x L``, and no (chunk, Q)
    gradient. The only saved tensors are ``keys`` (already alive: the normalised bank) and the (A, 1 + N_s)
    ``columns``.
    """

    @staticmethod
    def forward(ctx, unit: Tensor, keys: Tensor, columns: Tensor, chunk_size: int) -> Tensor:  # noqa: D102
        ctx.save_for_backward(keys, columns)
        ctx.chunk_size = chunk_size
        ctx.unit_dtype = unit.dtype
        out = [(unit[start:start + chunk_size] @ keys).gather(1, columns[start:start + chunk_size]).float()
               for start in range(0, unit.shape[0], chunk_size)]  # (chunk, Q) -> (chunk, 1 + N_s)
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad_cos: Tensor) -> Tuple[Optional[Tensor], None, None, None]:  # noqa: D102
        keys, columns = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        rows = keys.t()  # (Q, L): the bank rows
        grad = F.embedding_bag(columns, rows, per_sample_weights=grad_cos.to(rows.dtype).contiguous(), mode='sum')
        return grad.to(ctx.unit_dtype), None, None, None  # (A, L)


def part_infonce_from_bank(anchors: Tensor,
                           bank: Tensor,
                           pos_idx: Tensor,
                           neg_idx: Tensor,
                           temperature: float = 0.5,
                           *,
                           chunk_size: int = 2048,
                           return_cos: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor, Tensor]]:
    """Per-anchor InfoNCE loss of Eq. 10 with positives and negatives given as rows of the memory bank.

    Same values as :func:`part_infonce` on ``(anchors, bank[pos_idx], bank[neg_idx])``, but the
    (A, N_s, L) tensor of negatives is never built: the bank is normalised once, and for each chunk of at most
    ``chunk_size`` anchors the (chunk, Q) matrix of cosine similarities to all bank entries is computed by one
    matmul, from which the positive and negative columns are gathered (:class:`_GatheredBankCosines`, whose
    backward recomputes nothing and saves no (chunk, Q) matrix). Memory (forward and backward) is
    bounded by ``chunk_size x Q`` similarities plus ``A x (1 + N_s)`` logits (sizes at paper scale:
    docs/benchmarks.md). The bank is detached (a constant: the memory bank holds teacher features); gradients
    flow to ``anchors`` only. Inside an autocast region the matmul runs in the autocast dtype on unit vectors
    (:mod:`.contrast_common`); the cosines, logits and losses are fp32.

    Why a matmul against the whole bank rather than gathering the ``1 + N_s`` rows per anchor: it does
    ``Q / (1 + N_s)`` times the multiply-adds, but as one GEMM per chunk, while gathering reads
    ``A x (1 + N_s) x L`` values from memory, which measured no faster (docs/benchmarks.md).

    Args:
        anchors: Anchor features ``v`` (student ``z^s``), shape (A, L).
        bank: Memory bank entries, shape (Q, L) (e.g. the C x K FIFO queues flattened).
        pos_idx: LongTensor (A,), the bank row of each anchor's positive, in [0, Q).
        neg_idx: LongTensor (A, N_s), the bank rows of each anchor's negatives, in [0, Q).
        temperature: ``sigma`` > 0. Paper: 0.5.
        chunk_size: Anchors per matmul, >= 1.
        return_cos: Also return, for logging, each anchor's cosine similarity to its positive and its mean
            cosine similarity to its negatives (gathered from the same matmul, detached).

    Returns:
        fp32 tensor of shape (A,); with ``return_cos``, the tuple ``(loss, pos_cos, neg_cos)`` of three (A,)
        tensors.

    Raises:
        ValueError: If a shape or dtype is wrong, an index is out of range, or ``temperature``/``chunk_size``
            is invalid.
    """
    _check_ndim('anchors', anchors, 2, '(A, L)')
    _check_ndim('bank', bank, 2, '(Q, L)')
    _check_ndim('pos_idx', pos_idx, 1, '(A,)')
    _check_ndim('neg_idx', neg_idx, 2, '(A, N_s)')
    _check_integer_dtype('pos_idx', pos_idx)
    _check_integer_dtype('neg_idx', neg_idx)
    _check_temperature(temperature)
    positive_int('chunk_size', chunk_size)
    num_anchors = anchors.shape[0]
    if bank.shape[1] != anchors.shape[1]:
        raise ValueError(
            f'bank shape {tuple(bank.shape)} does not match the feature dimension L={anchors.shape[1]} of anchors')
    if pos_idx.shape[0] != num_anchors or neg_idx.shape[0] != num_anchors:
        raise ValueError(
            f'pos_idx shape {tuple(pos_idx.shape)} and neg_idx shape {tuple(neg_idx.shape)} must have A='
            f'{num_anchors} rows, as anchors (shape {tuple(anchors.shape)})')
    num_entries = bank.shape[0]
    _check_index_range('pos_idx', pos_idx, num_entries, 'rows of bank')
    _check_index_range('neg_idx', neg_idx, num_entries, 'rows of bank')

    device_type = anchors.device.type
    matmul_dtype = autocast_dtype(device_type) or torch.float32  # see contrast_common's docstring (precision)
    if num_anchors == 0:
        loss = anchors.float().sum(dim=1) * 0.0  # shape (0,), connected to the graph of anchors
        empty = loss.detach()
        return (loss, empty, empty) if return_cos else loss
    with no_autocast(device_type):
        keys = F.normalize(bank.detach().float(), dim=-1).to(matmul_dtype).t()  # (L, Q), cast once
        columns = torch.cat([pos_idx.long().unsqueeze(1), neg_idx.long()], dim=1)  # (A, 1 + N_s)
        unit = F.normalize(anchors.float(), dim=-1).to(matmul_dtype)  # (A, L)
        cos = _GatheredBankCosines.apply(unit, keys, columns, int(chunk_size))  # (A, 1 + N_s), fp32
        logits = cos / temperature
        loss = torch.logsumexp(logits, dim=1) - logits[:, 0]
    if return_cos:
        return loss, cos[:, 0].detach(), cos[:, 1:].detach().mean(dim=1)
    return loss


def class_mean_loss(per_anchor_loss: Tensor,
                    anchor_classes: Tensor,
                    num_classes: int,
                    *,
                    reduction: str = 'paper') -> Tensor:
    """``L_CTR``: the per-class means of the per-anchor losses (``L^c_CTR`` of Eq. 10), averaged over classes.

    ``reduction`` chooses the average over classes:

    * ``'paper'`` (default): ``(1/C) sum_c L^c_CTR`` with ``C = num_classes``, as in the paper; a class with
      no anchor contributes 0 but still counts in ``C``.
    * ``'present'``: the mean over the classes that have anchors (U2PL's convention). It equals
      ``'paper' * C / C_present``, so it scales the effective ``lambda_2`` of Eq. 11 up by ``C / C_present``
      (per batch), i.e. it is not a drop-in replacement at the same ``lambda_2``.

    With no anchor at all the result is 0 (never NaN), connected to the graph of ``per_anchor_loss`` so that
    ``backward()`` works.

    Args:
        per_anchor_loss: Loss of each anchor (:func:`part_infonce_from_bank`), shape (A,).
        anchor_classes: Class of each anchor, integer (A,), values in [0, C).
        num_classes: C, >= 1.
        reduction: ``'paper'`` or ``'present'``.

    Returns:
        Scalar fp32 tensor.

    Raises:
        ValueError: If a shape or dtype is wrong, a class is out of range, or ``num_classes``/``reduction`` is
            invalid.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f'reduction must be one of {REDUCTIONS}, got reduction={reduction!r}')
    _check_ndim('per_anchor_loss', per_anchor_loss, 1, '(A,)')
    _check_ndim('anchor_classes', anchor_classes, 1, '(A,)')
    _check_integer_dtype('anchor_classes', anchor_classes)
    positive_int('num_classes', num_classes)
    if anchor_classes.shape != per_anchor_loss.shape:
        raise ValueError(
            f'anchor_classes shape {tuple(anchor_classes.shape)} does not match per_anchor_loss shape '
            f'{tuple(per_anchor_loss.shape)}')
    _check_index_range('anchor_classes', anchor_classes, num_classes, 'classes')
    classes = anchor_classes.long()
    loss = per_anchor_loss.float()
    sums = loss.new_zeros(num_classes).index_add(0, classes, loss)
    counts = torch.bincount(classes, minlength=num_classes)
    per_class = sums / counts.clamp_min(1).float()
    if reduction == 'paper':
        return per_class.sum() / num_classes
    return per_class.sum() / (counts > 0).sum().clamp_min(1).float()
