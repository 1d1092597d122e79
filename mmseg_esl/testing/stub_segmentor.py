"""A segmentor small enough to compute by hand, for tests: a 1x1-conv backbone under an FCNHead without convs.

``StubBackbone`` is registered in mmseg's ``MODELS`` when this module is imported (not by ``import
mmseg_esl``). With :func:`stub_segmentor_cfg`, the decode head feeds ``conv_seg`` the backbone output itself
(no convs, no dropout), so ``logits = conv_seg(conv(x))`` and the features a projector sees are ``conv(x)``.
"""
from __future__ import annotations

from typing import List

from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor, nn

__all__ = ['StubBackbone', 'stub_segmentor_cfg']


@MODELS.register_module(force=True)
class StubBackbone(BaseModule):
    """A single 1x1 convolution: features = W x + b, at input resolution.

    Args:
        channels: Output channels.
    """

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 1)

    def forward(self, x: Tensor) -> List[Tensor]:
        return [self.conv(x)]


def stub_segmentor_cfg(*, num_classes: int = 3, channels: int = 4, **decode_overrides) -> dict:
    """Config of an ``EncoderDecoder`` with :class:`StubBackbone` and a conv-free ``FCNHead``.

    Args:
        num_classes: Classes of the decode head.
        channels: Backbone output channels (= the decode head's ``in_channels`` and ``channels``).
        **decode_overrides: Replace entries of the decode head config.

    Returns:
        The model config dict (mean 0, std 1 data preprocessor, ``test_cfg.mode='whole'``).
    """
    decode_head = dict(type='FCNHead', in_channels=channels, channels=channels, num_convs=0, concat_input=False,
                       dropout_ratio=0.0, num_classes=num_classes, align_corners=False,
                       loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0))
    decode_head.update(decode_overrides)
    return dict(type='EncoderDecoder', backbone=dict(type='StubBackbone', channels=channels),
                decode_head=decode_head,
                data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1]),
                train_cfg=dict(), test_cfg=dict(mode='whole'))
