"""ESLSegmentor's switches for EMATeacherHook: the supervised-only phase, the teacher's own BN statistics, and
validation of both models (``val_step``)."""
import copy

import pytest
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

import mmseg_esl  # noqa: F401
from mmseg_esl.models.segmentors import ESLSegmentor
from mmseg_esl.testing.stub_segmentor import stub_segmentor_cfg

H, W, NUM_CLASSES = 6, 5, 3


@pytest.fixture(autouse=True)
def mmseg_scope():
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')


def build(contrast: bool = False, bn: bool = False, seed: int = 0) -> ESLSegmentor:
    """Stub segmentor (with a Conv-BN-ReLU in the decode head if ``bn``); a teacher that differs from the student."""
    torch.manual_seed(seed)
    head = dict(num_convs=1, norm_cfg=dict(type='BN')) if bn else {}
    loss_contrast = (dict(type='PixelPartContrastLoss', feat_channels=4, num_parts=2, stride=1, queue_size=8,
                          num_negatives=5, conf_thresh=0.3) if contrast else dict(num_parts=0))
    model = ESLSegmentor(segmentor=stub_segmentor_cfg(**head), semi_train_cfg=dict(loss_contrast=loss_contrast),
                         projector=dict(type='ProjectorHead', channels=4, out_channels=6, norm_cfg=None))
    model.init_weights()
    model.train()
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.add_(0.3 * torch.randn_like(p))
    if contrast:
        model.contrast_loss.set_prototypes_(torch.randn_like(model.contrast_loss.prototypes))
    return model


