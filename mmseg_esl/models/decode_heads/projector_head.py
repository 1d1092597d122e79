"""The projector head P of ESL (paper §3.1) and the tap that feeds it the decoder's features.

Each network of ESL is "an encoder E, a decoder D, a projector head P, and a segmentation head S" (§3.1):
P and S both read the decoder's features; S gives the class logits, P the embedding z of size
H/τ × W/τ × L (τ = 4, L = 512) used by the pixel-to-part contrastive loss (§3.3). In mmseg, D and S live
in one decode head (``cls_seg`` is S), so the two pieces here are:

* :class:`ProjectorHead`: P itself, a small conv net ``(N, C_in, h, w) -> (N, L, h, w)`` at the
  resolution of the features it receives (DeepLabv3+'s decoder features are at stride 4, the paper's τ).
* :class:`DecodeFeatureTap` (or :func:`tap_decode_features`): the attach point. It captures the features a
  decode head hands to its classifier, *before* mmseg's dropout, without changing the head's code::

      tap = DecodeFeatureTap(segmentor.decode_head)
      seg_logits = segmentor.decode_head(feats)   # e.g. inside decode_head.loss(...)
      z = projector(tap.pop())                    # (N, L, h, w), gradients flow into the decoder

Why before dropout: mmseg's ``BaseDecodeHead.cls_seg`` is ``conv_seg(dropout(feat))``; dropout there
regularises the classifier only. A forward pre-hook on ``conv_seg`` would see the dropped-out features, so
the tap hooks ``decode_head.dropout`` (whose input is the pre-dropout feature) and falls back to
``conv_seg`` when the head has no dropout (``dropout_ratio=0``).

Taps and ``copy.deepcopy``: a module's hooks are copied with it, and ESL builds its teacher as a deepcopy
of the student. A copied hook must not feed the original tap (the teacher would overwrite the student's
features), so the hook object copies (and pickles) as a no-op. Create one tap per model *after* the copy,
or deep-copy the tap together with the model: ``copy.deepcopy(tap)`` returns a new, empty tap attached to
the copy of its head.
"""
from __future__ import annotations

import copy
import weakref
from typing import Optional

import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptConfigType
from torch import Tensor

from ...checks import positive_int

__all__ = ['DecodeFeatureTap', 'ProjectorHead', 'tap_decode_features']

#: Defaults of :class:`ProjectorHead` (copied on use, never mutated). ``norm_cfg=None`` means no norm layer.
DEFAULT_NORM_CFG = dict(type='BN', requires_grad=True)
DEFAULT_ACT_CFG = dict(type='ReLU')


