"""ESLSegmentor with the pixel-to-part contrast (Eq. 7-12): maps, bank, prototypes, gradients, state, errors.

The stub segmentor (1x1 conv backbone, FCNHead without convs or dropout) makes every quantity computable by
hand: the decode head feeds ``cls_seg`` the backbone features themselves, so ``z = projector(conv(x))`` and
``E^t = conv(x)``. With ``stride=1`` the contrastive maps are at input resolution.
"""
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

import mmseg_esl  # noqa: F401
from mmseg_esl.models.losses import assign_parts, masked_average_pool
from mmseg_esl.models.segmentors import ESLSegmentor
from mmseg_esl.models.segmentors import esl_segmentor as esl_module
from mmseg_esl.testing.stub_segmentor import stub_segmentor_cfg

NUM_CLASSES = 3
H, W = 6, 5
K = 2
EMBED = 3


@pytest.fixture(autouse=True)
def mmseg_scope():
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')


def contrast_cfg(**overrides):
    cfg = dict(type='PixelPartContrastLoss', feat_channels=4, num_parts=K, stride=1, queue_size=8,
               num_negatives=5, conf_thresh=0.3, anchor_ratio=1.0)
    cfg.update(overrides)
    return cfg


def build(seed=0, **overrides) -> ESLSegmentor:
    torch.manual_seed(seed)
    model = ESLSegmentor(segmentor=stub_segmentor_cfg(), semi_train_cfg=dict(loss_contrast=contrast_cfg(**overrides)),
                         projector=dict(type='ProjectorHead', channels=4, out_channels=EMBED, norm_cfg=None))
    model.init_weights()
    model.train()
    with torch.no_grad():  # a teacher that differs from the student
        for p in model.teacher.parameters():
            p.add_(0.3 * torch.randn_like(p))
    model.contrast_loss.set_prototypes_(torch.randn_like(model.contrast_loss.prototypes))
    return model


