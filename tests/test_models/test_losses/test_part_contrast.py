"""Pixel-to-part contrast: part assignment (Eq. 7), MAP (Eq. 8), anchors (Eq. 9), InfoNCE (Eq. 10), L_CTR, Eq. 12."""
import math
from collections import Counter
from typing import List, Optional, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from mmseg_esl.models.losses import (
    assign_parts,
    batch_part_means,
    class_mean_loss,
    gather_pixels,
    masked_average_pool,
    momentum_update_prototypes_,
    part_infonce,
    part_infonce_from_bank,
    part_weighted_sums,
    sample_anchors,
    upsampled_masked_average_pool,
)

IGNORE = 255
#: log(1 + 255 / e^2): an anchor equal to its positive and orthogonal to 255 negatives, sigma = 0.5 (Eq. 10).
GOLDEN_255 = 3.5698283492601246


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_maps(n: int, h: int, w: int, num_classes: int, seed: int, present: Optional[Tuple[int, ...]] = None,
                ignore_frac: float = 0.2) -> torch.Tensor:
    """A random class map with about ``ignore_frac`` ignored pixels, drawing only the classes in ``present``."""
    g = seeded(seed)
    present = tuple(range(num_classes)) if present is None else present
    choice = torch.randint(len(present), (n, h, w), generator=g)
    class_map = torch.tensor(present)[choice]
    return torch.where(torch.rand((n, h, w), generator=g) < ignore_frac, IGNORE, class_map)


# ----------------------------------------------------- naive references: one pixel / anchor at a time, float64


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()))


def reference_assign(feats, class_map, prototypes) -> torch.Tensor:
    n, _, h, w = feats.shape
    out = torch.full((n, h, w), -9, dtype=torch.long)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                c = int(class_map[i, y, x])
                if c == IGNORE:
                    out[i, y, x] = -1
                    continue
                sims = [cosine(feats[i, :, y, x], proto) for proto in prototypes[c]]
                out[i, y, x] = max(range(len(sims)), key=lambda k: (sims[k], -k))
    return out


def reference_pool(feats, class_map, part_map, num_classes, num_parts):
    n, dim, h, w = feats.shape
    sums = torch.zeros((n, num_classes, num_parts, dim), dtype=torch.float64)
    counts = torch.zeros((n, num_classes, num_parts), dtype=torch.long)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                c, k = int(class_map[i, y, x]), int(part_map[i, y, x])
                if c == IGNORE or k < 0:
                    continue
                sums[i, c, k] += feats[i, :, y, x].double()
                counts[i, c, k] += 1
    means = torch.zeros_like(sums)
    for i in range(n):
        for c in range(num_classes):
            for k in range(num_parts):
                if counts[i, c, k]:
                    means[i, c, k] = sums[i, c, k] / int(counts[i, c, k])
    return means, counts


def reference_infonce(anchors, positives, negatives, temperature) -> List[float]:
    losses = []
    for j in range(anchors.shape[0]):
        pos = math.exp(cosine(anchors[j], positives[j]) / temperature)
        neg = sum(math.exp(cosine(anchors[j], v) / temperature) for v in negatives[j])
        losses.append(-math.log(pos / (pos + neg)))
    return losses


def random_bank_problem(seed: int, num_anchors=10, num_entries=40, num_neg=7, dim=6):
    g = seeded(seed)
    anchors = torch.randn((num_anchors, dim), generator=g)
    bank = torch.randn((num_entries, dim), generator=g)
    pos_idx = torch.randint(num_entries, (num_anchors,), generator=g)
    neg_idx = torch.randint(num_entries, (num_anchors, num_neg), generator=g)
    return anchors, bank, pos_idx, neg_idx


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


# ------------------------------------------------------------------------------------------------------ Eq. 7


@pytest.mark.parametrize('num_parts', [1, 3])
def test_assign_parts_matches_reference(num_parts):
    g = seeded(11)
    num_classes = 5
    feats = torch.randn((2, 6, 4, 5), generator=g)
    prototypes = torch.randn((num_classes, num_parts, 6), generator=g) * torch.rand((num_classes, num_parts, 1),
                                                                                    generator=g)
    class_map = random_maps(2, 4, 5, num_classes, seed=12, present=(0, 2, 4))  # 1 and 3 absent
    parts = assign_parts(feats, class_map, prototypes)
    assert parts.dtype == torch.long and parts.shape == (2, 4, 5)
    assert torch.equal(parts, reference_assign(feats, class_map, prototypes))
    assert torch.equal(parts == -1, class_map == IGNORE)
    if num_parts == 1:
        assert set(parts.unique().tolist()) <= {-1, 0}


