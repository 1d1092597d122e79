"""ESLSegmentor: golden loss with stub networks, gradients, teacher policy, batch layout, checkpoints."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import nn

import mmseg_esl  # noqa: F401
from mmseg_esl.models.segmentors import ESLSegmentor
from mmseg_esl.models.segmentors import esl_segmentor as esl_module
from mmseg_esl.testing.stub_segmentor import stub_segmentor_cfg

NUM_CLASSES = 3


@pytest.fixture(autouse=True)
def mmseg_scope():
    """mmengine builds data preprocessors in the default scope, as the runner sets it."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')


def dsl_only(**kwargs) -> ESLSegmentor:
    """An ESLSegmentor without the contrastive term (K = 0): these tests check Eq. 1-6 by hand."""
    semi_train_cfg = dict(kwargs.pop('semi_train_cfg', {}))
    semi_train_cfg.setdefault('loss_contrast', dict(num_parts=0))
    return ESLSegmentor(segmentor=stub_segmentor_cfg(), semi_train_cfg=semi_train_cfg, **kwargs)


def build_model(**kwargs) -> ESLSegmentor:
    torch.manual_seed(0)
    model = dsl_only(**kwargs)
    model.init_weights()
    # A teacher that differs from the student, as after some EMA steps.
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def sample(is_labeled: bool, height: int, width: int, gt=None, img_shape=None) -> SegDataSample:
    ds = SegDataSample(metainfo=dict(is_labeled=is_labeled, img_shape=img_shape or (height, width),
                                     pad_shape=(height, width), ori_shape=(height, width)))
    if gt is not None:
        ds.gt_sem_seg = PixelData(data=gt[None])
    return ds


def make_batch(height=6, width=5, seed=1):
    """[1 labeled | 1 unlabeled | 1 partner]; the partner has 2 rows of padding at the bottom."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(3, 3, height, width, generator=g)
    gt = torch.randint(0, NUM_CLASSES, (height, width), generator=g)
    gt[0, 0] = 255
    samples = [sample(True, height, width, gt), sample(False, height, width),
               sample(False, height, width, img_shape=(height - 2, width))]
    return inputs, samples


FIXED_BOX = (1, 1, 6, 4)  # (y1, x1, y2, x2): rows 1..5, cols 1..3 come from the partner


@pytest.fixture
def fixed_box(monkeypatch):
    def boxes(n, height, width, **kwargs):
        return torch.tensor([FIXED_BOX] * n), torch.ones(n, dtype=torch.bool)
    monkeypatch.setattr(esl_module, 'sample_cutmix_boxes', boxes)


def conv1x1(module: nn.Conv2d, x):
    return torch.einsum('oc,nchw->nohw', module.weight[:, :, 0, 0], x) + module.bias[None, :, None, None]


def stub_logits(net, x):
    """The stub segmentor's logits computed by hand: two 1x1 convolutions."""
    return conv1x1(net.decode_head.conv_seg, conv1x1(net.backbone.conv, x))


def naive_dsl(p, eta):
    """Eq. 3-5 for one pixel, in plain Python."""
    order = sorted(range(len(p)), key=lambda c: -p[c])
    total, delta = 0.0, p[order[-1]]
    for c in order:
        total += p[c]
        if total >= eta:
            delta = p[c]
            break
    kept = [v if v >= delta else 0.0 for v in p]
    return [v / sum(kept) for v in kept]


def test_golden_loss_equals_hand_computation(fixed_box):
    model = build_model()
    model.train()
    inputs, samples = make_batch()
    losses = model.loss(inputs, samples)

    with torch.no_grad():
        # Supervised CE (Eq. 2), mmseg's CrossEntropyLoss: mean over all pixels, ignored ones count 0.
        gt = samples[0].gt_sem_seg.data[0]
        ce = F.cross_entropy(stub_logits(model.student, inputs[:1]), gt[None], ignore_index=255,
                             reduction='none').sum() / gt.numel()
        # Teacher probabilities, CutMix with the fixed box, DSL, soft CE over valid pixels (Eq. 3-6).
        p_t = stub_logits(model.teacher, inputs[1:]).softmax(1)
        y1, x1, y2, x2 = FIXED_BOX
        x_mix = inputs[1].clone()
        x_mix[:, y1:y2, x1:x2] = inputs[2][:, y1:y2, x1:x2]
        p_mix = p_t[0].clone()
        p_mix[:, y1:y2, x1:x2] = p_t[1][:, y1:y2, x1:x2]
        valid = torch.ones(6, 5, dtype=torch.bool)
        valid[4:, x1:x2] = False  # the partner's padding (rows 4-5) pasted inside the box
        log_q = stub_logits(model.student, x_mix[None])[0].log_softmax(0)
        terms = []
        for i in range(6):
            for j in range(5):
                if valid[i, j]:
                    y = naive_dsl(p_mix[:, i, j].tolist(), 0.95)
                    terms.append(-sum(y[c] * log_q[c, i, j].item() for c in range(NUM_CLASSES)))
        sce = sum(terms) / len(terms)

    assert losses['decode.loss_ce'].item() == pytest.approx(ce.item(), rel=1e-5)
    assert losses['unsup.loss_dsl'].item() == pytest.approx(0.2 * sce, rel=1e-5)
    assert 'decode.acc_seg' in losses and 'unsup.dominant_classes' in losses


