"""PixelPartContrastLoss: golden value, sampling rules through the module, anchors, state, arguments."""
import math

import pytest
import torch

from mmseg_esl.models.losses import PixelPartContrastLoss
from mmseg_esl.models.losses import pixel_part_contrast_loss as module


def make_loss(**overrides) -> PixelPartContrastLoss:
    kwargs = dict(num_classes=2, feat_channels=4, embed_channels=8, num_parts=2, queue_size=4)
    kwargs.update(overrides)
    loss = PixelPartContrastLoss(**kwargs)
    loss.set_prototypes_(torch.randn(kwargs['num_classes'], kwargs['num_parts'], kwargs['feat_channels']))
    return loss


def one_pixel(cls: int, part: int, vector: torch.Tensor):
    """A 1x1 'image' whose only pixel has the given class, part and embedding."""
    return vector.reshape(1, -1, 1, 1), torch.tensor([[[cls]]]), torch.tensor([[[part]]]), torch.ones(1, 1, 1,
                                                                                                   dtype=torch.bool)


def test_golden_value_through_the_module():
    """Anchor = its positive, every negative orthogonal, σ = 0.5: per-anchor loss log(1 + 255 / e²) = 3.5699."""
    loss_fn = make_loss(num_negatives=255, temperature=0.5, loss_weight=0.1, reduction='paper')
    e = torch.eye(8)
    # Queue (0, 0) holds e0, the other three queues e1, e2, e3 (orthogonal to e0), one entry each.
    means = torch.stack([e[0], e[1], e[2], e[3]]).reshape(1, 2, 2, 8)
    loss_fn.bank.enqueue(means, torch.ones(1, 2, 2))
    loss, stats = loss_fn(*one_pixel(0, 0, 3 * e[0]))
    per_anchor = math.log(1 + 255 / math.e ** 2)
    assert per_anchor == pytest.approx(3.5699, abs=1e-4)
    # L_CTR = (1/C) Σ_c L^c with C = 2 (class 1 has no anchor and contributes 0), times λ2 = 0.1.
    assert loss.item() == pytest.approx(0.1 * per_anchor / 2, rel=1e-5)
    assert stats['anchors'].item() == 1 and stats['pos_cos'].item() == pytest.approx(1.0)
    assert stats['neg_cos'].item() == pytest.approx(0.0, abs=1e-6)
    assert stats['bank_fill'].item() == pytest.approx(4 / 16)
    present = make_loss(num_negatives=255, reduction='present', loss_weight=1.0)
    present.bank.enqueue(means, torch.ones(1, 2, 2))
    assert present(*one_pixel(0, 0, e[0]))[0].item() == pytest.approx(per_anchor, rel=1e-5)


