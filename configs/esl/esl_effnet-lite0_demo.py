# Demo "ESL": the full method of the paper (Eq. 11) on the demo data: mean teacher, CutMix, Dynamic Soft
# Labels and the pixel-to-part contrast with K = 5 parts per class, prototypes initialised by K-means on
# the labeled set. Paper hyper-parameters except the projector's width (64 hidden, L = 128 instead of 256 /
# 512), which keeps the CPU demo fast.
_base_ = ['./mt-dsl_effnet-lite0_demo.py']
model = dict(
    semi_train_cfg=dict(
        # E^t = EfficientNet-Lite0's last stage (320 channels, stride 32).
        loss_contrast=dict(type='PixelPartContrastLoss', feat_channels=320, num_parts=5, loss_weight=0.1)),
    projector=dict(type='ProjectorHead', channels=64, out_channels=128))
custom_hooks = [
    _base_.ema_teacher_hook,
    dict(type='PrototypeInitHook', dataloader=_base_.prototype_dataloader, max_pixels_per_class=5000),
    dict(type='RNGStateHook'),
]
