"""The layers of EfficientNet-Lite: TF "SAME"-padded convolution, conv-norm-ReLU6, and the MBConv block."""
from __future__ import annotations

import math

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmseg.utils import ConfigType
from torch import Tensor

__all__ = ['Conv2dSame', 'ConvNormAct', 'MBConvLite']


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding: ``out = ceil(in / stride)``, extra padding bottom/right.

    Stride 1 uses the symmetric ``(k - 1) // 2`` padding of ``nn.Conv2d`` (identical to TF for odd kernels);
    a strided conv pads its input with ``F.pad`` for each input size, as ``mmcv``'s
    ``Conv2dAdaptivePadding`` does. Only odd kernels and dilation 1 are supported (all EfficientNets).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd square kernel size.
        stride: Stride (1 or more).
        groups: Groups (``in_channels`` for a depthwise conv).
        bias: Whether the conv has a bias (False before a norm layer).

    Raises:
        ValueError: If ``kernel_size`` is even or ``stride`` < 1.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, groups: int = 1,
                 bias: bool = False) -> None:
        if kernel_size % 2 != 1 or stride < 1:
            raise ValueError(f'Conv2dSame supports odd kernel sizes and stride >= 1, got kernel_size={kernel_size}, '
                             f'stride={stride}.')
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=(kernel_size - 1) // 2 if stride == 1 else 0, groups=groups, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """Pads (strided convs only) and convolves ``(N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s))``."""
        if self.stride[0] > 1:
            pads = []
            for size, kernel, stride in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):  # W, H
                total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


class ConvNormAct(nn.Module):
    """``Conv2dSame -> norm -> ReLU6`` (or no activation), without conv bias. Keys: ``conv``, ``norm``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd kernel size.
        stride: Stride.
        groups: Conv groups.
        norm_cfg: Norm layer config (``mmcv.cnn.build_norm_layer``).
        act: Whether to apply ReLU6.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, groups: int = 1,
                 norm_cfg: ConfigType, act: bool = True) -> None:
        super().__init__()
        self.conv = Conv2dSame(in_channels, out_channels, kernel_size, stride=stride, groups=groups)
        self.norm = build_norm_layer(norm_cfg, out_channels)[1]
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s))``."""
        return self.act(self.norm(self.conv(x)))


class MBConvLite(nn.Module):
    """Inverted residual block of EfficientNet-Lite (MBConv without squeeze-excitation, ReLU6).

    ``expand`` (1x1, skipped when ``expand_ratio == 1``) -> ``depthwise`` (k x k, stride) -> ``project``
    (1x1, no activation), plus the identity when ``stride == 1`` and ``in_channels == out_channels``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        expand_ratio: Hidden channels = ``in_channels * expand_ratio``.
        kernel_size: Depthwise kernel size.
        stride: Depthwise stride.
        norm_cfg: Norm layer config.
    """

    def __init__(self, in_channels: int, out_channels: int, *, expand_ratio: int, kernel_size: int, stride: int,
                 norm_cfg: ConfigType) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = (ConvNormAct(in_channels, hidden, 1, norm_cfg=norm_cfg) if expand_ratio != 1 else None)
        self.depthwise = ConvNormAct(hidden, hidden, kernel_size, stride=stride, groups=hidden, norm_cfg=norm_cfg)
        self.project = ConvNormAct(hidden, out_channels, 1, norm_cfg=norm_cfg, act=False)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s))``."""
        out = self.expand(x) if self.expand is not None else x
        out = self.project(self.depthwise(out))
        return out + x if self.use_residual else out
