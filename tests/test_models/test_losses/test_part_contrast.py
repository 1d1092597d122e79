"""Pixel-to-part contrast, all at once: Eq. 7-10 and 12 chained as the loss module chains them, on CPU and CUDA."""
import pytest
import torch
from part_contrast_helpers import IGNORE, random_bank_problem, random_maps, seeded

from mmseg_esl.models.losses import (
    assign_parts,
    batch_part_means,
    class_mean_loss,
    gather_pixels,
    masked_average_pool,
    momentum_update_prototypes_,
    part_infonce_from_bank,
    sample_anchors,
)


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
