"""Pixel-to-part contrast under mixed precision and in image chunks (issue 8: AMP must work, memory bounded).

CUDA fp16/bf16 autocast cannot run here; ``torch.autocast('cpu', dtype)`` takes the same code path (the
functions switch autocast off for their device type and pick the autocast dtype the same way on any device),
and half-precision tensors fed directly stand for what a half-precision teacher produces.
"""
import pytest
import torch
import torch.nn.functional as F

from mmseg_esl.models.losses import (
    PixelPartContrastLoss,
    assign_parts,
    masked_average_pool,
    part_infonce_from_bank,
    upsampled_masked_average_pool,
)
from mmseg_esl.models.losses import contrast_common as module

IGNORE = 255
HALF_DTYPES = [torch.float16, torch.bfloat16]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def maps(n: int, h: int, w: int, num_classes: int, num_parts: int, seed: int):
    g = seeded(seed)
    class_map = torch.randint(0, num_classes, (n, h, w), generator=g)
    class_map[torch.rand((n, h, w), generator=g) < 0.2] = IGNORE
    part_map = torch.randint(0, num_parts, (n, h, w), generator=g)
    return class_map, torch.where(class_map == IGNORE, -1, part_map)


def test_autocast_dtype_helper():
    assert module.autocast_dtype('cpu') is None
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert module.autocast_dtype('cpu') == torch.bfloat16
        with module.no_autocast('cpu'):
            assert module.autocast_dtype('cpu') is None
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert module.autocast_dtype('meta') is None