@pytest.mark.parametrize('align_corners', [False, True])
def test_assign_parts_at_a_higher_resolution_upsamples_the_cosine_map(align_corners):
    """Eq. 7 at stride 4 from stride-8 features: per-pixel cosines are upsampled, never the features."""
    g = seeded(13)
    num_classes, num_parts = 3, 4
    feats = torch.randn((2, 6, 4, 5), generator=g) * torch.rand((2, 1, 4, 5), generator=g)
    prototypes = torch.randn((num_classes, num_parts, 6), generator=g)
    class_map = random_maps(2, 8, 10, num_classes, seed=14, present=(0, 2))
    parts = assign_parts(feats, class_map, prototypes, align_corners=align_corners)
    # Naive reference: cosine of every low-resolution pixel with every prototype, upsampled, then per pixel.
    cos = torch.zeros(2, num_classes, num_parts, 4, 5)
    for n in range(2):
        for c in range(num_classes):
            for k in range(num_parts):
                for y in range(4):
                    for x in range(5):
                        cos[n, c, k, y, x] = F.cosine_similarity(feats[n, :, y, x], prototypes[c, k], dim=0)
    up = F.interpolate(cos.reshape(2, -1, 4, 5), size=(8, 10), mode='bilinear', align_corners=align_corners)
    up = up.reshape(2, num_classes, num_parts, 8, 10)
    for n in range(2):
        for y in range(8):
            for x in range(10):
                c = int(class_map[n, y, x])
                expected = -1 if c == IGNORE else int(up[n, c, :, y, x].argmax())
                assert int(parts[n, y, x]) == expected


def test_assign_parts_is_scale_invariant_and_breaks_ties_low():
    prototypes = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])  # C=1, K=3; parts 1 and 2 tie
    feats = torch.tensor([[3.0, 0.0], [0.1, 5.0], [0.0, 0.0]]).t().reshape(1, 2, 1, 3)
    class_map = torch.zeros((1, 1, 3), dtype=torch.long)
    assert assign_parts(feats, class_map, prototypes).tolist() == [[[0, 1, 0]]]
    # Scaling a prototype does not change the cosine (Eq. 7), unlike a dot product.
    scaled = prototypes * torch.tensor([[[100.0], [0.01], [1.0]]])
    assert assign_parts(feats, class_map, scaled).tolist() == [[[0, 1, 0]]]


def test_assign_parts_no_grad_and_half_input():
    g = seeded(2)
    feats = torch.randn((1, 4, 3, 3), generator=g, requires_grad=True)
    prototypes = torch.randn((2, 2, 4), generator=g)
    class_map = torch.randint(2, (1, 3, 3), generator=g)
    parts = assign_parts(feats, class_map, prototypes)
    assert not parts.requires_grad
    assert torch.equal(assign_parts(feats.detach().double(), class_map, prototypes), parts)


def test_assign_parts_bad_arguments():
    feats, prototypes = torch.randn(1, 4, 3, 3), torch.randn(3, 2, 4)
    good = torch.zeros((1, 3, 3), dtype=torch.long)
    with pytest.raises(ValueError, match='class_map.* 7'):
        assign_parts(feats, torch.full_like(good, 7), prototypes)
    bad = good.clone()
    bad[0, 1, 2] = -3
    with pytest.raises(ValueError, match='-3'):
        assign_parts(feats, bad, prototypes)
    with pytest.raises(ValueError, match='class_map batch size'):
        assign_parts(feats, torch.zeros((2, 3, 3), dtype=torch.long), prototypes)
    with pytest.raises(ValueError, match='class_map'):
        assign_parts(feats, good.float(), prototypes)
    with pytest.raises(ValueError, match="L'"):
        assign_parts(feats, good, torch.randn(3, 2, 5))
    with pytest.raises(ValueError, match='prototypes'):
        assign_parts(feats, good, torch.randn(3, 4))
    with pytest.raises(ValueError, match='ignore_index'):
        assign_parts(feats, good, prototypes, ignore_index=2)


