# ESL mixed into mmseg's UPerNet with a Swin-T backbone by config alone: the whole ESL setting of esl_r101_voc_1-8.py
# (classic VOC 1/8, DSL, CutMix, EMA teacher, pixel-to-part contrast, 8 + 8 images per iteration = 1 + 1
# (+ 1 CutMix partner) per GPU on 8 GPUs, 103,990 iterations) with the segmentor replaced. Not a paper experiment.
#   tools/dist_train.sh configs/esl/esl_upernet_swin-t_voc_1-8.py 8
# The model is mmseg's configs/_base_/models/upernet_swin.py with the Swin-T values of
# swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py (written out), 21 classes, no auxiliary
# head (Eq. 11). E^t = the last Swin stage, 768 channels; the projector reads UPerHead's fused stride-4 features
# (conv_seg input, 512 channels).
# Optimizer: mmseg's Swin recipe (AdamW 6e-5, no decay on norms and position tables, warm-up, poly) with the
# decode head and projector at x10, not the paper's SGD.
_base_ = ['./esl_r101_voc_1-8.py']
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/swin_tiny_patch4_window7_224_20220317-1cdeb081.pth'  # noqa
model = dict(
    segmentor=dict(
        _delete_=True,
        type='EncoderDecoder',
        data_preprocessor=_base_.data_preprocessor,
        pretrained=None,
        backbone=dict(
            type='SwinTransformer',
            pretrain_img_size=224,
            embed_dims=96,
            patch_size=4,
            window_size=7,
            mlp_ratio=4,
            depths=[2, 2, 6, 2],
            num_heads=[3, 6, 12, 24],
            strides=(4, 2, 2, 2),
            out_indices=(0, 1, 2, 3),
            qkv_bias=True,
            qk_scale=None,
            patch_norm=True,
            drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=0.3,
            use_abs_pos_embed=False,
            act_cfg=dict(type='GELU'),
            norm_cfg=dict(type='LN', requires_grad=True),
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
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
    optimizer=dict(type='AdamW', lr=6e-05, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.0),
        'relative_position_bias_table': dict(decay_mult=0.0),
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
