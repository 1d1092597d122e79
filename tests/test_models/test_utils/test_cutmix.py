"""CutMix for dense prediction: derangement, boxes, masks, and one box applied alike to every tensor."""
import pytest
import torch

from mmseg_esl.models.utils import (
    CutMixParams,
    box_masks,
    cutmix,
    cutmix_masks,
    derangement,
    make_cutmix_params,
    resize_mask,
    sample_cutmix_boxes,
)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- derangement


@pytest.mark.parametrize('n', range(2, 11))
def test_derangement_is_a_permutation_without_fixed_points(n):
    for seed in range(200):
        partner = derangement(n, generator=seeded(seed))
        assert partner.dtype == torch.long and partner.shape == (n,)
        assert torch.equal(partner.sort().values, torch.arange(n))
        assert not (partner == torch.arange(n)).any()


def test_derangement_is_reproducible_and_random():
    assert torch.equal(derangement(8, generator=seeded(3)), derangement(8, generator=seeded(3)))
    draws = {tuple(derangement(5, generator=seeded(seed)).tolist()) for seed in range(200)}
    assert len(draws) > 10  # many different pairings, not a fixed shift
    assert len({tuple(derangement(5).tolist()) for _ in range(50)}) > 1  # global RNG without a generator


@pytest.mark.parametrize('n', [1, 0])
def test_derangement_needs_two_images(n):
    with pytest.raises(ValueError, match='at least 2 images'):
        derangement(n)


# --------------------------------------------------------------------------- boxes


def test_boxes_lie_inside_the_image_with_the_requested_area():
    height, width, area_range = 48, 80, (0.05, 0.3)
    boxes, apply = sample_cutmix_boxes(2000, height, width, area_range=area_range, generator=seeded(0))
    assert boxes.dtype == torch.long and boxes.shape == (2000, 4) and apply.all()
    y1, x1, y2, x2 = boxes.unbind(1)
    assert (y1 >= 0).all() and (x1 >= 0).all() and (y2 <= height).all() and (x2 <= width).all()
    assert (y2 > y1).all() and (x2 > x1).all()
    area = ((y2 - y1) * (x2 - x1)).double() / (height * width)
    tol = (height + width + 1) / (2 * height * width)  # each side rounded by at most half a pixel
    assert area.min() >= area_range[0] - tol and area.max() <= area_range[1] + tol
    # Positions spread over the image: boxes touch every border over many draws.
    assert (y1 == 0).any() and (x1 == 0).any() and (y2 == height).any() and (x2 == width).any()


def test_aspect_ratio_stays_in_range_when_the_box_fits():
    boxes, _ = sample_cutmix_boxes(500, 200, 200, area_range=(0.05, 0.1), ratio_range=(0.5, 2.0),
                                   generator=seeded(1))
    ratio = (boxes[:, 2] - boxes[:, 0]).double() / (boxes[:, 3] - boxes[:, 1]).double()
    assert ratio.min() >= 0.5 * 0.95 and ratio.max() <= 2.0 / 0.95  # rounding tolerance
    assert ratio.min() < 0.7 and ratio.max() > 1.4  # both tall and wide boxes occur


def test_box_that_does_not_fit_keeps_its_area():
    # A very tall box in a very wide image: clipped to the full height, it widens to keep the area.
    boxes, _ = sample_cutmix_boxes(100, 10, 1000, area_range=(0.3, 0.3), ratio_range=(5.0, 5.0),
                                   generator=seeded(2))
    assert (boxes[:, 0] == 0).all() and (boxes[:, 2] == 10).all()
    assert ((boxes[:, 3] - boxes[:, 1]) == 300).all()


def test_apply_follows_prob():
    _, never = sample_cutmix_boxes(1000, 8, 8, prob=0.0, generator=seeded(0))
    _, always = sample_cutmix_boxes(1000, 8, 8, prob=1.0, generator=seeded(0))
    _, half = sample_cutmix_boxes(4000, 8, 8, prob=0.5, generator=seeded(0))
    assert not never.any() and always.all()
    assert half.dtype == torch.bool and abs(half.float().mean().item() - 0.5) < 0.04


