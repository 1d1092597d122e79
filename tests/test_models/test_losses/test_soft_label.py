"""Dynamic Soft Label (Eq. 3-5), its soft cross-entropy (Eq. 6) and the registered DSLLoss."""
import math
from fractions import Fraction
from typing import List, Optional, Sequence

import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

import mmseg_esl  # noqa: F401  (registers DSLLoss)
from mmseg_esl.models.losses import DSLLoss, dominant_classes, dynamic_soft_label, hard_label, soft_cross_entropy

ETAS = (0.5, 0.8, 0.95, 0.99)
TOP_KS = (1, 3, 5)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def map_of(vectors: Sequence[Sequence[float]], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A (1, C, 1, P) probability map whose pixel ``j`` holds ``vectors[j]``."""
    return torch.tensor(vectors, dtype=dtype).t().reshape(1, len(vectors[0]), 1, len(vectors))


def pixels(t: torch.Tensor) -> List[list]:
    """The per-pixel class vectors of an (N, C, H, W) map, as Python lists, in (n, y, x) order."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]).tolist()


def random_probs(shape, seed: int, scale: float = 3.0) -> torch.Tensor:
    """Softmax of random logits; a per-pixel temperature mixes peaked and flat distributions."""
    g = seeded(seed)
    n, _, h, w = shape
    temperature = scale * torch.rand((n, 1, h, w), generator=g) + 0.2
    return (torch.randn(shape, generator=g) * temperature).softmax(dim=1)


# ----------------------------------------------------- naive reference: one pixel at a time, pure Python


def reference_mask(vec: Sequence, eta=None, top_k: Optional[int] = None) -> List[bool]:
    """Dominant classes of one pixel, straight from the text of Eq. 3-4 (works on floats or Fractions)."""
    ranked = sorted(vec, reverse=True)
    if top_k is not None:
        delta = ranked[top_k - 1]
    else:
        delta = ranked[-1]  # never reaching eta keeps every class
        running = 0
        for value in ranked:
            running += value
            if running >= eta:
                delta = value
                break
    return [value >= delta for value in vec]


def reference_label(vec: Sequence, mask: Sequence[bool]) -> List:
    kept = sum(v for v, m in zip(vec, mask) if m)
    return [v / kept if m else 0 for v, m in zip(vec, mask)]


# ----------------------------------------------------------------------------- golden values, by hand


def test_golden_tie_at_delta_is_included():
    # p = (.4, .25, .25, .1), eta = .6: sorted prefix sums .4, .65 -> C* = 2, delta = .25; both .25 are >= delta.
    probs = map_of([[0.4, 0.25, 0.25, 0.1], [0.1, 0.1, 0.1, 0.7]])
    mask = dominant_classes(probs, eta=0.6)
    assert mask[0, :, 0, 0].tolist() == [True, True, True, False]
    assert mask[0, :, 0, 1].tolist() == [False, False, False, True]  # .7 >= .6 alone
    label = dynamic_soft_label(probs, eta=0.6)
    expected = torch.tensor([0.4 / 0.9, 0.25 / 0.9, 0.25 / 0.9, 0.0])
    torch.testing.assert_close(label[0, :, 0, 0], expected)
    torch.testing.assert_close(label[0, :, 0, 1], torch.tensor([0.0, 0.0, 0.0, 1.0]))


@pytest.mark.parametrize('eta, expected_mask, expected_label', [
    # prefix sums .6, .9, .97, 1.0
    (0.95, [True, True, True, False], [0.6 / 0.97, 0.3 / 0.97, 0.07 / 0.97, 0.0]),
    (0.8, [True, True, False, False], [0.6 / 0.9, 0.3 / 0.9, 0.0, 0.0]),
    (0.5, [True, False, False, False], [1.0, 0.0, 0.0, 0.0]),
])
def test_golden_number_of_dominant_classes(eta, expected_mask, expected_label):
    # The vector sits at pixel (1, 2) of a (2, 4, 2, 3) map of other pixels.
    probs = torch.full((2, 4, 2, 3), 0.25)
    probs[1, :, 1, 2] = torch.tensor([0.6, 0.3, 0.07, 0.03])
    mask = dominant_classes(probs, eta=eta)
    assert mask[1, :, 1, 2].tolist() == expected_mask
    assert mask.sum(dim=1)[1, 1, 2].item() == sum(expected_mask)
    torch.testing.assert_close(dynamic_soft_label(probs, eta=eta)[1, :, 1, 2], torch.tensor(expected_label))
    assert mask[0].all()  # the uniform pixels: all four tie with delta


def test_prefix_reaching_eta_exactly_is_not_lost_to_fp32_rounding():
    # .45 + .35 = .8 exactly, but the fp32 sum falls one ulp short of fp32(.8): Eq. 4 keeps two classes.
    probs = map_of([[0.45, 0.35, 0.2, 0.0]])
    assert probs.cumsum(dim=1)[0, 1, 0, 0] < torch.tensor(0.8)  # the rounding this guards against
    assert dominant_classes(probs, eta=0.8)[0, :, 0, 0].tolist() == [True, True, False, False]


def test_top_k_golden():
    probs = map_of([[0.4, 0.25, 0.25, 0.1], [0.05, 0.5, 0.3, 0.15]])
    assert dominant_classes(probs, top_k=1)[0, :, 0, 0].tolist() == [True, False, False, False]
    # k = 2: the 2nd largest value .25 is tied, so three classes are kept.
    assert dominant_classes(probs, top_k=2)[0, :, 0, 0].tolist() == [True, True, True, False]
    assert dominant_classes(probs, top_k=3)[0, :, 0, 1].tolist() == [False, True, True, True]
    torch.testing.assert_close(dynamic_soft_label(probs, top_k=3)[0, :, 0, 1],
                               torch.tensor([0.0, 0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95]))


def test_eta_one_keeps_every_class():
    probs = map_of([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    mask = dominant_classes(probs, eta=1.0)
    assert mask[0, :, 0, 0].all()
    torch.testing.assert_close(dynamic_soft_label(probs, eta=1.0), probs)


# ------------------------------------------------------------------ equality with the naive reference


@pytest.mark.parametrize('shape', [(2, 5, 3, 4), (1, 21, 6, 6), (3, 8, 4, 2)])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_matches_naive_reference_on_random_maps(shape, seed):
    probs = random_probs(shape, seed)
    vectors = pixels(probs.double())
    counts = set()
    for eta in ETAS:
        mask = dominant_classes(probs, eta=eta)
        label = dynamic_soft_label(probs, eta=eta)
        ref_masks = [reference_mask(v, eta=eta) for v in vectors]
        assert pixels(mask) == ref_masks, f'eta={eta}'
        ref_labels = torch.tensor([reference_label(v, m) for v, m in zip(vectors, ref_masks)])
        torch.testing.assert_close(torch.tensor(pixels(label)), ref_labels.float())
        counts.update(sum(m) for m in ref_masks)
    for top_k in TOP_KS:
        mask = dominant_classes(probs, top_k=top_k)
        ref_masks = [reference_mask(v, top_k=top_k) for v in vectors]
        assert pixels(mask) == ref_masks, f'top_k={top_k}'
        ref_labels = torch.tensor([reference_label(v, m) for v, m in zip(vectors, ref_masks)])
        torch.testing.assert_close(torch.tensor(pixels(dynamic_soft_label(probs, top_k=top_k))), ref_labels.float())
    assert 1 in counts and max(counts) >= 3  # the maps exercise both hard and soft pixels


@pytest.mark.parametrize('seed', [0, 1])
def test_matches_exact_reference_on_quantised_maps_with_ties(seed):
    """Probabilities k/20 tie often and make prefix sums hit eta exactly; the reference uses exact fractions."""
    q, c, num_pixels = 20, 6, 300
    draws = torch.randint(0, c, (num_pixels, q), generator=seeded(seed))
    counts = F.one_hot(draws, c).sum(dim=1).tolist()  # (P, C) integers summing to q
    counts += [[6, 6, 4, 4, 0, 0], [5, 5, 5, 5, 0, 0], [8, 4, 4, 4, 0, 0], [9, 7, 4, 0, 0, 0]]  # .3 .3 .2 .2 ...
    probs = torch.tensor(counts, dtype=torch.float32).div(q).t().reshape(1, c, 1, -1)
    fractions = [[Fraction(k, q) for k in row] for row in counts]
    ties = 0
    for eta in ETAS:
        exact_eta = Fraction(str(eta))
        ref_masks = [reference_mask(v, eta=exact_eta) for v in fractions]
        assert pixels(dominant_classes(probs, eta=eta)) == ref_masks, f'eta={eta}'
        ref_labels = [[float(y) for y in reference_label(v, m)] for v, m in zip(fractions, ref_masks)]
        torch.testing.assert_close(torch.tensor(pixels(dynamic_soft_label(probs, eta=eta))), torch.tensor(ref_labels))
        ties += sum(sum(m) > len(set(v for v, k in zip(row, m) if k)) for row, m in zip(fractions, ref_masks))
    for top_k in TOP_KS:
        ref_masks = [reference_mask(v, top_k=top_k) for v in fractions]
        assert pixels(dominant_classes(probs, top_k=top_k)) == ref_masks, f'top_k={top_k}'
    assert ties > 0  # some dominant sets contain tied probabilities


# ------------------------------------------------------------------------- degeneration to hard label


def test_eta_below_max_probability_gives_argmax_one_hot():
    probs = random_probs((2, 21, 5, 5), seed=3)
    # max_c p_c >= 1/21 > .01 at every pixel
    torch.testing.assert_close(dynamic_soft_label(probs, eta=0.01), hard_label(probs))
    assert torch.equal(dominant_classes(probs, eta=0.01), hard_label(probs).bool())
    # eta = .5: exactly the pixels whose max is >= .5 are one-hot
    confident = probs.max(dim=1).values >= 0.5
    counts = dominant_classes(probs, eta=0.5).sum(dim=1)
    assert confident.any() and (~confident).any()
    assert (counts[confident] == 1).all() and (counts[~confident] > 1).all()


def test_hard_label_is_one_hot_argmax_in_input_dtype():
    probs = random_probs((2, 5, 3, 3), seed=4).half()
    label = hard_label(probs)
    assert label.dtype == torch.float16 and label.shape == probs.shape
    assert torch.equal(label.argmax(dim=1), probs.argmax(dim=1))
    assert torch.equal(label.sum(dim=1), torch.ones(2, 3, 3, dtype=torch.float16))


def test_dsl_loss_hard_mode_equals_one_hot_argmax():
    probs = random_probs((2, 6, 4, 4), seed=5)
    label = DSLLoss(mode='hard').pseudo_label(probs)
    expected = F.one_hot(probs.argmax(dim=1), 6).permute(0, 3, 1, 2).float()
    assert torch.equal(label, expected)


# --------------------------------------------------------------------------------- low precision inputs


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_low_precision_inputs_keep_dtype_and_match_fp32(dtype):
    probs32 = random_probs((2, 8, 6, 6), seed=6)
    low = probs32.to(dtype)
    label = dynamic_soft_label(low, eta=0.95)
    assert label.dtype == dtype and label.shape == low.shape
    # Same (rounded) input in fp32: identical dominant sets, values equal up to the output rounding.
    ref = dynamic_soft_label(low.float(), eta=0.95)
    tol = 1e-3 if dtype == torch.float16 else 8e-3
    torch.testing.assert_close(label.float(), ref, atol=tol, rtol=0)
    torch.testing.assert_close(label.float().sum(dim=1), torch.ones(2, 6, 6), atol=2 * tol, rtol=0)
    # Against the unrounded fp32 probabilities: only pixels near an eta boundary may differ.
    same_set = (dominant_classes(low) == dominant_classes(probs32)).all(dim=1)
    assert same_set.float().mean() > 0.9
    torch.testing.assert_close(label.float()[same_set.unsqueeze(1).expand_as(label)],
                               dynamic_soft_label(probs32)[same_set.unsqueeze(1).expand_as(label)],
                               atol=4 * tol, rtol=0)


def test_fp16_sum_short_of_eta_still_gives_a_valid_label():
    probs = torch.full((2, 11, 3, 3), 1 / 11, dtype=torch.float16)
    eta = 0.9999
    assert (probs.cumsum(dim=1)[:, -1] < eta).all()  # fp16 rounding: the probabilities never reach eta
    assert (probs.float().sum(dim=1) < eta).all()  # not in fp32 either
    label = dynamic_soft_label(probs, eta=eta)
    assert label.dtype == torch.float16 and torch.isfinite(label).all()
    assert dominant_classes(probs, eta=eta).all()  # the whole vector is kept
    torch.testing.assert_close(label.float().sum(dim=1), torch.ones(2, 3, 3), atol=2e-3, rtol=0)
    torch.testing.assert_close(dynamic_soft_label(probs, eta=1.0), label)


def test_all_zero_pixel_gives_zero_label_not_nan():
    probs = map_of([[0.0, 0.0, 0.0], [0.2, 0.7, 0.1]])
    label = dynamic_soft_label(probs)
    assert torch.isfinite(label).all()
    assert label[0, :, 0, 0].tolist() == [0.0, 0.0, 0.0]


# ----------------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize('kwargs, match', [
    (dict(eta=0.0), 'eta'),
    (dict(eta=1.5), 'eta'),
    (dict(eta=-0.1), 'eta'),
    (dict(eta=float('nan')), 'eta'),
    (dict(top_k=0), 'top_k'),
    (dict(top_k=5), r'top_k.*\[1, C=4\]'),
])
def test_dominant_classes_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dominant_classes(torch.full((1, 4, 2, 2), 0.25), **kwargs)


@pytest.mark.parametrize('fn', [dominant_classes, dynamic_soft_label, hard_label])
def test_probs_must_be_4d(fn):
    with pytest.raises(ValueError, match=r'probs must be 4-D.*\(4, 2, 2\)'):
        fn(torch.full((4, 2, 2), 0.25))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    probs = random_probs((2, 21, 16, 16), seed=7)
    for kwargs in (dict(eta=0.95), dict(top_k=5)):
        label = dynamic_soft_label(probs.cuda(), **kwargs)
        assert label.is_cuda
        torch.testing.assert_close(label.cpu(), dynamic_soft_label(probs, **kwargs))
    logits = torch.randn(2, 21, 16, 16)
    valid = torch.rand(2, 16, 16, generator=seeded(0)) > 0.3
    target = dynamic_soft_label(probs)
    torch.testing.assert_close(soft_cross_entropy(logits.cuda(), target.cuda(), valid.cuda()).cpu(),
                               soft_cross_entropy(logits, target, valid))


# -------------------------------------------------------------------------------- soft cross-entropy


def test_soft_ce_equals_cross_entropy_for_one_hot_target():
    logits = torch.randn(2, 5, 4, 6, generator=seeded(8))
    labels = torch.randint(0, 5, (2, 4, 6), generator=seeded(9))
    target = F.one_hot(labels, 5).permute(0, 3, 1, 2).float()
    expected = F.cross_entropy(logits, labels)
    for normalize in ('valid', 'total', 'u2pl'):  # all pixels valid: the three agree
        torch.testing.assert_close(soft_cross_entropy(logits, target, normalize=normalize), expected)


def test_soft_ce_with_ignore_mask_matches_cross_entropy_ignore_index():
    logits = torch.randn(2, 5, 4, 6, generator=seeded(10))
    labels = torch.randint(0, 5, (2, 4, 6), generator=seeded(11))
    labels[torch.rand(2, 4, 6, generator=seeded(12)) < 0.4] = 255
    valid = labels != 255
    num_valid, num_pixels = valid.sum().item(), labels.numel()
    assert 0 < num_valid < num_pixels
    target = F.one_hot(labels.where(valid, 0), 5).permute(0, 3, 1, 2).float()
    target[~valid.unsqueeze(1).expand_as(target)] = float('nan')  # garbage at ignored pixels must not leak
    mean_valid = F.cross_entropy(logits, labels, ignore_index=255)
    summed = F.cross_entropy(logits, labels, ignore_index=255, reduction='sum')
    torch.testing.assert_close(soft_cross_entropy(logits, target, valid), mean_valid)
    torch.testing.assert_close(soft_cross_entropy(logits, target, valid, 'total'), summed / num_pixels)
    torch.testing.assert_close(soft_cross_entropy(logits, target, valid, 'u2pl'),
                               mean_valid * num_pixels / num_valid)


def test_soft_ce_normalisations_by_hand():
    # Three pixels, two classes. a: logits (0, 0), target (.5, .5) -> ln 2.
    # b: logits (ln 3, 0) -> softmax (.75, .25), target (1, 0) -> ln(4/3). c: invalid.
    logits = torch.tensor([[0.0, math.log(3.0), 0.0], [0.0, 0.0, 5.0]]).reshape(1, 2, 1, 3).requires_grad_()
    target = torch.tensor([[0.5, 1.0, 1.0], [0.5, 0.0, 0.0]]).reshape(1, 2, 1, 3)
    valid = torch.tensor([[[True, True, False]]])
    summed = math.log(2.0) + math.log(4.0 / 3.0)  # = ln(8/3)
    expected = {'valid': summed / 2, 'total': summed / 3, 'u2pl': summed / 2 * 3 / 2}
    for normalize, value in expected.items():
        loss = soft_cross_entropy(logits, target, valid, normalize)
        assert loss.dtype == torch.float32 and loss.ndim == 0
        assert loss.item() == pytest.approx(value, rel=1e-6), normalize
    soft_cross_entropy(logits, target, valid).backward()
    assert logits.grad[0, :, 0, 2].abs().max() == 0  # the invalid pixel gets no gradient
    # d/dz of -sum y log softmax(z) = softmax(z) - y; 'valid' divides by 2.
    torch.testing.assert_close(logits.grad[0, :, 0, 1], torch.tensor([0.75 - 1.0, 0.25]) / 2)


@pytest.mark.parametrize('normalize', ['valid', 'total', 'u2pl'])
def test_soft_ce_all_invalid_is_zero_and_backward_works(normalize):
    logits = torch.randn(2, 4, 3, 3, generator=seeded(13)).requires_grad_()
    target = dynamic_soft_label(torch.randn(2, 4, 3, 3).softmax(dim=1))
    loss = soft_cross_entropy(logits, target, torch.zeros(2, 3, 3, dtype=torch.bool), normalize)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_soft_ce_fp16_logits_computed_in_fp32():
    logits = torch.randn(1, 4, 3, 3, generator=seeded(14))
    target = dynamic_soft_label(random_probs((1, 4, 3, 3), seed=15))
    loss = soft_cross_entropy(logits.half(), target.half())
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, soft_cross_entropy(logits.half().float(), target.half().float()))


