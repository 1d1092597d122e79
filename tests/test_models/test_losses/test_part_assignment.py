"""Eq. 7 (``models/losses/part_assignment.py``): the part of each pixel, the most similar prototype of its class."""
import pytest
import torch
import torch.nn.functional as F
from part_contrast_helpers import IGNORE, random_maps, reference_assign, seeded

from mmseg_esl.models.losses import assign_parts


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