@pytest.mark.parametrize('term', ['decode.loss_ce', 'unsup.loss_dsl'])
def test_each_term_trains_the_student_only(fixed_box, term):
    model = build_model()
    model.train()
    losses = model.loss(*make_batch())
    losses[term].backward()
    grads = [p.grad for p in model.student.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())


def test_unlabeled_ground_truth_never_changes_the_loss(fixed_box):
    model = build_model()
    model.train()
    inputs, samples = make_batch()
    plain = model.loss(inputs, samples)
    for k, ds in enumerate(samples[1:]):
        ds.gt_sem_seg = PixelData(data=torch.full((1, 6, 5), k, dtype=torch.long))
    with_gt = model.loss(inputs, samples)
    assert with_gt['unsup.loss_dsl'].item() == plain['unsup.loss_dsl'].item()
    assert with_gt['decode.loss_ce'].item() == plain['decode.loss_ce'].item()
    assert 'pseudo_acc' not in ' '.join(plain) and 'unsup.pseudo_acc' in with_gt


def test_unlabeled_ground_truth_of_some_samples_is_used_and_the_others_are_ignored():
    from mmseg.structures import SegDataSample

    from mmseg_esl.models.segmentors import batch_layout
    with_gt, without = SegDataSample(), SegDataSample()
    with_gt.gt_sem_seg = PixelData(data=torch.full((1, 2, 3), 4, dtype=torch.long))
    gt, = batch_layout.unlabeled_gt([without, with_gt, without], torch.device('cpu'))
    assert gt.shape == (3, 2, 3)
    assert (gt[1] == 4).all() and (gt[0] == 255).all() and (gt[2] == 255).all()
    assert batch_layout.unlabeled_gt([without, without], torch.device('cpu')) == []


def test_pseudo_label_accuracy_is_not_logged_without_a_known_pixel(fixed_box):
    model = dsl_only()
    probs = torch.tensor([[.6, .3, .1], [.34, .33, .33]]).T.reshape(1, 3, 2, 1)
    pseudo = model.unsup_loss.pseudo_label(probs)
    valid = torch.tensor([True, False]).reshape(1, 2, 1)
    gt = torch.tensor([255, 1]).reshape(1, 2, 1)  # truth only where the pixel is not valid
    stats = model.pseudo_label_stats(probs, pseudo, valid, gt)
    assert 'pseudo_acc' not in stats and 'gt_mass_multi' not in stats and 'teacher_conf' in stats
    assert 'teacher_conf_multi' not in stats


def test_pseudo_label_statistics_by_hand(fixed_box):
    model = dsl_only()
    probs = torch.tensor([[.6, .3, .1], [.34, .33, .33], [.97, .02, .01]]).T.reshape(1, 3, 3, 1)
    pseudo = model.unsup_loss.pseudo_label(probs)
    valid = torch.tensor([True, True, False]).reshape(1, 3, 1)
    gt = torch.tensor([0, 1, 0]).reshape(1, 3, 1)
    stats = model.pseudo_label_stats(probs, pseudo, valid, gt)
    # Pixel 0: .6 + .3 < .95 -> 3 dominant; pixel 1: 3 dominant; pixel 2 is invalid.
    assert stats['dominant_classes'].item() == pytest.approx(3.0)
    assert stats['multi_dominant'].item() == pytest.approx(1.0)
    assert stats['teacher_conf'].item() == pytest.approx((.6 + .34) / 2)
    assert stats['pseudo_acc'].item() == pytest.approx(0.5)  # argmax 0 right at pixel 0, wrong at pixel 1



def test_soft_and_hard_signal_on_multi_dominant_pixels_by_hand(fixed_box):
    """Where DSL keeps >= 2 classes: the argmax's accuracy vs the soft label's mass on the true class."""
    model = dsl_only()
    probs = torch.tensor([[.6, .3, .1], [.34, .33, .33], [.97, .02, .01], [.98, .01, .01]]).T.reshape(1, 3, 4, 1)
    pseudo = model.unsup_loss.pseudo_label(probs)
    valid = torch.tensor([True, True, False, True]).reshape(1, 4, 1)
    gt = torch.tensor([0, 1, 0, 2]).reshape(1, 4, 1)
    stats = model.pseudo_label_stats(probs, pseudo, valid, gt)
    # Pixels 0 and 1 have 3 dominant classes (y* = p); pixel 3 is one-hot (and wrong), pixel 2 invalid.
    assert stats['pseudo_acc_multi'].item() == pytest.approx(0.5)
    assert stats['gt_mass_multi'].item() == pytest.approx((.6 + .33) / 2)
    assert stats['teacher_conf_multi'].item() == pytest.approx((.6 + .34) / 2)
    assert stats['pseudo_acc'].item() == pytest.approx(1 / 3)