def test_boxes_are_reproducible():
    a = sample_cutmix_boxes(16, 32, 32, prob=0.5, generator=seeded(7))
    b = sample_cutmix_boxes(16, 32, 32, prob=0.5, generator=seeded(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize('kwargs, name', [
    (dict(area_range=(0.0, 0.4)), 'area_range'),
    (dict(area_range=(0.5, 0.4)), 'area_range'),
    (dict(area_range=(0.1, 1.5)), 'area_range'),
    (dict(area_range=(0.1, )), 'area_range'),
    (dict(ratio_range=(0.0, 2.0)), 'ratio_range'),
    (dict(ratio_range=(3.0, 2.0)), 'ratio_range'),
    (dict(prob=-0.1), 'prob'),
    (dict(prob=1.5), 'prob'),
])
def test_bad_box_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        sample_cutmix_boxes(4, 16, 16, **kwargs)
    with pytest.raises(ValueError, match=name):
        make_cutmix_params(4, 16, 16, **kwargs)


def test_bad_image_size_raises():
    with pytest.raises(ValueError, match='height and width'):
        sample_cutmix_boxes(4, 0, 16)


# --------------------------------------------------------------------------- masks


def test_box_masks_match_a_loop_reference():
    boxes, _ = sample_cutmix_boxes(20, 13, 17, generator=seeded(0))
    boxes = torch.cat([boxes, torch.tensor([[0, 0, 13, 17], [5, 6, 6, 7], [-2, -3, 3, 40]])])
    expected = torch.zeros(len(boxes), 13, 17, dtype=torch.bool)
    for i, (y1, x1, y2, x2) in enumerate(boxes.tolist()):
        for y in range(13):
            for x in range(17):
                expected[i, y, x] = y1 <= y < y2 and x1 <= x < x2
    assert torch.equal(box_masks(boxes, 13, 17), expected)


def test_cutmix_masks_are_empty_where_not_applied():
    boxes = torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3]])
    masks = cutmix_masks(boxes, torch.tensor([True, False]), 4, 4)
    assert torch.equal(masks[0], box_masks(boxes[:1], 4, 4)[0])
    assert not masks[1].any()
    with pytest.raises(ValueError, match='apply'):
        cutmix_masks(boxes, torch.tensor([True]), 4, 4)
    with pytest.raises(ValueError, match='boxes'):
        box_masks(torch.zeros(2, 3, dtype=torch.long), 4, 4)


def test_resize_mask_nearest():
    mask = torch.tensor([[[1, 1, 0, 0],
                          [1, 1, 0, 0],
                          [0, 0, 0, 1],
                          [0, 0, 1, 1]]], dtype=torch.bool)
    # Downsampling by 2 with 'nearest' keeps the top-left pixel of each 2x2 cell ...
    assert torch.equal(resize_mask(mask, (2, 2)), torch.tensor([[[True, False], [False, False]]]))
    # ... 'nearest-exact' the bottom-right one (the pixel nearest to the cell's centre).
    assert torch.equal(resize_mask(mask, 2, mode='nearest-exact'), torch.tensor([[[True, False], [False, True]]]))
    up = resize_mask(mask[:, :2, :2] & ~torch.eye(2, dtype=torch.bool), (4, 4))  # [[0, 1], [1, 0]] -> 2x2 blocks
    assert torch.equal(up, torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]], dtype=torch.bool))
    assert resize_mask(mask, (4, 4)) is mask
    with pytest.raises(ValueError, match='mode'):
        resize_mask(mask, 2, mode='bilinear')


# --------------------------------------------------------------------------- cutmix


@pytest.fixture
def two_images_fixed_box():
    """Two 4x4 images; image 0 receives rows 1:3, cols 0:2 of image 1, image 1 is not mixed."""
    boxes = torch.tensor([[1, 0, 3, 2], [1, 0, 3, 2]])
    mask = cutmix_masks(boxes, torch.tensor([True, False]), 4, 4)
    return torch.tensor([1, 0]), mask