def make_batch(seed=1):
    """[2 labeled | 1 unlabeled | 1 partner]; the partner has 2 rows of padding at the bottom."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(4, 3, H, W, generator=g)

    def sample(is_labeled, img_shape=(H, W)):
        ds = SegDataSample(metainfo=dict(is_labeled=is_labeled, img_shape=img_shape, pad_shape=(H, W),
                                         ori_shape=(H, W)))
        if is_labeled:
            gt = torch.randint(0, NUM_CLASSES, (H, W), generator=g)
            gt[0, :2] = 255
            ds.gt_sem_seg = PixelData(data=gt[None])
        return ds

    return inputs, [sample(True), sample(True), sample(False), sample(False, (H - 2, W))]


BOX = (1, 1, 5, 4)  # rows 1..4, cols 1..3 of the unlabeled image come from its partner


@pytest.fixture
def fixed_box(monkeypatch):
    monkeypatch.setattr(esl_module, 'sample_cutmix_boxes',
                        lambda n, height, width, **kw: (torch.tensor([BOX] * n), torch.ones(n, dtype=torch.bool)))


def teacher_views(model, inputs):
    """E^t, z^t, class map and confidence of the weak views [labeled | unlabeled | partner], by hand."""
    with torch.no_grad():
        feats = model.teacher.backbone.conv(inputs)
        z_t = model.teacher.projector(feats)
        probs = model.teacher.decode_head.conv_seg(feats).softmax(dim=1)
    return feats, z_t, probs


def weak_class_map(probs, samples):
    conf, cls = probs[2:].max(dim=1)
    cls[1, H - 2:] = 255  # the partner's padding
    gt = torch.stack([ds.gt_sem_seg.data[0] for ds in samples[:2]])
    return torch.cat([gt, cls]), conf


def capture(monkeypatch, obj, name):
    """Records the arguments (and return value) of every call of ``obj.name``."""
    calls = []
    original = getattr(obj, name)

    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((args, kwargs, result))
        return result

    monkeypatch.setattr(obj, name, wrapped)
    return calls


# --------------------------------------------------------------------------------------------------------- tests


def test_bank_receives_pooled_teacher_embedding_of_the_weak_views(fixed_box):
    model = build()
    inputs, samples = make_batch()
    prototypes = model.contrast_loss.prototypes.clone()
    losses = model.loss(inputs, samples)
    feats, z_t, probs = teacher_views(model, inputs)
    class_map, _ = weak_class_map(probs, samples)
    parts = assign_parts(feats, class_map, prototypes)
    means, counts = masked_average_pool(z_t, class_map, parts, NUM_CLASSES, K)
    bank = model.contrast_loss.bank
    present = (counts > 0).reshape(4, -1)
    assert torch.equal(bank.fill, present.sum(0))
    for q in range(NUM_CLASSES * K):
        expected = means.reshape(4, -1, EMBED)[present[:, q], q]  # image order: labeled, unlabeled, partner
        torch.testing.assert_close(bank.queues[q, :len(expected)], expected)
    # MoCo order: the bank was empty when the loss was computed, so no anchor had a positive yet.
    assert losses['contrast.anchors'].item() == 0 and losses['contrast.loss_ctr'].item() == 0
    assert losses['contrast.bank_fill'].item() == 0


def test_prototypes_move_by_theta_for_the_parts_present_only(fixed_box):
    num_parts = 6  # more parts than the tiny batch fills, so that some stay absent
    model = build(num_parts=num_parts)
    loss_fn = model.contrast_loss
    loss_fn.set_prototypes_(torch.randn(NUM_CLASSES, num_parts, 4, generator=torch.Generator().manual_seed(4)))
    inputs, samples = make_batch()
    before = loss_fn.prototypes.clone()
    model.loss(inputs, samples)
    feats, _, probs = teacher_views(model, inputs)
    class_map, _ = weak_class_map(probs, samples)
    parts = assign_parts(feats, class_map, before)
    # P' of Eq. 12: the pixel-weighted mean of the L2-normalised E^t pixels of each part over the batch.
    unit = F.normalize(feats, dim=1)
    expected = before.clone()
    moved = 0
    for c in range(NUM_CLASSES):
        for k in range(num_parts):
            sel = (class_map == c) & (parts == k)
            if sel.any():
                p_new = unit.permute(0, 2, 3, 1)[sel].mean(0)
                expected[c, k] = 0.99 * before[c, k] + 0.01 * p_new
                moved += 1
    assert 0 < moved < NUM_CLASSES * num_parts, 'the test needs present and absent parts'
    torch.testing.assert_close(loss_fn.prototypes, expected)
    absent = (expected == before).all(-1)
    assert torch.equal(loss_fn.prototypes[absent], before[absent])


def test_anchor_maps_of_unlabeled_images_are_cutmixed_with_the_same_box(fixed_box, monkeypatch):
    model = build()
    inputs, samples = make_batch()
    prototypes = model.contrast_loss.prototypes.clone()
    calls = capture(monkeypatch, model.contrast_loss, 'forward')
    model.loss(inputs, samples)
    (z_s, classes, parts, anchor_mask), _, _ = calls[0]
    feats, _, probs = teacher_views(model, inputs)
    class_map, conf = weak_class_map(probs, samples)
    weak_parts = assign_parts(feats, class_map, prototypes)
    box = torch.zeros(H, W, dtype=torch.bool)
    box[BOX[0]:BOX[2], BOX[1]:BOX[3]] = True
    # Labeled rows: labels and their parts; the unlabeled row: own maps outside the box, the partner's inside.
    assert torch.equal(classes[:2], class_map[:2]) and torch.equal(parts[:2], weak_parts[:2])
    assert torch.equal(classes[2], torch.where(box, class_map[3], class_map[2]))
    assert torch.equal(parts[2], torch.where(box, weak_parts[3], weak_parts[2]))
    mixed_conf = torch.where(box, conf[1], conf[0])
    assert torch.equal(anchor_mask[:2], class_map[:2] != 255)
    assert torch.equal(anchor_mask[2], (classes[2] != 255) & (mixed_conf > 0.3))
    assert anchor_mask[2].any()
    # The partner's padding inside the box (row H-2 = 4) is never an anchor.
    assert not anchor_mask[2, H - 2:BOX[2], BOX[1]:BOX[3]].any()
    # Anchors come from the student's embedding of [labeled | mixed], at the maps' resolution.
    assert z_s.shape == (3, EMBED, H, W) and z_s.requires_grad


def test_contrastive_loss_after_a_few_steps_is_positive_and_trains_the_student_only(fixed_box):
    model = build()
    inputs, samples = make_batch()
    for _ in range(3):  # fill the bank
        losses = model.loss(inputs, samples)
    assert losses['contrast.anchors'].item() > 0
    loss = losses['contrast.loss_ctr']
    assert loss.item() > 0 and torch.isfinite(loss)
    assert -1 <= losses['contrast.neg_cos'].item() <= 1 and -1 <= losses['contrast.pos_cos'].item() <= 1
    bank = copy.deepcopy(model.contrast_loss.bank.state_dict())
    loss.backward()
    student_grads = [p.grad for p in model.student.projector.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in student_grads)
    assert model.student.backbone.conv.weight.grad.abs().sum() > 0  # through the decoder features
    assert all(p.grad is None for p in model.teacher.parameters())
    for name, value in model.contrast_loss.bank.state_dict().items():
        assert torch.equal(value, bank[name]), name  # backward does not touch the bank


def test_paper_default_weight_and_keys_in_the_log(fixed_box):
    model = build(loss_weight=0.1)
    inputs, samples = make_batch()
    for _ in range(2):
        losses = model.loss(inputs, samples)
    assert {'contrast.loss_ctr', 'contrast.anchors', 'contrast.bank_fill', 'contrast.pos_cos',
            'contrast.neg_cos'} <= set(losses)
    assert losses['contrast.bank_fill'].item() > 0


def test_k0_disables_the_term_and_k1_is_pixel_to_region():
    k0 = ESLSegmentor(segmentor=stub_segmentor_cfg(), semi_train_cfg=dict(loss_contrast=dict(num_parts=0)))
    assert k0.contrast_loss is None and not hasattr(k0.student, 'projector')
    assert not any('contrast' in key or 'projector' in key for key in k0.state_dict())
    none = ESLSegmentor(segmentor=stub_segmentor_cfg(), semi_train_cfg=dict(loss_contrast=None))
    assert none.contrast_loss is None
    inputs, samples = make_batch()
    assert not any(key.startswith('contrast') for key in k0.loss(inputs, samples))

    k1 = build(num_parts=1)
    for _ in range(3):
        losses = k1.loss(inputs, samples)
    assert losses['contrast.loss_ctr'].item() > 0
    assert k1.contrast_loss.bank.num_queues == NUM_CLASSES


def test_projector_lives_in_student_and_teacher_and_follows_the_decode_head():
    model = build()
    assert model.student.projector is not model.teacher.projector
    assert model.student.projector.in_channels == model.student.decode_head.conv_seg.in_channels
    keys = model.state_dict()
    assert 'student.projector.proj.weight' in keys and 'teacher.projector.proj.weight' in keys
    assert 'contrast_loss.prototypes' in keys and 'contrast_loss.bank.queues' in keys
    assert not any(k.startswith(('student.contrast', 'teacher.contrast')) for k in keys)


def test_bank_pointers_prototypes_survive_a_checkpoint_round_trip(fixed_box):
    model = build()
    inputs, samples = make_batch()
    for _ in range(3):
        model.loss(inputs, samples)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = build(seed=5)
    fresh.contrast_loss.prototypes_ready.fill_(False)
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    for name, value in model.contrast_loss.state_dict().items():
        assert torch.equal(fresh.contrast_loss.state_dict()[name], value), name
    assert bool(fresh.contrast_loss.prototypes_ready)
    assert int(fresh.contrast_loss.bank.fill.sum()) > 0
    # Both continue identically.
    torch.manual_seed(3)
    a = model.loss(inputs, samples)['contrast.loss_ctr']
    torch.manual_seed(3)
    b = fresh.loss(inputs, samples)['contrast.loss_ctr']
    assert a.item() == b.item()


def test_errors_name_the_config_key():
    with pytest.raises(ValueError, match='loss_contrast.feat_channels is required'):
        ESLSegmentor(segmentor=stub_segmentor_cfg(), semi_train_cfg=dict(loss_contrast=dict(num_parts=5)))
    model = build(feat_channels=7)
    with pytest.raises(ValueError, match=r'feat_channels=7'):
        model.loss(*make_batch())
    model = build()
    model.contrast_loss.prototypes_ready.fill_(False)
    with pytest.raises(RuntimeError, match='PrototypeInitHook'):
        model.loss(*make_batch())


def test_taps_capture_only_during_loss():
    model = build()
    model.eval()
    inputs, _ = make_batch()
    model.predict(inputs)
    model.student.predict(inputs)
    assert all(tap.features is None for tap in model._taps.values())


def test_loss_steps_are_labelled_for_the_profiler_in_eq_11_order(fixed_box):
    """Each named step of loss() shows in torch.profiler as esl.<step>, in the order of the module docstring."""
    model = build()
    inputs, samples = make_batch()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model.loss(inputs, samples)
    steps = ['teacher_weak_pass', 'cutmix_unlabeled', 'student_pass', 'loss_sup', 'loss_unsup', 'contrast_targets',
             'loss_contrast', 'update_bank_and_prototypes']
    seen = [e.name for e in sorted(prof.events(), key=lambda e: e.time_range.start) if e.name.startswith('esl.')]
    assert seen == [f'esl.{step}' for step in steps]
