"""Eq. 10 and L_CTR (``models/losses/infonce.py``): part InfoNCE against samples and the bank, class mean."""
import math

import pytest
import torch
from part_contrast_helpers import cosine, random_bank_problem, reference_infonce, seeded
from torch.utils._python_dispatch import TorchDispatchMode

from mmseg_esl.models.losses import class_mean_loss, part_infonce, part_infonce_from_bank

#: log(1 + 255 / e^2): an anchor equal to its positive and orthogonal to 255 negatives, sigma = 0.5 (Eq. 10).
GOLDEN_255 = 3.5698283492601246


# ------------------------------------------------------------------------------------------------------ Eq. 10


def orthogonal_problem():
    """Anchor e_0, positive e_0, negatives e_1 .. e_255 (rows of the identity), as samples and as a bank."""
    eye = torch.eye(256)
    anchors, positives, negatives = eye[:1], eye[:1], eye[1:].unsqueeze(0)
    return anchors, positives, negatives, eye


def test_golden_value_255_orthogonal_negatives():
    assert math.log(1 + 255 / math.e ** 2) == pytest.approx(GOLDEN_255, abs=1e-15)
    anchors, positives, negatives, bank = orthogonal_problem()
    loss = part_infonce(anchors, positives, negatives, temperature=0.5)
    assert loss.shape == (1, ) and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(GOLDEN_255, abs=1e-5)
    from_bank = part_infonce_from_bank(anchors, bank, torch.tensor([0]), torch.arange(1, 256).unsqueeze(0), 0.5)
    assert from_bank.item() == pytest.approx(GOLDEN_255, abs=1e-5)
    # Cosine ignores the norms: scaled copies give the same value.
    scaled = part_infonce(3 * anchors, 0.5 * positives, 7 * negatives, temperature=0.5)
    assert scaled.item() == pytest.approx(GOLDEN_255, abs=1e-5)


@pytest.mark.parametrize('temperature', [0.5, 0.1, 2.0])
def test_part_infonce_matches_reference(temperature):
    g = seeded(3)
    anchors, positives, negatives = (torch.randn(s, generator=g) for s in ((9, 6), (9, 6), (9, 5, 6)))
    loss = part_infonce(anchors, positives, negatives, temperature)
    expected = reference_infonce(anchors, positives, negatives, temperature)
    assert loss.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert (loss >= -1e-6).all()


def test_part_infonce_is_stable_at_small_temperature():
    anchors, positives, negatives, _ = orthogonal_problem()
    # sigma = 1e-3: exp(+-1000) over/underflows fp32, the logsumexp form does not: 1000 + log(255).
    worst = part_infonce(anchors, -positives, negatives, temperature=1e-3).item()
    assert worst == pytest.approx(1000.0 + math.log(255), rel=1e-5)
    assert part_infonce(anchors, positives, negatives, temperature=1e-3).item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize('chunk_size', [1, 3, 10, 4096])
def test_from_bank_matches_reference_and_samples_form(chunk_size):
    anchors, bank, pos_idx, neg_idx = random_bank_problem(seed=5)
    loss = part_infonce_from_bank(anchors, bank, pos_idx, neg_idx, 0.5, chunk_size=chunk_size)
    expected = reference_infonce(anchors, bank[pos_idx], bank[neg_idx], 0.5)
    assert loss.shape == (10, )
    assert loss.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    samples_form = part_infonce(anchors, bank[pos_idx], bank[neg_idx], 0.5)
    torch.testing.assert_close(loss, samples_form, rtol=1e-5, atol=1e-6)


def test_from_bank_returns_positive_and_mean_negative_cosines():
    anchors, bank, pos_idx, neg_idx = random_bank_problem(seed=6)
    loss, pos_cos, neg_cos = part_infonce_from_bank(anchors, bank, pos_idx, neg_idx, 0.5, chunk_size=3,
                                                    return_cos=True)
    torch.testing.assert_close(loss, part_infonce_from_bank(anchors, bank, pos_idx, neg_idx, 0.5))
    for a in range(anchors.shape[0]):
        assert pos_cos[a].item() == pytest.approx(cosine(anchors[a], bank[pos_idx[a]]), abs=1e-5)
        negs = [cosine(anchors[a], bank[i]) for i in neg_idx[a].tolist()]
        assert neg_cos[a].item() == pytest.approx(sum(negs) / len(negs), abs=1e-5)
    assert not pos_cos.requires_grad and not neg_cos.requires_grad
    empty = part_infonce_from_bank(anchors[:0], bank, pos_idx[:0], neg_idx[:0], return_cos=True)
    assert [t.shape for t in empty] == [(0, )] * 3


@pytest.mark.parametrize('chunk_size', [1, 4, 4096])
def test_from_bank_gradient_reaches_anchors_only_and_equals_samples_form(chunk_size):
    anchors, bank, pos_idx, neg_idx = random_bank_problem(seed=8)
    anchors_a = anchors.clone().requires_grad_(True)
    bank_a = bank.clone().requires_grad_(True)
    part_infonce_from_bank(anchors_a, bank_a, pos_idx, neg_idx, 0.5, chunk_size=chunk_size).sum().backward()
    assert bank_a.grad is None
    assert anchors_a.grad is not None and torch.isfinite(anchors_a.grad).all() and anchors_a.grad.abs().sum() > 0

    anchors_b = anchors.clone().requires_grad_(True)
    bank_b = bank.detach()
    part_infonce(anchors_b, bank_b[pos_idx], bank_b[neg_idx], 0.5).sum().backward()
    torch.testing.assert_close(anchors_a.grad, anchors_b.grad, rtol=1e-5, atol=1e-6)