def test_cutmix_applies_the_same_box_to_every_tensor(two_images_fixed_box):
    partner, mask = two_images_fixed_box
    box = torch.zeros(4, 4, dtype=torch.bool)
    box[1:3, 0:2] = True
    img = torch.stack([torch.full((3, 4, 4), 1.0), torch.full((3, 4, 4), 2.0)])  # (N, 3, H, W)
    prob = torch.stack([torch.tensor([0.9, 0.1]), torch.tensor([0.2, 0.8])])[:, :, None, None].expand(2, 2, 4, 4)
    valid = torch.ones(2, 4, 4, dtype=torch.bool)
    valid[1, 2:, :] = False  # padding at the bottom of image 1
    label = torch.stack([torch.full((4, 4), 3), torch.full((4, 4), 7)])
    label[1, 3, :] = 255

    out_img, out_prob, out_valid, out_label = cutmix([img, prob, valid, label], partner, mask)

    expected_img0 = torch.tensor([[1., 1., 1., 1.],
                                  [2., 2., 1., 1.],
                                  [2., 2., 1., 1.],
                                  [1., 1., 1., 1.]])
    assert torch.equal(out_img[0], expected_img0.expand(3, 4, 4))
    assert torch.equal(out_img[1], img[1])
    expected_prob0 = torch.stack([torch.where(box, 0.2, 0.9), torch.where(box, 0.8, 0.1)])
    assert torch.equal(out_prob[0], expected_prob0) and torch.equal(out_prob[1], prob[1])
    expected_valid0 = torch.tensor([[1, 1, 1, 1],
                                    [1, 1, 1, 1],
                                    [0, 0, 1, 1],  # the partner's padding stays invalid
                                    [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(out_valid[0], expected_valid0) and torch.equal(out_valid[1], valid[1])
    expected_label0 = torch.tensor([[3, 3, 3, 3],
                                    [7, 7, 3, 3],
                                    [7, 7, 3, 3],
                                    [3, 3, 3, 3]])
    assert torch.equal(out_label[0], expected_label0) and torch.equal(out_label[1], label[1])
    for before, after in zip([img, prob, valid, label], [out_img, out_prob, out_valid, out_label]):
        assert after.dtype == before.dtype and after.shape == before.shape
    assert torch.equal(img[0], torch.full((3, 4, 4), 1.0))  # inputs untouched


def test_random_params_never_pair_an_image_with_itself():
    for seed in range(50):
        n = 2 + seed % 7
        params = make_cutmix_params(n, 24, 32, generator=seeded(seed))
        assert isinstance(params, CutMixParams)
        assert not (params.partner == torch.arange(n)).any()
        assert params.mask.shape == (n, 24, 32) and params.mask.dtype == torch.bool
        assert params.mask.flatten(1).any(1).all()  # prob=1: every image gets a box
        img = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 3, 24, 32)
        (mixed, ) = cutmix([img], params.partner, params.mask)
        inside = params.mask[:, None].expand_as(img)
        assert torch.equal(mixed[inside], params.partner[:, None, None, None].expand_as(img)[inside].float())
        assert torch.equal(mixed[~inside], img[~inside])


def test_make_cutmix_params_is_reproducible_and_prob_zero_is_identity():
    a, b = make_cutmix_params(6, 16, 16, generator=seeded(5)), make_cutmix_params(6, 16, 16, generator=seeded(5))
    assert torch.equal(a.partner, b.partner) and torch.equal(a.mask, b.mask)
    params = make_cutmix_params(6, 16, 16, prob=0.0, generator=seeded(5))
    img = torch.randn(6, 3, 16, 16, generator=seeded(0))
    assert not params.mask.any()
    assert torch.equal(cutmix([img], params.partner, params.mask)[0], img)
    with pytest.raises(ValueError, match='at least 2 images'):
        make_cutmix_params(1, 16, 16)


def test_resized_params_mix_feature_maps():
    params = make_cutmix_params(4, 32, 32, generator=seeded(0))
    feats = torch.randn(4, 8, 8, 8, generator=seeded(1))
    small = params.resized((8, 8))
    assert torch.equal(small.partner, params.partner)
    assert torch.equal(small.mask, resize_mask(params.mask, (8, 8)))
    mixed = cutmix([feats], small.partner, small.mask)[0]
    assert torch.equal(mixed, torch.where(small.mask[:, None], feats[small.partner], feats))


def test_cutmix_keeps_gradients():
    params = make_cutmix_params(3, 8, 8, generator=seeded(0))
    x = torch.randn(3, 2, 8, 8, requires_grad=True)
    cutmix([x], params.partner, params.mask)[0].sum().backward()
    # Pixel (j, y, x) is used by image j outside its own box, and by the image that pastes from j inside its box.
    receiver = torch.argsort(params.partner)
    expected = (~params.mask).float() + params.mask[receiver].float()
    assert torch.equal(x.grad, expected[:, None].expand_as(x))


def test_cutmix_rejects_mismatches(two_images_fixed_box):
    partner, mask = two_images_fixed_box
    with pytest.raises(ValueError, match='resize_mask'):
        cutmix([torch.zeros(2, 3, 2, 2)], partner, mask)
    with pytest.raises(ValueError, match='batch size'):
        cutmix([torch.zeros(3, 4, 4)], partner, mask)
    with pytest.raises(ValueError, match=r'\(N, H, W\) or \(N, C, H, W\)'):
        cutmix([torch.zeros(2, 1, 1, 4, 4)], partner, mask)
    with pytest.raises(ValueError, match='partner'):
        cutmix([torch.zeros(2, 4, 4)], torch.tensor([1, 0, 0]), mask)
    with pytest.raises(TypeError, match='bool'):
        cutmix([torch.zeros(2, 4, 4)], partner, mask.float())
    with pytest.raises(TypeError, match='integer'):
        cutmix([torch.zeros(2, 4, 4)], partner.float(), mask)
    with pytest.raises(TypeError, match='list'):
        cutmix(torch.zeros(2, 4, 4), partner, mask)


def test_results_live_on_the_requested_device():
    """Draws come from the generator's device, then move: the same seed gives the same params anywhere."""
    on_cpu = make_cutmix_params(3, 8, 8, generator=seeded(0), device='cpu')
    default = make_cutmix_params(3, 8, 8, generator=seeded(0))
    assert torch.equal(on_cpu.partner, default.partner) and torch.equal(on_cpu.mask, default.mask)
    on_meta = make_cutmix_params(3, 8, 8, generator=seeded(0), device='meta')  # a non-CPU device, no GPU needed
    assert on_meta.partner.device.type == 'meta' and on_meta.mask.device.type == 'meta'
    assert on_meta.mask.shape == (3, 8, 8)
