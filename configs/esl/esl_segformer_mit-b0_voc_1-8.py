# ESL mixed into mmseg's SegFormer (MiT-B0 + SegformerHead) by config alone: the whole ESL setting of
# esl_r101_voc_1-8.py (classic VOC 1/8, DSL, CutMix, EMA teacher, pixel-to-part contrast, 8 + 8 images per
# iteration = 1 + 1 (+ 1 CutMix partner) per GPU on 8 GPUs, 103,990 iterations) with the segmentor replaced. Not a
# paper experiment (the paper uses ResNet-101).
#   tools/dist_train.sh configs/esl/esl_segformer_mit-b0_voc_1-8.py 8
# The model is mmseg's configs/_base_/models/segformer_mit-b0.py (written out: an mmengine config cannot take
# `model` from two bases) with 21 classes and no auxiliary head. ESL needs two model-specific values:
# - loss_contrast.feat_channels = channels of E^t, the last MiT stage (in_index=-1): 256 for B0, 512 for B1-B5;
# - the projector reads SegformerHead's fused stride-4 features (its conv_seg input, 256 channels): in_channels
#   is taken from conv_seg, nothing to set.
# Optimizer: mmseg's SegFormer recipe (AdamW 6e-5, head and projector x10, no decay on norms and pos_block,
# 1500-iteration warm-up, poly), not the paper's SGD. B1-B5: esl_segformer_mit-b{1..5}_voc_1-8.py.
_base_ = ['./esl_r101_voc_1-8.py']
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b0_20220624-7e0fe6dd.pth'  # noqa
model = dict(
    segmentor=dict(
        _delete_=True,
        type='EncoderDecoder',
        data_preprocessor=_base_.data_preprocessor,
        pretrained=None,
        backbone=dict(
            type='MixVisionTransformer',
            in_channels=3,
            embed_dims=32,
            num_stages=4,
            num_layers=[2, 2, 2, 2],
            num_heads=[1, 2, 5, 8],
            patch_sizes=[7, 3, 3, 3],
            sr_ratios=[8, 4, 2, 1],
            out_indices=(0, 1, 2, 3),
            mlp_ratio=4,
            qkv_bias=True,
            drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=0.1,
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
        decode_head=dict(
            type='SegformerHead',
            in_channels=[32, 64, 160, 256],
            in_index=[0, 1, 2, 3],
            channels=256,
            dropout_ratio=0.1,
            num_classes=21,
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole')),
    semi_train_cfg=dict(loss_contrast=dict(feat_channels=256, in_index=-1)))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='StudentOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=6e-05, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'pos_block': dict(decay_mult=0.0),
        'norm': dict(decay_mult=0.0),
        'head': dict(lr_mult=10.0),
        'projector': dict(lr_mult=10.0),
    }))
# Linear warm-up over 1500 iterations and poly decay to 0 at max_iters; both start at 0 (mmengine multiplies their
# factors), so that --cfg-options train_cfg.max_iters=N alone shortens the schedule (mmseg starts the poly at 1500).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, by_epoch=False),
]