@pytest.mark.parametrize('dtype', HALF_DTYPES)
def test_upsampled_pool_is_fp32_under_autocast(dtype):
    """Raw post-ReLU E^t (values ~1e3): fp16 autocast overflowed to inf before (NaN prototypes); bf16 lost digits."""
    g = seeded(1)
    feats = torch.rand((2, 8, 8, 8), generator=g) * 3000
    class_map, part_map = maps(2, 16, 16, 2, 2, seed=2)
    expected, expected_counts = upsampled_masked_average_pool(feats, class_map, part_map, 2, 2)
    with torch.autocast('cpu', dtype=dtype):
        means, counts = upsampled_masked_average_pool(feats, class_map, part_map, 2, 2)
    assert means.dtype == torch.float32 and torch.isfinite(means).all()
    assert torch.equal(counts, expected_counts)
    torch.testing.assert_close(means, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('dtype', HALF_DTYPES)
def test_pools_sum_half_inputs_in_fp32(dtype):
    """Half-precision features (a half teacher): sums in fp32, equal to pooling their fp32 values."""
    g = seeded(3)
    feats = (torch.rand((3, 6, 5, 5), generator=g) * 60000).to(dtype)  # pixel sums would overflow fp16
    class_map, part_map = maps(3, 5, 5, 3, 2, seed=4)
    means, _ = masked_average_pool(feats, class_map, part_map, 3, 2)
    ref, _ = masked_average_pool(feats.float(), class_map, part_map, 3, 2)
    assert means.dtype == torch.float32 and torch.isfinite(means).all()
    torch.testing.assert_close(means, ref)
    class_up, part_up = maps(3, 9, 9, 3, 2, seed=5)
    means, _ = upsampled_masked_average_pool(feats, class_up, part_up, 3, 2)
    ref, _ = upsampled_masked_average_pool(feats.float(), class_up, part_up, 3, 2)
    assert torch.isfinite(means).all()
    torch.testing.assert_close(means, ref)


@pytest.mark.parametrize('align_corners', [False, True])
def test_upsampled_pool_normalize_equals_pooling_normalised_features(align_corners):
    g = seeded(6)
    feats = torch.rand((2, 5, 4, 6), generator=g, requires_grad=True) * 7
    class_map, part_map = maps(2, 9, 13, 3, 2, seed=7)
    means, counts = upsampled_masked_average_pool(feats, class_map, part_map, 3, 2, align_corners=align_corners,
                                                  normalize=True)
    ref, ref_counts = upsampled_masked_average_pool(F.normalize(feats, dim=1), class_map, part_map, 3, 2,
                                                    align_corners=align_corners)
    assert torch.equal(counts, ref_counts)
    torch.testing.assert_close(means, ref, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(means.sum(), feats)
    (ref_grad,) = torch.autograd.grad(ref.sum(), feats)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('dtype', HALF_DTYPES)
def test_assign_parts_is_fp32_under_autocast(dtype):
    """bf16 autocast flipped about 0.4 % of the parts of Eq. 7 before (near-tied cosines)."""
    g = seeded(8)
    feats = torch.rand((4, 8, 8, 8), generator=g) * 3000  # non-negative: cosines with the parts are close
    prototypes = torch.randn((3, 5, 8), generator=g)
    class_map, _ = maps(4, 32, 32, 3, 5, seed=9)
    expected = assign_parts(feats, class_map, prototypes)
    with torch.autocast('cpu', dtype=dtype):
        parts = assign_parts(feats, class_map, prototypes)
    assert torch.equal(parts, expected)


def test_chunked_over_images_equals_one_chunk(monkeypatch):
    """With CHUNK_ELEMENTS forcing one image per chunk, parts, means, counts and gradients are unchanged."""
    g = seeded(10)
    feats = torch.randn((3, 6, 4, 5), generator=g, requires_grad=True)
    prototypes = torch.randn((3, 2, 6), generator=g)
    class_small, _ = maps(3, 4, 5, 3, 2, seed=11)
    class_map, _ = maps(3, 8, 10, 3, 2, seed=12)
    results = []
    for chunk_elements in (2**25, 1):
        monkeypatch.setattr(module, 'CHUNK_ELEMENTS', chunk_elements)
        parts = assign_parts(feats, class_map, prototypes)
        parts_small = assign_parts(feats, class_small, prototypes)
        means, counts = masked_average_pool(feats, class_small, parts_small, 3, 2)
        up_means, up_counts = upsampled_masked_average_pool(feats, class_map, parts, 3, 2, normalize=True)
        (grad,) = torch.autograd.grad(means.sum() + up_means.sum(), feats)
        results.append((parts, parts_small, means, counts, up_means, up_counts, grad))
    for one, many in zip(*results):
        torch.testing.assert_close(many, one, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('dtype, tolerance', [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_infonce_under_autocast_is_fp32_and_close(dtype, tolerance):
    """Only the anchor x bank matmul follows autocast; cosines, logits and losses are fp32."""
    g = seeded(13)
    anchors = torch.randn((40, 16), generator=g, requires_grad=True)
    bank = torch.randn((30, 16), generator=g)
    pos_idx = torch.randint(0, 30, (40,), generator=g)
    neg_idx = torch.randint(0, 30, (40, 9), generator=g)
    expected = part_infonce_from_bank(anchors, bank, pos_idx, neg_idx, chunk_size=7)
    (expected_grad,) = torch.autograd.grad(expected.sum(), anchors)
    with torch.autocast('cpu', dtype=dtype):
        loss, pos_cos, neg_cos = part_infonce_from_bank(anchors, bank, pos_idx, neg_idx, chunk_size=7,
                                                        return_cos=True)
    assert loss.dtype == pos_cos.dtype == neg_cos.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=0, atol=tolerance)
    (grad,) = torch.autograd.grad(loss.sum(), anchors)
    assert grad.dtype == torch.float32
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=5 * tolerance)
    assert bank.dtype == torch.float32


@pytest.mark.parametrize('normalize', [True, False])
@pytest.mark.parametrize('dtype', HALF_DTYPES)
def test_pixel_part_contrast_loss_keeps_fp32_state_under_autocast(dtype, normalize):
    """Forward and update under autocast with half-precision z^s, z^t and E^t: finite fp32 loss, fp32 buffers.

    With raw E^t (``normalize_prototype_feats=False``) fp16 autocast made the Eq. 12 sums inf before, so the
    prototypes became NaN.
    """
    torch.manual_seed(0)
    loss_fn = PixelPartContrastLoss(num_classes=3, feat_channels=8, embed_channels=6, num_parts=2, queue_size=4,
                                    num_negatives=5, anchor_ratio=1.0, normalize_prototype_feats=normalize)
    loss_fn.set_prototypes_(torch.randn(3, 2, 8))
    g = seeded(14)
    class_map, _ = maps(2, 16, 16, 3, 2, seed=15)  # ~35 pixels per part and image: sums of ~1e5 > fp16 max
    enc = (torch.rand((2, 8, 8, 8), generator=g) * 4000).to(dtype)  # raw E^t of a half-precision teacher
    z_t = torch.randn((2, 6, 16, 16), generator=g).to(dtype)
    z_s = torch.randn((2, 6, 16, 16), generator=g).to(dtype).requires_grad_(True)
    with torch.autocast('cpu', dtype=dtype):
        parts = loss_fn.assign(enc, class_map)
        for _ in range(2):  # the first update fills the bank, the second forward uses it
            loss, stats = loss_fn(z_s, class_map, parts, class_map != IGNORE)
            loss_fn.update(z_t, enc, class_map, parts)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and stats['anchors'] > 0
    loss.backward()
    assert torch.isfinite(z_s.grad).all()
    assert loss_fn.bank.queues.dtype == torch.float32 and torch.isfinite(loss_fn.bank.queues).all()
    assert loss_fn.prototypes.dtype == torch.float32 and torch.isfinite(loss_fn.prototypes).all()