def test_soft_ce_shape_checks():
    logits = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match=r'\(1, 4, 4, 4\).*\(1, 4, 8, 8\)'):
        soft_cross_entropy(logits, torch.full((1, 4, 4, 4), 0.25))
    with pytest.raises(ValueError, match='valid_mask'):
        soft_cross_entropy(logits, torch.full((1, 4, 8, 8), 0.25), torch.ones(1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match='normalize'):
        soft_cross_entropy(logits, torch.full((1, 4, 8, 8), 0.25), normalize='mean')


# ----------------------------------------------------------------------------------------- DSLLoss


def test_dsl_loss_builds_from_registry_with_paper_defaults():
    loss = MODELS.build(dict(type='DSLLoss'))
    assert isinstance(loss, DSLLoss)
    assert (loss.mode, loss.eta, loss.top_k, loss.normalize, loss.loss_weight) == ('dsl', 0.95, 5, 'valid', 0.2)
    assert loss.loss_name == 'loss_dsl'
    custom = MODELS.build(dict(type='DSLLoss', mode='top_k', top_k=3, loss_weight=1.0, loss_name='loss_unsup'))
    assert (custom.mode, custom.top_k, custom.loss_name) == ('top_k', 3, 'loss_unsup')


def test_dsl_loss_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        DSLLoss('dsl')


@pytest.mark.parametrize('mode, kwargs', [('dsl', dict(eta=0.8)), ('top_k', dict(top_k=3)), ('hard', {})])
@pytest.mark.parametrize('normalize', ['valid', 'total', 'u2pl'])
def test_dsl_loss_value_and_weight(mode, kwargs, normalize):
    student = torch.randn(2, 6, 5, 5, generator=seeded(16))
    teacher = random_probs((2, 6, 5, 5), seed=17)
    valid = torch.rand(2, 5, 5, generator=seeded(18)) > 0.2
    criterion = DSLLoss(mode=mode, normalize=normalize, loss_weight=0.5, **kwargs)
    expected_label = {'dsl': lambda p: dynamic_soft_label(p, eta=0.8),
                      'top_k': lambda p: dynamic_soft_label(p, top_k=3),
                      'hard': hard_label}[mode](teacher)
    torch.testing.assert_close(criterion.pseudo_label(teacher), expected_label)
    expected = 0.5 * soft_cross_entropy(student, expected_label, valid, normalize)
    torch.testing.assert_close(criterion(student, teacher, valid), expected)
    unit = DSLLoss(mode=mode, normalize=normalize, loss_weight=1.0, **kwargs)
    torch.testing.assert_close(criterion(student, teacher, valid), 0.5 * unit(student, teacher, valid))


def test_dsl_loss_gradient_reaches_student_not_teacher():
    student = torch.randn(2, 5, 4, 4, generator=seeded(19)).requires_grad_()
    teacher_logits = torch.randn(2, 5, 4, 4, generator=seeded(20)).requires_grad_()
    criterion = DSLLoss()
    assert not criterion.pseudo_label(teacher_logits.softmax(dim=1)).requires_grad
    loss = criterion(student, teacher_logits.softmax(dim=1))
    assert loss.requires_grad
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher_logits.grad is None


def test_dsl_loss_accepts_fp16_teacher_and_student():
    student = torch.randn(1, 5, 4, 4, generator=seeded(21)).half()
    teacher = random_probs((1, 5, 4, 4), seed=22).half()
    loss = DSLLoss()(student, teacher)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize('kwargs, name', [
    (dict(eta=0), 'eta'),
    (dict(eta=1.5), 'eta'),
    (dict(top_k=0), 'top_k'),
    (dict(mode='x'), 'mode'),
    (dict(loss_name='dsl'), 'loss_name'),
    (dict(normalize='x'), 'normalize'),
    (dict(loss_weight=-1.0), 'loss_weight'),
])
def test_dsl_loss_rejects_bad_arguments(kwargs, name):
    value = next(iter(kwargs.values()))
    with pytest.raises(ValueError, match=rf'{name}.*{name}={value!r}'):
        DSLLoss(**kwargs)
    with pytest.raises(ValueError, match=name):
        MODELS.build(dict(type='DSLLoss', **kwargs))


def test_dsl_loss_top_k_larger_than_classes_fails_at_call_time():
    with pytest.raises(ValueError, match=r'top_k.*\[1, C=4\]'):
        DSLLoss(mode='top_k', top_k=5)(torch.randn(1, 4, 2, 2), torch.full((1, 4, 2, 2), 0.25))


def test_dsl_loss_accepts_a_precomputed_pseudo_label():
    loss = DSLLoss(mode='dsl', eta=0.8)
    g = torch.Generator().manual_seed(3)
    probs = torch.randn(2, 4, 3, 3, generator=g).softmax(1)
    logits = torch.randn(2, 4, 3, 3, generator=g)
    assert torch.equal(loss(logits, probs), loss(logits, probs, pseudo_label=loss.pseudo_label(probs)))
