# ESL mixed into UPerNet with mmpretrain's ConvNeXt-T backbone by config alone: the whole ESL setting of
# esl_r101_voc_1-8.py (classic VOC 1/8, DSL, CutMix, EMA teacher, pixel-to-part contrast, 8 + 8 images per
# iteration = 1 + 1 (+ 1 CutMix partner) per GPU on 8 GPUs, 103,990 iterations) with the segmentor replaced. Not a paper experiment.
#   pip install -e ".[mmpretrain]"       # optional extra: mmpretrain, which needs a torchvision matching torch
#   tools/dist_train.sh configs/esl/esl_upernet_convnext-t_voc_1-8.py 8
# The backbone type 'mmpretrain.ConvNeXt' makes mmengine import mmpretrain when the model is built (loading this
# file needs no mmpretrain). The model is mmseg's configs/_base_/models/upernet_convnext.py with the ConvNeXt-T
# values of convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py (written out), 21 classes, no auxiliary head.
# E^t = the last ConvNeXt stage, 768 channels; the projector reads UPerHead's fused features (512 channels).
# Optimizer: AdamW 1e-4, weight decay 0.05 as mmseg's ConvNeXt recipe, but without its layer-wise learning-rate
# decay (LearningRateDecayOptimizerConstructor cannot be combined with StudentOptimWrapperConstructor); decode head
# and projector at x10.
_base_ = ['./esl_r101_voc_1-8.py']
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/convnext/downstream/convnext-tiny_3rdparty_32xb128-noema_in1k_20220301-795e9634.pth'  # noqa
model = dict(
    segmentor=dict(
        _delete_=True,
        type='EncoderDecoder',
        data_preprocessor=_base_.data_preprocessor,
        pretrained=None,
        backbone=dict(
            type='mmpretrain.ConvNeXt',
            arch='tiny',
            out_indices=[0, 1, 2, 3],
            drop_path_rate=0.4,
            layer_scale_init_value=1.0,
            gap_before_final_norm=False,
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
        decode_head=dict(
            type='UPerHead',
            in_channels=[96, 192, 384, 768],
            in_index=[0, 1, 2, 3],
            pool_scales=(1, 2, 3, 6),
            channels=512,
            dropout_ratio=0.1,
            num_classes=21,
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole')),
    semi_train_cfg=dict(loss_contrast=dict(feat_channels=768, in_index=-1)))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='StudentOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-04, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'norm': dict(decay_mult=0.0),
        'decode_head': dict(lr_mult=10.0),
        'projector': dict(lr_mult=10.0),
    }))
# Linear warm-up over 1500 iterations and poly decay to 0 at max_iters; both start at 0 (mmengine multiplies their
# factors), so that --cfg-options train_cfg.max_iters=N alone shortens the schedule (mmseg starts the poly at 1500).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, by_epoch=False),
]
