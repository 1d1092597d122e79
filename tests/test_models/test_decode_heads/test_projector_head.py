"""ProjectorHead (ESL's P) and DecodeFeatureTap, the hook that feeds it a decode head's pre-dropout features."""
import copy
import pickle

import pytest
import torch
import torch.nn as nn
from mmengine.registry import init_default_scope
from mmseg.models.decode_heads import DepthwiseSeparableASPPHead, FCNHead, SegformerHead, UPerHead
from mmseg.registry import MODELS

import mmseg_esl  # noqa: F401  (registers ProjectorHead)
from mmseg_esl.models.decode_heads import DecodeFeatureTap, ProjectorHead, tap_decode_features

BN = dict(type='BN', requires_grad=True)


# --------------------------------------------------------------------------- ProjectorHead


def test_projector_maps_features_to_embedding_at_the_same_resolution():
    torch.manual_seed(0)
    head = ProjectorHead(in_channels=8, channels=16, out_channels=32)
    z = head(torch.randn(2, 8, 5, 7))
    assert z.shape == (2, 32, 5, 7) and z.dtype == torch.float32
    assert (z < 0).any() and (z > 0).any()  # the last layer is linear: z is not forced non-negative
    head.eval()
    assert head(torch.randn(1, 8, 3, 3)).shape == (1, 32, 3, 3)


def test_projector_layers_are_two_conv3x3_bn_relu_then_a_plain_conv1x1():
    head = ProjectorHead(in_channels=8, channels=16, out_channels=32)
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3), (3, 3), (1, 1)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(8, 16), (16, 16), (16, 32)]
    assert [c.bias is not None for c in convs] == [False, False, True]  # BN follows the 3x3 convs only
    assert sum(isinstance(m, nn.BatchNorm2d) for m in head.modules()) == 2
    assert sum(isinstance(m, nn.ReLU) for m in head.modules()) == 2
    assert list(head.children())[-1] is convs[-1]  # nothing after the 1x1 conv
    assert not hasattr(head, 'conv_seg')
    assert ProjectorHead(in_channels=8).out_channels == 512 and ProjectorHead(in_channels=8).channels == 256


def test_projector_options_and_errors():
    head = ProjectorHead(in_channels=4, channels=8, out_channels=6, norm_cfg=None)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in head.modules())
    with pytest.raises(TypeError):
        ProjectorHead(4, 8, 6)  # keyword-only
    with pytest.raises(ValueError, match='out_channels must be a positive int'):
        ProjectorHead(in_channels=4, out_channels=0)
    with pytest.raises(ValueError, match=r'expects features of shape \(N, 4, h, w\).*in_channels'):
        head(torch.randn(2, 5, 3, 3))
    with pytest.raises(ValueError, match='expects features'):
        head(torch.randn(4, 3, 3))


def test_projector_builds_from_the_registry_in_the_mmseg_scope():
    init_default_scope('mmseg')
    head = MODELS.build(dict(type='ProjectorHead', in_channels=8, channels=16, out_channels=32))
    assert isinstance(head, ProjectorHead)
    assert head(torch.randn(2, 8, 4, 4)).shape == (2, 32, 4, 4)
    sync = MODELS.build(dict(type='ProjectorHead', in_channels=8, channels=16, norm_cfg=dict(type='SyncBN')))
    assert isinstance(sync.convs[0].bn, nn.SyncBatchNorm)


# --------------------------------------------------------------------------- DecodeFeatureTap


def make_head(kind: str, dropout_ratio: float):
    """A small decode head and its inputs (multi-level features of a batch of 2)."""
    common = dict(num_classes=3, dropout_ratio=dropout_ratio, norm_cfg=BN)
    c4, c8 = torch.randn(2, 4, 16, 16), torch.randn(2, 8, 8, 8)
    if kind == 'fcn':
        return FCNHead(in_channels=8, channels=6, num_convs=1, **common), [c8]
    if kind == 'deeplabv3plus':
        head = DepthwiseSeparableASPPHead(in_channels=8, in_index=1, channels=6, c1_in_channels=4, c1_channels=4,
                                          dilations=(1, 2), **common)
        return head, [c4, c8]
    if kind == 'uper':
        return UPerHead(in_channels=[4, 8], in_index=[0, 1], channels=6, pool_scales=(1, 2), **common), [c4, c8]
    if kind == 'segformer':
        return SegformerHead(in_channels=[4, 8], in_index=[0, 1], channels=6, **common), [c4, c8]
    raise KeyError(kind)


HEADS = ['fcn', 'deeplabv3plus', 'uper', 'segformer']


def pre_classifier_features(head, inputs):
    """What the head passes to cls_seg, computed by running it with cls_seg replaced by the identity."""
    head.cls_seg = lambda feat: feat
    try:
        return head(inputs)
    finally:
        del head.cls_seg


def record_conv_seg_input(head):
    seen = {}
    handle = head.conv_seg.register_forward_pre_hook(lambda module, args: seen.__setitem__('x', args[0]))
    return seen, handle


