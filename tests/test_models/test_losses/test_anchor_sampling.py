"""Eq. 9 (``models/losses/anchor_sampling.py``): anchors per class and their feature vectors."""
import math
from collections import Counter

import pytest
import torch
from part_contrast_helpers import IGNORE, seeded

from mmseg_esl.models.losses import gather_pixels, sample_anchors


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
