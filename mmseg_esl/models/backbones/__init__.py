"""Backbones not provided by mmseg (the offline EfficientNet-Lite0 of the demo issue lands here)."""