# ------------------------------------------------------------------------------------------------------ Eq. 8


@pytest.mark.parametrize('num_parts', [1, 3])
def test_masked_average_pool_matches_reference(num_parts):
    g = seeded(21)
    num_classes = 4
    feats = torch.randn((3, 5, 4, 6), generator=g)
    class_map = random_maps(3, 4, 6, num_classes, seed=22, present=(0, 1, 3))  # class 2 absent
    part_map = torch.randint(-1, num_parts, (3, 4, 6), generator=g)  # some -1 (no part)
    part_map = torch.where(class_map == IGNORE, torch.randint(num_parts, (3, 4, 6), generator=g), part_map)
    means, counts = masked_average_pool(feats, class_map, part_map, num_classes, num_parts)
    ref_means, ref_counts = reference_pool(feats, class_map, part_map, num_classes, num_parts)
    assert means.shape == (3, num_classes, num_parts, 5) and means.dtype == torch.float32
    assert counts.shape == (3, num_classes, num_parts) and counts.dtype == torch.long
    assert torch.equal(counts, ref_counts)
    torch.testing.assert_close(means.double(), ref_means, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(means).all()
    assert (counts[:, 2] == 0).all() and (means[:, 2] == 0).all()


def test_masked_average_pool_gradient_is_one_over_count():
    g = seeded(23)
    feats = torch.randn((2, 3, 3, 4), generator=g, requires_grad=True)
    class_map = random_maps(2, 3, 4, 2, seed=24)
    part_map = torch.where(class_map == IGNORE, -1, torch.randint(2, (2, 3, 4), generator=g))
    means, counts = masked_average_pool(feats, class_map, part_map, 2, 2)
    means.sum().backward()
    for i in range(2):
        for y in range(3):
            for x in range(4):
                c, k = int(class_map[i, y, x]), int(part_map[i, y, x])
                expected = 0.0 if k < 0 else 1.0 / int(counts[i, c, k])
                assert feats.grad[i, :, y, x].tolist() == pytest.approx([expected] * 3)


def test_assign_then_pool_counts_every_labelled_pixel_once():
    g = seeded(25)
    feats = torch.randn((2, 8, 5, 5), generator=g)
    class_map = random_maps(2, 5, 5, 3, seed=26)
    parts = assign_parts(feats, class_map, torch.randn((3, 4, 8), generator=g))
    _, counts = masked_average_pool(feats, class_map, parts, 3, 4)
    assert counts.sum(dim=(1, 2)).tolist() == (class_map != IGNORE).sum(dim=(1, 2)).tolist()


@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('num_parts', [1, 3])
def test_upsampled_pool_equals_pooling_the_resized_features(align_corners, num_parts):
    """Eq. 12's MAP of E^t at the masks' resolution, without resizing E^t, equals MAP of the resized E^t."""
    g = seeded(21)
    num_classes = 4
    feats = torch.randn((2, 5, 4, 6), generator=g, requires_grad=True)
    class_map = random_maps(2, 9, 13, num_classes, seed=22, present=(0, 1, 3))  # class 2 absent, 255s present
    part_map = torch.randint(0, num_parts, (2, 9, 13), generator=g)
    part_map[class_map == IGNORE] = -1
    means, counts = upsampled_masked_average_pool(feats, class_map, part_map, num_classes, num_parts,
                                                  align_corners=align_corners)
    resized = F.interpolate(feats, size=(9, 13), mode='bilinear', align_corners=align_corners)
    ref_means, ref_counts = reference_pool(resized.detach(), class_map, part_map, num_classes, num_parts)
    assert torch.equal(counts, ref_counts) and counts[:, 2].sum() == 0
    torch.testing.assert_close(means.detach().double(), ref_means.double(), rtol=1e-5, atol=1e-5)
    # Same gradient as pooling the resized features (the operation is linear in feats).
    g_out = torch.randn(means.shape, generator=g)
    (grad,) = torch.autograd.grad((means * g_out).sum(), feats)
    via_resize, _ = masked_average_pool(resized, class_map, part_map, num_classes, num_parts)
    (ref_grad,) = torch.autograd.grad((via_resize * g_out).sum(), feats)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_upsampled_pool_at_the_same_resolution_is_plain_pooling():
    g = seeded(23)
    feats = torch.randn((3, 4, 5, 5), generator=g)
    class_map = random_maps(3, 5, 5, 3, seed=24)
    part_map = torch.where(class_map == IGNORE, -1, torch.randint(0, 2, (3, 5, 5), generator=g))
    means, counts = upsampled_masked_average_pool(feats, class_map, part_map, 3, 2)
    ref_means, ref_counts = masked_average_pool(feats, class_map, part_map, 3, 2)
    assert torch.equal(counts, ref_counts)
    torch.testing.assert_close(means, ref_means, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match='batch size'):
        upsampled_masked_average_pool(feats[:2], class_map, part_map, 3, 2)
    with pytest.raises(ValueError, match='part_map.*-2'):
        upsampled_masked_average_pool(feats, class_map, torch.full_like(part_map, -2), 3, 2)


def test_masked_average_pool_bad_arguments():
    feats = torch.randn(1, 2, 3, 3)
    classes, parts = torch.zeros((1, 3, 3), dtype=torch.long), torch.zeros((1, 3, 3), dtype=torch.long)
    with pytest.raises(ValueError, match='part_map.* 3'):
        masked_average_pool(feats, classes, parts + 3, 2, 3)
    with pytest.raises(ValueError, match='-2'):
        masked_average_pool(feats, classes, parts - 2, 2, 3)
    with pytest.raises(ValueError, match='class_map.* 5'):
        masked_average_pool(feats, classes + 5, parts, 2, 3)
    with pytest.raises(ValueError, match='part_map shape'):
        masked_average_pool(feats, classes, torch.zeros((1, 6, 6), dtype=torch.long), 2, 3)
    with pytest.raises(ValueError, match='num_classes'):
        masked_average_pool(feats, classes, parts, 0, 3)
    with pytest.raises(ValueError, match='num_parts'):
        masked_average_pool(feats, classes, parts, 2, 1.5)


# ------------------------------------------------------------------------------------------------------ Eq. 9


def labelled_grid(class_sizes, width=10, seed=0):
    """A (2, H, width) class map holding ``class_sizes[c]`` valid pixels of class c, plus invalid noise."""
    g = seeded(seed)
    values = [c for c, size in class_sizes.items() for _ in range(size)]
    total = len(values)
    height = -(-2 * total // (2 * width)) + 2
    n_pix = 2 * height * width
    class_map = torch.randint(len(class_sizes), (n_pix, ), generator=g)  # invalid pixels: any class
    valid = torch.zeros(n_pix, dtype=torch.bool)
    slots = torch.randperm(n_pix, generator=g)[:total]
    class_map[slots] = torch.tensor(values)
    valid[slots] = True
    return class_map.reshape(2, height, width), valid.reshape(2, height, width)


SIZES = {0: 30, 1: 7, 2: 1, 4: 100, 5: 0, 6: 25}


@pytest.mark.parametrize('ratio,max_per_class,expected', [
    (0.1, None, {0: 3, 1: 1, 2: 1, 4: 10, 6: 3}),
    (0.25, None, {0: 8, 1: 2, 2: 1, 4: 25, 6: 7}),
    (0.1, 5, {0: 3, 1: 1, 2: 1, 4: 5, 6: 3}),
    (1.0, 2, {0: 2, 1: 2, 2: 1, 4: 2, 6: 2}),
    (1.0, None, {0: 30, 1: 7, 2: 1, 4: 100, 6: 25}),
])
def test_sample_anchors_counts_follow_ceil_rule(ratio, max_per_class, expected):
    class_map, valid = labelled_grid(SIZES)
    idx, classes = sample_anchors(class_map, valid, ratio=ratio, max_per_class=max_per_class, generator=seeded(1))
    assert idx.dtype == torch.long and classes.dtype == torch.long
    assert dict(Counter(classes.tolist())) == expected
    assert expected == {c: min(math.ceil(round(ratio * m, 9)), max_per_class or m) for c, m in SIZES.items() if m}


def test_sample_anchors_only_valid_unique_grouped_by_class():
    class_map, valid = labelled_grid(SIZES, seed=4)
    class_map[0, 0, 0], valid[0, 0, 0] = IGNORE, True  # ignore_index never qualifies
    idx, classes = sample_anchors(class_map, valid, ratio=0.3, generator=seeded(2))
    assert valid.reshape(-1)[idx].all()
    assert torch.equal(class_map.reshape(-1)[idx], classes)
    assert idx.unique().numel() == idx.numel()
    assert 0 not in idx.tolist()
    assert classes.tolist() == sorted(classes.tolist())


def test_sample_anchors_reproducible_with_generator():
    class_map, valid = labelled_grid(SIZES, seed=5)
    first = sample_anchors(class_map, valid, generator=seeded(7))
    again = sample_anchors(class_map, valid, generator=seeded(7))
    other = sample_anchors(class_map, valid, generator=seeded(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    assert sample_anchors(class_map, valid)[0].numel() == first[0].numel()  # global generator works too


def test_sample_anchors_is_uniform_within_a_class():
    class_map, valid = labelled_grid({0: 20, 1: 8}, seed=6)
    draws = 2000
    g = seeded(9)
    hits = torch.zeros(class_map.numel())
    for _ in range(draws):
        idx, _ = sample_anchors(class_map, valid, ratio=0.25, generator=g)
        hits[idx] += 1
    flat_valid, flat_classes = valid.reshape(-1), class_map.reshape(-1)
    for c, size in ((0, 20), (1, 8)):
        p = math.ceil(0.25 * size) / size
        counts = hits[flat_valid & (flat_classes == c)]
        sd = math.sqrt(draws * p * (1 - p))
        assert (counts - draws * p).abs().max() < 5 * sd
    assert hits[~flat_valid].sum() == 0


def test_sample_anchors_empty():
    class_map = torch.zeros((1, 3, 3), dtype=torch.long)
    idx, classes = sample_anchors(class_map, torch.zeros((1, 3, 3), dtype=torch.bool))
    assert idx.shape == (0, ) and classes.shape == (0, ) and idx.dtype == torch.long


def test_sample_anchors_bad_arguments():
    class_map, valid = torch.zeros((1, 3, 3), dtype=torch.long), torch.ones((1, 3, 3), dtype=torch.bool)
    for ratio in (0, 1.5, -0.1, True):
        with pytest.raises(ValueError, match='ratio'):
            sample_anchors(class_map, valid, ratio=ratio)
    with pytest.raises(ValueError, match='max_per_class'):
        sample_anchors(class_map, valid, max_per_class=0)
    with pytest.raises(ValueError, match='valid'):
        sample_anchors(class_map, valid.float())
    with pytest.raises(ValueError, match='valid shape'):
        sample_anchors(class_map, valid[:, :2])
    with pytest.raises(ValueError, match='-4'):
        sample_anchors(class_map - 4, valid)


def test_gather_pixels_matches_permuted_features():
    g = seeded(31)
    feats = torch.randn((2, 5, 3, 4), generator=g)
    idx = torch.tensor([0, 5, 11, 12, 23, 7])
    expected = feats.permute(0, 2, 3, 1).reshape(-1, 5)[idx]
    assert torch.equal(gather_pixels(feats, idx), expected)
    with pytest.raises(ValueError, match='flat_index.* 24'):
        gather_pixels(feats, torch.tensor([24]))


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


# ----------------------------------------------------------------------------------------------------- Eq. 12


def test_momentum_update_moves_present_parts_only():
    prototypes = torch.ones((2, 2, 3))
    storage = prototypes.data_ptr()
    batch_means = torch.full((2, 2, 3), 100.0)  # garbage where absent: must not leak
    batch_means[0, 0] = torch.tensor([10.0, 0.0, -10.0])
    batch_means[1, 1] = torch.tensor([2.0, 2.0, 2.0])
    counts = torch.tensor([[4, 0], [0, 1]])
    assert momentum_update_prototypes_(prototypes, batch_means, counts, momentum=0.9) is None
    assert prototypes.data_ptr() == storage
    torch.testing.assert_close(prototypes[0, 0], torch.tensor([1.9, 0.9, -0.1]))
    torch.testing.assert_close(prototypes[1, 1], torch.tensor([1.1, 1.1, 1.1]))
    assert torch.equal(prototypes[0, 1], torch.ones(3)) and torch.equal(prototypes[1, 0], torch.ones(3))

    momentum_update_prototypes_(prototypes, batch_means, counts)  # paper theta = 0.99
    torch.testing.assert_close(prototypes[0, 0], 0.99 * torch.tensor([1.9, 0.9, -0.1]) + 0.01 * batch_means[0, 0])
    momentum_update_prototypes_(prototypes, batch_means, counts, momentum=0.0)
    torch.testing.assert_close(prototypes[1, 1], batch_means[1, 1])
    before = prototypes.clone()
    momentum_update_prototypes_(prototypes, batch_means, counts, momentum=1.0)
    assert torch.equal(prototypes, before)


def test_momentum_update_bad_arguments():
    prototypes = torch.ones((2, 2, 3))
    with pytest.raises(ValueError, match='momentum'):
        momentum_update_prototypes_(prototypes, prototypes, torch.ones(2, 2), momentum=1.5)
    with pytest.raises(ValueError, match='batch_means shape'):
        momentum_update_prototypes_(prototypes, prototypes[:1], torch.ones(2, 2))
    with pytest.raises(ValueError, match='batch_counts shape'):
        momentum_update_prototypes_(prototypes, prototypes, torch.ones(2, 3))


def by_hand_means() -> Tuple[torch.Tensor, torch.Tensor]:
    """N=2 images, C=1, K=3, L=2: part 0 in both images, part 1 in image 1 only, part 2 in none."""
    means = torch.tensor([[[[1.0, 2.0], [9.0, 9.0], [0.0, 0.0]]], [[[4.0, 8.0], [3.0, -3.0], [0.0, 0.0]]]])
    counts = torch.tensor([[[1, 0, 0]], [[3, 2, 0]]])
    return means, counts


def test_batch_part_means_is_pixel_weighted():
    means, counts = by_hand_means()
    batch, total = batch_part_means(means, counts)
    assert batch.shape == (1, 3, 2) and total.tolist() == [[4, 2, 0]]
    torch.testing.assert_close(batch[0, 0], torch.tensor([(1 + 3 * 4) / 4, (2 + 3 * 8) / 4]))
    torch.testing.assert_close(batch[0, 1], torch.tensor([3.0, -3.0]))  # the 9s of image 0 have count 0
    assert torch.equal(batch[0, 2], torch.zeros(2))
    weighted, total = part_weighted_sums(means, counts)
    torch.testing.assert_close(weighted[0, 0], torch.tensor([13.0, 26.0]))
    assert total.dtype == torch.long


def test_batch_part_means_all_reduces_sums_before_dividing():
    means, counts = by_hand_means()
    # Another process holds part 2 (count 2, mean (5, 5)) and part 0 (count 4, mean (0, 0)).
    other = {torch.float32: torch.tensor([[[0.0, 0.0], [0.0, 0.0], [10.0, 10.0]]]),
             torch.long: torch.tensor([[4, 0, 2]])}
    calls = []

    def fake_all_reduce(tensor):
        calls.append(tensor.dtype)
        tensor.add_(other[tensor.dtype])

    batch, total = batch_part_means(means, counts, all_reduce=fake_all_reduce)
    assert calls == [torch.float32, torch.long]
    assert total.tolist() == [[8, 2, 2]]
    torch.testing.assert_close(batch[0, 0], torch.tensor([13 / 8, 26 / 8]))
    torch.testing.assert_close(batch[0, 2], torch.tensor([5.0, 5.0]))


def test_batch_part_means_equals_pooling_the_whole_batch_at_once():
    g = seeded(41)
    feats = torch.randn((3, 4, 5, 6), generator=g)
    class_map = random_maps(3, 5, 6, 3, seed=42)
    parts = torch.where(class_map == IGNORE, -1, torch.randint(2, (3, 5, 6), generator=g))
    batch, total = batch_part_means(*masked_average_pool(feats, class_map, parts, 3, 2))
    # The batch side by side as one wide image.
    wide = lambda t: torch.cat(list(t), dim=-1).unsqueeze(0)  # noqa: E731
    once, once_counts = masked_average_pool(wide(feats), wide(class_map), wide(parts), 3, 2)
    torch.testing.assert_close(batch, once[0])
    assert torch.equal(total, once_counts[0])


def test_batch_part_means_bad_arguments():
    means, counts = by_hand_means()
    with pytest.raises(ValueError, match='counts shape'):
        batch_part_means(means, counts[:, :, :2])
    with pytest.raises(ValueError, match='means'):
        batch_part_means(means[0], counts)


# ------------------------------------------------------------------------------------------------- all at once


def test_pipeline_gives_finite_loss_with_gradient_to_student_only():
    g = seeded(51)
    num_classes, num_parts, dim = 3, 2, 8
    teacher_feats = torch.randn((2, dim, 6, 6), generator=g)
    student_feats = torch.randn((2, dim, 6, 6), generator=g, requires_grad=True)
    class_map = random_maps(2, 6, 6, num_classes, seed=52)
    prototypes = torch.randn((num_classes, num_parts, dim), generator=g)
    parts = assign_parts(teacher_feats, class_map, prototypes)
    means, counts = masked_average_pool(teacher_feats, class_map, parts, num_classes, num_parts)
    bank = means.reshape(-1, dim)  # a stand-in bank: row (n * C + c) * K + k
    idx, classes = sample_anchors(class_map, class_map != IGNORE, ratio=0.5, generator=g)
    anchor_parts = parts.reshape(-1)[idx]
    image = idx // 36
    pos_idx = (image * num_classes + classes) * num_parts + anchor_parts
    neg_idx = torch.stack([(pos_idx + s) % bank.shape[0] for s in range(1, 5)], dim=1)
    anchors = gather_pixels(student_feats, idx)
    loss = class_mean_loss(part_infonce_from_bank(anchors, bank, pos_idx, neg_idx, chunk_size=5), classes,
                           num_classes)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert student_feats.grad.abs().sum() > 0
    momentum_update_prototypes_(prototypes, *batch_part_means(means, counts))
    assert torch.isfinite(prototypes).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    g = seeded(61)
    feats = torch.randn((2, 8, 6, 6), generator=g)
    class_map = random_maps(2, 6, 6, 3, seed=62)
    prototypes = torch.randn((3, 2, 8), generator=g)
    cuda = torch.device('cuda')
    parts = assign_parts(feats, class_map, prototypes)
    assert torch.equal(assign_parts(feats.to(cuda), class_map.to(cuda), prototypes.to(cuda)).cpu(), parts)
    means, counts = masked_average_pool(feats, class_map, parts, 3, 2)
    means_cuda, counts_cuda = masked_average_pool(feats.to(cuda), class_map.to(cuda), parts.to(cuda), 3, 2)
    torch.testing.assert_close(means_cuda.cpu(), means)
    assert torch.equal(counts_cuda.cpu(), counts)
    valid = class_map != IGNORE
    idx, classes = sample_anchors(class_map, valid, ratio=0.5, generator=seeded(1))
    idx_cuda, classes_cuda = sample_anchors(class_map.to(cuda), valid.to(cuda), ratio=0.5, generator=seeded(1))
    assert idx_cuda.device.type == 'cuda'
    assert torch.equal(idx_cuda.cpu(), idx) and torch.equal(classes_cuda.cpu(), classes)
    anchors, bank, pos_idx, neg_idx = random_bank_problem(seed=63)
    loss = part_infonce_from_bank(anchors, bank, pos_idx, neg_idx, chunk_size=3)
    loss_cuda = part_infonce_from_bank(*(t.to(cuda) for t in (anchors, bank, pos_idx, neg_idx)), chunk_size=3)
    torch.testing.assert_close(loss_cuda.cpu(), loss)
    classes = torch.arange(loss.numel()) % 3
    torch.testing.assert_close(class_mean_loss(loss_cuda, classes.to(cuda), 3).cpu(), class_mean_loss(loss, classes, 3))
    prototypes_cuda = prototypes.to(cuda)
    momentum_update_prototypes_(prototypes, *batch_part_means(means, counts))
    momentum_update_prototypes_(prototypes_cuda, *batch_part_means(means_cuda, counts_cuda))
    torch.testing.assert_close(prototypes_cuda.cpu(), prototypes)