def test_hard_mode_gives_one_dominant_class(fixed_box):
    model = build_model(semi_train_cfg=dict(loss_unsup=dict(type='DSLLoss', mode='hard', loss_weight=0.2)))
    losses = model.loss(*make_batch())
    assert losses['unsup.dominant_classes'].item() == pytest.approx(1.0)
    assert losses['unsup.multi_dominant'].item() == 0.0


def test_batch_partner_mode_uses_a_derangement():
    model = build_model(semi_train_cfg=dict(cutmix=dict(partner='batch')))
    inputs, samples = make_batch()
    losses = model.loss(inputs, samples)  # 1 labeled + 2 unlabeled, mixed with each other
    assert torch.isfinite(losses['unsup.loss_dsl'])


def test_teacher_stays_in_eval_mode():
    model = build_model()
    model.train()
    assert model.student.training and not model.teacher.training
    assert not any(m.training for m in model.teacher.modules())


def test_init_weights_starts_teacher_as_student():
    model = dsl_only()
    model.init_weights()
    for (name, s), (_, t) in zip(model.student.state_dict().items(), model.teacher.state_dict().items()):
        assert torch.equal(s, t), name


def test_plain_checkpoint_loads_into_student_and_teacher():
    plain = MODELS.build(stub_segmentor_cfg())
    plain.init_weights()
    model = dsl_only()
    model.load_state_dict(plain.state_dict(), strict=True)
    for name, value in plain.state_dict().items():
        assert torch.equal(model.student.state_dict()[name], value)
        assert torch.equal(model.teacher.state_dict()[name], value)
    # An ESL checkpoint loads as it is.
    copy_model = dsl_only()
    copy_model.load_state_dict(copy.deepcopy(model.state_dict()), strict=True)


@pytest.mark.parametrize('predict_on', ['teacher', 'student'])
def test_predict_runs_on_the_chosen_network(predict_on):
    model = build_model(semi_test_cfg=dict(predict_on=predict_on))
    model.eval()
    inputs, _ = make_batch()
    expected = stub_logits(getattr(model, predict_on), inputs)
    assert torch.allclose(model._forward(inputs), expected, atol=1e-5)
    assert model.num_classes == NUM_CLASSES and model.out_channels == NUM_CLASSES
    assert model.decode_head is getattr(model, predict_on).decode_head and model.align_corners is False
    predictions = model.predict(inputs)
    assert predictions[0].pred_sem_seg.data.shape == (1, 6, 5)


def test_badly_laid_out_batches_are_explained(fixed_box):
    model = build_model()
    inputs, samples = make_batch()
    with pytest.raises(ValueError, match='labeled then unlabeled'):
        model.loss(inputs, [samples[1], samples[0], samples[2]])
    with pytest.raises(ValueError, match="needs as many partners"):
        model.loss(inputs[:2], samples[:2])
    bare = [SegDataSample(metainfo=dict(img_shape=(6, 5))) for _ in range(3)]
    with pytest.raises(ValueError, match="need 'is_labeled'"):
        model.loss(inputs, bare)


@pytest.mark.parametrize('kwargs, message', [
    (dict(semi_train_cfg=dict(cutmix=dict(partner='both'))), "partner must be 'extra' or 'batch'"),
    (dict(semi_train_cfg=dict(cutmx=dict())), "Unknown semi_train_cfg key 'cutmx'"),
    (dict(semi_test_cfg=dict(predict_on='ema')), "predict_on must be 'teacher' or 'student'"),
])
def test_bad_config_is_explained(kwargs, message):
    with pytest.raises((KeyError, ValueError), match=message):
        dsl_only(**kwargs)


def test_student_optim_wrapper_holds_student_parameters_only():
    from mmengine.optim import build_optim_wrapper
    model = build_model()
    wrapper = build_optim_wrapper(model, dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1),
                                              constructor='StudentOptimWrapperConstructor'))
    in_optimizer = {id(p) for group in wrapper.optimizer.param_groups for p in group['params']}
    assert in_optimizer == {id(p) for p in model.student.parameters()}
    with pytest.raises(TypeError, match='needs a model with a `student` module'):
        build_optim_wrapper(model.student, dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1),
                                                constructor='StudentOptimWrapperConstructor'))