def make_batch(seed: int = 1):
    """[2 labeled | 2 unlabeled | 2 partners]."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(6, 3, H, W, generator=g)
    samples = []
    for i in range(6):
        ds = SegDataSample(metainfo=dict(is_labeled=i < 2, img_shape=(H, W), pad_shape=(H, W), ori_shape=(H, W)))
        ds.gt_sem_seg = PixelData(data=torch.randint(0, NUM_CLASSES, (1, H, W), generator=g))
        samples.append(ds)
    return inputs, samples


def grads(model: ESLSegmentor, losses: dict) -> dict:
    model.zero_grad()
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.student.named_parameters()}


@pytest.mark.parametrize('contrast', [False, True])
def test_supervised_only_phase_is_the_plain_supervised_loss(contrast, monkeypatch):
    model = build(contrast=contrast)
    model.semi_supervised = False
    inputs, samples = make_batch()

    def no_teacher(*args, **kwargs):
        raise AssertionError('the teacher must not run in the supervised-only phase')

    monkeypatch.setattr(model.teacher, 'extract_feat', no_teacher)
    state = copy.deepcopy(model.state_dict())
    losses = model.loss(inputs, samples)
    expected_keys = {'decode.loss_ce', 'decode.acc_seg'} | ({'contrast.loss_ctr'} if contrast else set())
    assert set(losses) == expected_keys
    reference = model.student.loss(inputs[:2], samples[:2])  # mmseg's own supervised loss on the labeled images
    torch.testing.assert_close(losses['decode.loss_ce'], reference['decode.loss_ce'])
    if contrast:
        assert losses['contrast.loss_ctr'].item() == 0.0
    gradients = grads(model, losses)
    # Every student parameter takes part (DDP needs it); the projector's gradient is exactly 0.
    assert all(g is not None for g in gradients.values())
    if contrast:
        assert all(torch.count_nonzero(g) == 0 for n, g in gradients.items() if n.startswith('projector.'))
    # The unlabeled images change nothing; bank, prototypes and teacher are untouched.
    changed = inputs.clone()
    changed[2:] = torch.randn_like(changed[2:])
    again = model.loss(changed, samples)
    torch.testing.assert_close(again['decode.loss_ce'], losses['decode.loss_ce'])
    for name, value in model.state_dict().items():
        if not name.startswith('student.'):
            assert torch.equal(value, state[name]), name


def test_semi_supervised_phase_runs_the_teacher_and_every_term():
    model = build(contrast=True)
    assert model.semi_supervised is True and model.teacher_own_bn_stats is False  # defaults without the hook
    losses = model.loss(*make_batch())
    assert {'unsup.loss_dsl', 'contrast.loss_ctr', 'unsup.teacher_conf'} <= set(losses)


def bn_layers(net):
    return [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_teacher_own_bn_statistics_come_from_its_weak_batch():
    model = build(bn=True)
    model.teacher_own_bn_stats = True
    inputs, samples = make_batch()
    reference = copy.deepcopy(model.teacher).train()  # the teacher in train mode on its weak batch
    with torch.no_grad():
        expected_logits = reference.decode_head.forward(reference.extract_feat(inputs[2:]))
    student_stats = [b.running_mean.clone() for b in bn_layers(model.student)]
    seen = {}

    def record(module, args, output):
        seen['logits'] = output

    handle = model.teacher.decode_head.conv_seg.register_forward_hook(record)
    model.loss(inputs, samples)
    handle.remove()
    torch.testing.assert_close(seen['logits'], expected_logits)  # normalised with the batch's statistics
    for ours, theirs in zip(bn_layers(model.teacher), bn_layers(reference)):
        torch.testing.assert_close(ours.running_mean, theirs.running_mean)
        torch.testing.assert_close(ours.running_var, theirs.running_var)
        assert ours.num_batches_tracked.item() == 1 and not ours.training  # back in eval mode
    assert not model.teacher.training
    # The student's statistics come from the student's own forward, not from the teacher's batch.
    assert all(not torch.equal(a, b.running_mean) for a, b in zip(student_stats, bn_layers(model.student)))
    assert all(p.grad is None for p in model.teacher.parameters())


def test_teacher_bn_statistics_frozen_without_the_switch_and_where_the_student_freezes_them():
    model = build(bn=True)
    before = [b.running_mean.clone() for b in bn_layers(model.teacher)]
    model.loss(*make_batch())
    assert all(torch.equal(a, b.running_mean) for a, b in zip(before, bn_layers(model.teacher)))
    model.teacher_own_bn_stats = True
    for bn in bn_layers(model.student):  # e.g. a backbone with norm_eval=True
        bn.eval()
    model.loss(*make_batch())
    assert all(torch.equal(a, b.running_mean) for a, b in zip(before, bn_layers(model.teacher)))


@pytest.mark.parametrize('predict_on', ['teacher', 'student'])
def test_val_step_predicts_with_both_models_and_test_step_with_one(predict_on):
    torch.manual_seed(0)
    model = ESLSegmentor(segmentor=stub_segmentor_cfg(), semi_train_cfg=dict(loss_contrast=dict(num_parts=0)),
                         semi_test_cfg=dict(predict_on=predict_on))
    model.init_weights()
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.add_(torch.randn_like(p))
    model.eval()
    inputs, samples = make_batch()
    data = dict(inputs=list(inputs[:3]), data_samples=samples[:3])
    out = model.val_step(copy.deepcopy(data))
    for name in ('teacher', 'student'):
        expected = getattr(model, name).predict(inputs[:3], copy.deepcopy(samples[:3]))
        for sample, ref in zip(out, expected):
            assert torch.equal(sample.get(f'{name}_pred_sem_seg').data, ref.pred_sem_seg.data), name
            if name == predict_on:
                assert torch.equal(sample.pred_sem_seg.data, ref.pred_sem_seg.data)
    assert not torch.equal(out[0].teacher_pred_sem_seg.data, out[0].student_pred_sem_seg.data)
    tested = model.test_step(copy.deepcopy(data))
    assert all('teacher_pred_sem_seg' not in s and 'student_pred_sem_seg' not in s for s in tested)
    model.val_both = False
    assert all('teacher_pred_sem_seg' not in s for s in model.val_step(copy.deepcopy(data)))


@pytest.mark.parametrize('cfg, message', [
    (dict(val_both='yes'), "val_both must be True or False, got 'yes'"),
    (dict(predict_on='teacher', score='both'), r"Unknown semi_test_cfg key\(s\) \['score'\]"),
])
def test_bad_semi_test_cfg_is_explained(cfg, message):
    with pytest.raises((ValueError, KeyError), match=message):
        ESLSegmentor(segmentor=stub_segmentor_cfg(), semi_train_cfg=dict(loss_contrast=dict(num_parts=0)),
                     semi_test_cfg=cfg)


def test_one_labeled_image_with_batch_norm_in_the_supervised_phase_is_explained(monkeypatch):
    """One labeled image per process: BN after global pooling (ASPP) fails; the error says what to change."""
    model = build()
    model.semi_supervised = False
    inputs, samples = make_batch()
    inputs, samples = torch.cat([inputs[:1], inputs[2:]]), samples[:1] + samples[2:]  # 1 labeled image

    def bn_of_one(feats):
        torch.nn.functional.batch_norm(torch.ones(1, 2, 1, 1), None, None, training=True)

    monkeypatch.setattr(model.student.decode_head, 'forward', bn_of_one)
    with pytest.raises(ValueError, match=r'forwards the 1 labeled image\(s\) of this process alone.*'
                                         r'sampler.num_labeled.*sup_only_iters=0'):
        model.loss(inputs, samples)

    def other_error(feats):
        raise ValueError('something else')

    monkeypatch.setattr(model.student.decode_head, 'forward', other_error)
    with pytest.raises(ValueError, match='^something else$'):
        model.loss(inputs, samples)