@pytest.mark.parametrize('kind', HEADS)
def test_tap_captures_the_pre_dropout_features_in_train_mode(kind):
    torch.manual_seed(0)
    head, inputs = make_head(kind, dropout_ratio=0.5)
    head.train()
    tap = DecodeFeatureTap(head)
    assert tap.hooked_module is head.dropout
    seen, _ = record_conv_seg_input(head)

    logits = head(inputs)
    feats = tap.pop()
    assert feats.shape[:2] == (2, 6) and feats.shape[-2:] == logits.shape[-2:]
    # conv_seg saw the dropped-out features: whole channels zeroed, the others scaled by 1 / (1 - 0.5).
    assert not torch.equal(seen['x'], feats)
    dropped = seen['x'].flatten(2).abs().amax(dim=2) == 0  # (N, C)
    assert dropped.any() and not dropped.all()
    torch.testing.assert_close(seen['x'][~dropped], 2 * feats[~dropped])
    # The tapped tensor is the input of cls_seg, i.e. what the head computes before classifying.
    torch.testing.assert_close(feats, pre_classifier_features(head, inputs))
    if kind in ('fcn', 'uper'):  # their forward is cls_seg(_forward_feature(inputs)); DeepLabv3+'s is not
        torch.testing.assert_close(feats, head._forward_feature(inputs))


@pytest.mark.parametrize('kind', HEADS)
def test_tap_in_eval_mode_classifies_to_the_head_output(kind):
    head, inputs = make_head(kind, dropout_ratio=0.5)
    head.eval()
    tap = tap_decode_features(head)
    logits = head(inputs)
    torch.testing.assert_close(head.conv_seg(tap.pop()), logits)


@pytest.mark.parametrize('kind', HEADS)
def test_tap_falls_back_to_conv_seg_when_the_head_has_no_dropout(kind):
    head, inputs = make_head(kind, dropout_ratio=0.0)
    assert head.dropout is None
    tap = DecodeFeatureTap(head)
    assert tap.hooked_module is head.conv_seg
    seen, _ = record_conv_seg_input(head)
    head.train()
    head(inputs)
    feats = tap.pop()
    assert feats is seen['x']
    torch.testing.assert_close(feats, pre_classifier_features(head, inputs))


def test_tap_feeds_a_projector_with_gradients_into_the_decoder():
    head, inputs = make_head('deeplabv3plus', dropout_ratio=0.1)
    projector = ProjectorHead(in_channels=head.channels, channels=8, out_channels=16)
    tap = DecodeFeatureTap(head)
    logits = head(inputs)
    z = projector(tap.pop())
    assert z.shape == (2, 16, 16, 16) and z.shape[-2:] == logits.shape[-2:]  # stride of the c1 features
    z.pow(2).mean().backward()
    assert head.sep_bottleneck[0].depthwise_conv.conv.weight.grad is not None
    assert head.conv_seg.weight.grad is None  # the projector's loss does not reach the classifier


def test_pop_returns_the_last_capture_and_clears_it():
    head, inputs = make_head('fcn', dropout_ratio=0.1)
    tap = DecodeFeatureTap(head)
    with pytest.raises(RuntimeError, match='did not call cls_seg'):
        tap.pop()
    head.eval()
    head(inputs)
    first = tap.features
    head([2 * inputs[0]])
    assert tap.features is not first  # only the last call is kept
    last = tap.pop()
    torch.testing.assert_close(last, head._forward_feature([2 * inputs[0]]))
    assert tap.features is None
    with pytest.raises(RuntimeError, match='FCNHead.*did not call cls_seg'):
        tap.pop()


def test_tap_can_be_disabled_and_removed():
    head, inputs = make_head('uper', dropout_ratio=0.1)
    tap = DecodeFeatureTap(head)
    tap.enabled = False
    head(inputs)
    assert tap.features is None
    tap.enabled = True
    head(inputs)
    assert tap.features is not None
    tap.remove()
    assert tap.features is None and len(head.dropout._forward_pre_hooks) == 0
    head(inputs)
    with pytest.raises(RuntimeError):
        tap.pop()


def test_tap_rejects_a_module_without_conv_seg():
    with pytest.raises(ValueError, match='without a conv_seg module'):
        DecodeFeatureTap(ProjectorHead(in_channels=4))


def test_a_deep_copied_head_does_not_feed_the_original_tap():
    head, inputs = make_head('deeplabv3plus', dropout_ratio=0.1)
    tap = DecodeFeatureTap(head)
    head(inputs)
    teacher = copy.deepcopy(head)  # how ESLSegmentor builds its teacher
    tap.pop()
    teacher(inputs)
    assert tap.features is None  # the copied hook is a no-op
    teacher_tap = DecodeFeatureTap(teacher)  # one tap per model, created after the copy
    head(inputs)
    assert teacher_tap.features is None and tap.features is not None
    teacher(inputs)
    assert teacher_tap.pop() is not tap.pop()


def test_deep_copying_a_model_with_its_tap_rewires_the_tap_to_the_copy():
    head, inputs = make_head('segformer', dropout_ratio=0.1)
    model = nn.Module()
    model.head = head
    model.tap = DecodeFeatureTap(head)
    head(inputs)
    clone = copy.deepcopy(model)
    assert clone.tap is not model.tap and clone.tap.decode_head is clone.head
    assert clone.tap.features is None  # captured tensors are not copied
    model.tap.pop()
    clone.head(inputs)
    assert model.tap.features is None
    torch.testing.assert_close(clone.tap.pop(), pre_classifier_features(clone.head, inputs))


def test_a_head_with_a_tap_pickles():
    head, inputs = make_head('fcn', dropout_ratio=0.1)
    tap = DecodeFeatureTap(head)
    restored = pickle.loads(pickle.dumps(head))
    restored(inputs)
    assert tap.features is None
