"""Eq. 8 (``models/losses/masked_pooling.py``): mask average pooling per image and part, also of upsampled features."""
import pytest
import torch
import torch.nn.functional as F
from part_contrast_helpers import IGNORE, random_maps, reference_pool, seeded

from mmseg_esl.models.losses import assign_parts, masked_average_pool, upsampled_masked_average_pool


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