@pytest.mark.parametrize('negatives', ['part', 'class'])
def test_positive_from_own_queue_negatives_never(negatives, monkeypatch):
    num_classes, num_parts, dim = 3, 3, 8
    loss_fn = make_loss(num_classes=num_classes, num_parts=num_parts, embed_channels=dim, queue_size=4,
                        num_negatives=255, negatives=negatives, anchor_ratio=1.0)
    # A distinct vector in every slot of every queue: entry value = 100 * queue + slot, in every channel.
    for slot in range(4):
        means = (100 * torch.arange(num_classes * num_parts).float() + slot).reshape(1, num_classes, num_parts, 1)
        loss_fn.bank.enqueue(means.expand(1, num_classes, num_parts, dim), torch.ones(1, num_classes, num_parts))
    seen = {}
    original = module.part_infonce_from_bank

    def spy(anchors, bank, pos_idx, neg_idx, *args, **kwargs):
        seen.update(bank=bank, pos=pos_idx, neg=neg_idx)
        return original(anchors, bank, pos_idx, neg_idx, *args, **kwargs)

    monkeypatch.setattr(module, 'part_infonce_from_bank', spy)
    # 30 anchors, all of class 1, part 2: queue 1 * 3 + 2 = 5.
    embed = torch.randn(1, dim, 5, 6)
    classes = torch.ones(1, 5, 6, dtype=torch.long)
    parts = torch.full((1, 5, 6), 2)
    loss, stats = loss_fn(embed, classes, parts, torch.ones(1, 5, 6, dtype=torch.bool))
    queue_of = (seen['bank'][:, 0] // 100).long()  # the queue every bank row came from
    assert torch.equal(queue_of[seen['pos']], torch.full((30, ), 5))
    neg_queues = queue_of[seen['neg']]
    assert (neg_queues != 5).all()
    same_class_other_part = ((neg_queues // num_parts) == 1).any().item()
    assert same_class_other_part == (negatives == 'part')  # the paper's rule keeps the other parts of class c
    if negatives == 'class':
        assert ((neg_queues // num_parts) != 1).all()
    assert stats['anchors'].item() == 30 and torch.isfinite(loss)


def test_anchor_rule_ratio_and_empty_bank():
    loss_fn = make_loss(anchor_ratio=0.1)
    embed = torch.randn(2, 8, 10, 10, requires_grad=True)
    classes = torch.zeros(2, 10, 10, dtype=torch.long)
    classes[:, :3] = 1  # class 0: 140 pixels, class 1: 60
    classes[0, 9] = 255
    parts = torch.where(classes == 255, -1, torch.zeros_like(classes))
    mask = torch.ones(2, 10, 10, dtype=torch.bool)
    # An empty bank: no positive for anyone, loss 0 (finite, connected), anchors 0.
    loss, stats = loss_fn(embed, classes, parts, mask)
    assert loss.item() == 0 and stats['anchors'].item() == 0 and stats['bank_fill'].item() == 0
    loss.backward()
    assert embed.grad is not None and embed.grad.abs().sum() == 0
    # Fill one entry per queue: 10 % of each class (ceil): 13 + 6 anchors (class 0 has 130 valid pixels).
    loss_fn.bank.enqueue(torch.randn(1, 2, 2, 8), torch.ones(1, 2, 2))
    loss, stats = loss_fn(embed, classes, parts, mask)
    assert stats['anchors'].item() == 13 + 6 and loss.item() > 0
    # Pixels outside the anchor mask (e.g. unlabeled pixels with p^t <= ζ) are never anchors.
    loss, stats = loss_fn(embed, classes, parts, classes == 1)
    assert stats['anchors'].item() == 6


def test_max_anchors_per_class_caps_memory():
    loss_fn = make_loss(anchor_ratio=1.0, max_anchors_per_class=5)
    loss_fn.bank.enqueue(torch.randn(1, 2, 2, 8), torch.ones(1, 2, 2))
    classes = torch.randint(0, 2, (1, 8, 8))
    _, stats = loss_fn(torch.randn(1, 8, 8, 8), classes, torch.zeros_like(classes), torch.ones(1, 8, 8, dtype=bool))
    assert stats['anchors'].item() == 10


def test_state_is_in_buffers():
    loss_fn = make_loss()
    keys = set(loss_fn.state_dict())
    assert keys == {'prototypes', 'prototypes_ready', 'bank.queues', 'bank.pointers', 'bank.fill'}
    assert not list(loss_fn.parameters())


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_parts=0), 'num_parts=0 means'),
    (dict(feat_channels=0), 'feat_channels'),
    (dict(conf_thresh=1.5), 'conf_thresh'),
    (dict(anchor_ratio=0.0), 'anchor_ratio'),
    (dict(negatives='all'), 'negatives'),
    (dict(reduction='mean'), 'reduction'),
    (dict(temperature=0), 'temperature'),
    (dict(loss_name='ctr'), "must contain 'loss'"),
    (dict(ignore_index=1), 'ignore_index'),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_loss(**kwargs)


def test_wrong_shapes_and_unready_prototypes():
    loss_fn = make_loss()
    with pytest.raises(ValueError, match='embed_channels'):
        loss_fn(torch.randn(1, 5, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long),
                torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match='class_map must have shape'):
        loss_fn(torch.randn(1, 8, 2, 2), torch.zeros(1, 3, 2, dtype=torch.long),
                torch.zeros(1, 2, 2, dtype=torch.long), torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"prototypes must have shape"):
        loss_fn.set_prototypes_(torch.zeros(2, 3, 4))
    fresh = PixelPartContrastLoss(num_classes=2, feat_channels=4, embed_channels=8, num_parts=2)
    with pytest.raises(RuntimeError, match='PrototypeInitHook'):
        fresh.assign(torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