@MODELS.register_module()
class ProjectorHead(BaseModule):
    """Projector P of ESL: maps decoder features to the contrastive embedding z (U2PL's representation head).

    Layers: ``conv3x3(C_in -> channels)-BN-ReLU``, ``conv3x3(channels -> channels)-BN-ReLU``, then a plain
    ``conv1x1(channels -> out_channels)`` with bias and no norm or activation, so that z is not forced to be
    non-negative (a final ReLU would confine every cosine similarity of Eq. 7-10 to [0, 1]). The 3×3 convs
    use padding 1 and stride 1: the output has the spatial size of the input. The paper says "three
    Conv-BN-ReLU blocks" (§3.4); we follow U2PL, whose code ESL builds on, in ending with a linear layer.
    U2PL also puts ``Dropout2d(0.1)`` after each block; we leave it out.

    This is not an mmseg decode head: it has NO ``conv_seg``, no loss and no ``predict``; the contrastive
    loss consumes its output. It does not resize: feed it features at the resolution where z is wanted
    (e.g. DeepLabv3+'s stride-4 decoder features, captured with :class:`DecodeFeatureTap`).

    Args:
        in_channels: Channels C_in of the input features (e.g. the decode head's ``channels``).
        channels: Channels of the two hidden conv blocks.
        out_channels: Embedding dimension L of z (512 in the paper).
        norm_cfg: Norm layer of the hidden blocks, as for ``mmcv.cnn.ConvModule``; default
            ``dict(type='BN', requires_grad=True)`` (use ``SyncBN`` in distributed training, like the rest of
            the model; None: no norm, the convs then get a bias).
        act_cfg: Activation of the hidden blocks; default ``dict(type='ReLU')``.
        init_cfg: Initialisation config (mmengine ``BaseModule``).

    Raises:
        ValueError: If a channel count is not a positive integer.
    """

    def __init__(self, *, in_channels: int, channels: int = 256, out_channels: int = 512,
                 norm_cfg: OptConfigType = DEFAULT_NORM_CFG, act_cfg: ConfigType = DEFAULT_ACT_CFG,
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = positive_int('in_channels', in_channels, owner='ProjectorHead')
        self.channels = positive_int('channels', channels, owner='ProjectorHead')
        self.out_channels = positive_int('out_channels', out_channels, owner='ProjectorHead')
        norm_cfg, act_cfg = copy.deepcopy(norm_cfg), copy.deepcopy(act_cfg)
        self.convs = nn.Sequential(
            ConvModule(in_channels, channels, 3, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg),
            ConvModule(channels, channels, 3, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg),
        )
        self.proj = nn.Conv2d(channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Projects features to the embedding.

        Args:
            x: Features of shape (N, C_in, h, w).

        Returns:
            z of shape (N, L, h, w), unnormalised and of any sign (the loss normalises it for cosines).

        Raises:
            ValueError: If ``x`` is not 4-D with ``in_channels`` channels.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'ProjectorHead expects features of shape (N, {self.in_channels}, h, w), got {tuple(x.shape)}; '
                f'set in_channels to the channels of the features it receives (the decode head\'s channels).')
        return self.proj(self.convs(x))


class _TapHook:
    """Forward pre-hook that stores its module's first input in a :class:`DecodeFeatureTap`.

    Holds the tap by weak reference (a dropped tap stops capturing) and copies or pickles as a no-op hook,
    so a deep copy of the hooked module never feeds the original tap.
    """

    def __init__(self, tap: Optional[DecodeFeatureTap]) -> None:
        self._tap = weakref.ref(tap) if tap is not None else None

    def __call__(self, module: nn.Module, args: tuple) -> None:
        tap = self._tap() if self._tap is not None else None
        if tap is not None and tap.enabled:
            tap.features = args[0]
        return None  # leave the input unchanged

    def __reduce__(self):
        return (_TapHook, (None,))


class DecodeFeatureTap:
    """Captures the features an mmseg decode head feeds to its classifier, before the classifier's dropout.

    Registers a forward pre-hook on ``decode_head.dropout`` when the head has one, else on
    ``decode_head.conv_seg``: either way the captured tensor is the ``feat`` that ``cls_seg(feat)``
    received, e.g. DeepLabv3+'s ``sep_bottleneck`` output (stride 4, ``channels`` channels), FCNHead's or
    UPerHead's ``_forward_feature`` output, SegformerHead's ``fusion_conv`` output. The tensor is stored
    as is (not detached, not cloned): gradients of a loss on it flow back into the decoder and encoder.

    Only the last capture is kept: if ``cls_seg`` runs several times per forward (e.g. sliding-window
    inference), ``features`` holds the last call's. Set ``enabled = False`` to stop capturing (e.g. during
    validation) without removing the hook. Heads that do not classify through ``cls_seg`` (e.g. PointHead,
    MaskFormerHead) are not supported.

    The tap is a plain object, not an ``nn.Module``: it adds nothing to ``state_dict``. See the module
    docstring for ``copy.deepcopy``.

    Args:
        decode_head: An mmseg decode head with a ``conv_seg`` module (a ``BaseDecodeHead``).

    Attributes:
        features: The last captured tensor (N, channels, h, w), or None.
        enabled: Whether the hook captures.
        hooked_module: ``decode_head.dropout`` or ``decode_head.conv_seg``, where the hook sits.

    Raises:
        ValueError: If ``decode_head`` has no ``conv_seg`` module.
    """

    def __init__(self, decode_head: nn.Module) -> None:
        if not isinstance(getattr(decode_head, 'conv_seg', None), nn.Module):
            raise ValueError(
                f'DecodeFeatureTap needs an mmseg decode head whose cls_seg() calls conv_seg, got '
                f'{type(decode_head).__name__} without a conv_seg module. Tap a BaseDecodeHead subclass '
                f'(e.g. segmentor.decode_head), not the segmentor or an auxiliary list.')
        self.decode_head = decode_head
        dropout = getattr(decode_head, 'dropout', None)
        self.hooked_module: nn.Module = dropout if isinstance(dropout, nn.Module) else decode_head.conv_seg
        self.features: Optional[Tensor] = None
        self.enabled = True
        self._removed = False
        self._handle = self.hooked_module.register_forward_pre_hook(_TapHook(self))

    def pop(self) -> Tensor:
        """Returns the last captured features and clears them.

        Returns:
            Tensor of shape (N, channels, h, w), the input of the head's ``cls_seg``.

        Raises:
            RuntimeError: If nothing was captured since the last ``pop``.
        """
        if self.features is None:
            raise RuntimeError(
                f'DecodeFeatureTap on {type(self.decode_head).__name__} has no features: the decode head did not '
                f'call cls_seg since the last pop() (run the head forward first; the tap is also empty when '
                f'enabled=False or after remove()).')
        features, self.features = self.features, None
        return features

    def remove(self) -> None:
        """Removes the hook and drops any captured features; the tap captures nothing afterwards."""
        self._handle.remove()
        self._removed = True
        self.features = None

    def __deepcopy__(self, memo: dict) -> DecodeFeatureTap:
        """A new, empty tap on the deep copy of the head (the same copy as the model's when copied with it).

        The copy keeps ``enabled``; the copy of a removed tap is removed too.
        """
        tap = DecodeFeatureTap(copy.deepcopy(self.decode_head, memo))
        tap.enabled = self.enabled
        if self._removed:
            tap.remove()
        return tap

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(head={type(self.decode_head).__name__}, '
                f'at={type(self.hooked_module).__name__}, enabled={self.enabled}, '
                f'captured={self.features is not None})')


def tap_decode_features(decode_head: nn.Module) -> DecodeFeatureTap:
    """Attaches a :class:`DecodeFeatureTap` to ``decode_head``; same as ``DecodeFeatureTap(decode_head)``."""
    return DecodeFeatureTap(decode_head)