class _MaxNumel(TorchDispatchMode):
    """Records the largest tensor produced by any op (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out, )):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_from_bank_never_builds_anchor_by_negative_by_dim_tensor():
    num_anchors, num_entries, num_neg, dim, chunk = 64, 50, 40, 32, 8
    anchors, bank, pos_idx, neg_idx = random_bank_problem(9, num_anchors, num_entries, num_neg, dim)
    anchors.requires_grad_(True)
    with _MaxNumel() as mode:
        part_infonce_from_bank(anchors, bank, pos_idx, neg_idx, 0.5, chunk_size=chunk).sum().backward()
    bound = max(chunk * num_entries, num_anchors * (1 + num_neg), num_entries * dim, num_anchors * dim)
    assert mode.largest <= bound < num_anchors * num_neg * dim


def test_from_bank_saves_no_anchor_by_bank_matrix_for_backward():
    """What autograd keeps between forward and backward stays O(A (1 + N_s) + A L + Q L), never A x Q.

    Plain ``(u @ keys).gather(...)`` would keep every chunk's (chunk, Q) similarity matrix (the backward of
    ``gather`` saves its source): A x Q values, 2.8 GB at paper scale. Counted with saved-tensor hooks.
    """
    num_anchors, num_entries, num_neg, dim, chunk = 300, 2000, 15, 16, 64
    anchors, bank, pos_idx, neg_idx = random_bank_problem(11, num_anchors, num_entries, num_neg, dim)
    anchors.requires_grad_(True)
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = part_infonce_from_bank(anchors, bank, pos_idx, neg_idx, 0.5, chunk_size=chunk)
    # keys (Q L), columns (A (1 + N_s)), normalise's input/norms (A L + A), logits and log-sum-exp (A (1 + N_s) + A).
    bound = num_entries * dim + 3 * num_anchors * (1 + num_neg) + 3 * num_anchors * dim
    assert sum(saved) <= bound < num_anchors * num_entries
    grad, = torch.autograd.grad(loss.sum(), anchors)
    reference = part_infonce(anchors, bank[pos_idx], bank[neg_idx], 0.5)
    expected, = torch.autograd.grad(reference.sum(), anchors)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)


def test_from_bank_with_no_anchors():
    bank = torch.randn(5, 4)
    anchors = torch.zeros((0, 4), requires_grad=True)
    no_index = torch.zeros(0, dtype=torch.long)
    loss = part_infonce_from_bank(anchors, bank, no_index, no_index.reshape(0, 3))
    assert loss.shape == (0, )
    total = class_mean_loss(loss, torch.zeros(0, dtype=torch.long), num_classes=3)
    total.backward()
    assert total.item() == 0.0


def test_infonce_bad_arguments():
    anchors, bank, pos_idx, neg_idx = random_bank_problem(seed=1)
    with pytest.raises(ValueError, match='temperature'):
        part_infonce(anchors, anchors, bank[neg_idx], temperature=0)
    with pytest.raises(ValueError, match='temperature'):
        part_infonce_from_bank(anchors, bank, pos_idx, neg_idx, temperature=float('nan'))
    with pytest.raises(ValueError, match='negatives'):
        part_infonce(anchors, anchors, bank)
    with pytest.raises(ValueError, match='positives'):
        part_infonce(anchors, anchors[:3], bank[neg_idx])
    with pytest.raises(ValueError, match='chunk_size'):
        part_infonce_from_bank(anchors, bank, pos_idx, neg_idx, chunk_size=0)
    with pytest.raises(ValueError, match='pos_idx.*40'):
        part_infonce_from_bank(anchors, bank, torch.full_like(pos_idx, 40), neg_idx)
    with pytest.raises(ValueError, match='neg_idx.*-1'):
        part_infonce_from_bank(anchors, bank, pos_idx, torch.full_like(neg_idx, -1))
    with pytest.raises(ValueError, match='neg_idx'):
        part_infonce_from_bank(anchors, bank, pos_idx, neg_idx.float())
    with pytest.raises(ValueError, match='bank'):
        part_infonce_from_bank(anchors, bank[:, :3], pos_idx, neg_idx)


# ------------------------------------------------------------------------------------------------------ L_CTR


def test_class_mean_loss_by_hand():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 6.0], requires_grad=True)
    classes = torch.tensor([0, 0, 1, 3, 3])
    # Class means: 0 -> 1.5, 1 -> 3, 3 -> 5; classes 2 and 4 have no anchor.
    paper = class_mean_loss(losses, classes, num_classes=5)
    assert paper.item() == pytest.approx((1.5 + 3 + 5) / 5)
    present = class_mean_loss(losses, classes, num_classes=5, reduction='present')
    assert present.item() == pytest.approx((1.5 + 3 + 5) / 3)
    paper.backward()
    assert losses.grad.tolist() == pytest.approx([1 / 10, 1 / 10, 1 / 5, 1 / 10, 1 / 10])


@pytest.mark.parametrize('reduction', ['paper', 'present'])
def test_class_mean_loss_empty_is_zero_and_connected(reduction):
    losses = torch.zeros(0, requires_grad=True)
    total = class_mean_loss(losses, torch.zeros(0, dtype=torch.long), 4, reduction=reduction)
    assert total.item() == 0.0 and torch.isfinite(total) and total.requires_grad
    total.backward()


def test_class_mean_loss_bad_arguments():
    losses, classes = torch.ones(3), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match='reduction'):
        class_mean_loss(losses, classes, 3, reduction='mean')
    with pytest.raises(ValueError, match='anchor_classes.* 3'):
        class_mean_loss(losses, classes + 1, 3)
    with pytest.raises(ValueError, match='anchor_classes shape'):
        class_mean_loss(losses, classes[:2], 3)
    with pytest.raises(ValueError, match='num_classes'):
        class_mean_loss(losses, classes, 0)
