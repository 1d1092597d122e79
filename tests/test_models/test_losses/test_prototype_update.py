"""Eq. 12 (``models/losses/prototype_update.py``): pixel-weighted batch part means and the momentum update."""
from typing import Tuple

import pytest
import torch
from part_contrast_helpers import IGNORE, random_maps, seeded

from mmseg_esl.models.losses import (
    batch_part_means,
    masked_average_pool,
    momentum_update_prototypes_,
    part_weighted_sums,
)


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
