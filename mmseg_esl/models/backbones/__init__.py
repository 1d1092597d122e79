"""Backbones not provided by mmseg: EfficientNet-Lite with offline ImageNet weights (the demo's encoder)."""
from .efficientnet_lite import EfficientNetLite, convert_efficientnet_pytorch_keys

__all__ = ['EfficientNetLite', 'convert_efficientnet_pytorch_keys']
