# ESL mixed into mmseg's PSPNet R50-D8 by config alone: the whole ESL setting of esl_r101_voc_1-8.py (classic VOC
# 1/8, DSL, CutMix, EMA teacher, pixel-to-part contrast, the paper's SGD schedule, 8 + 8 images per iteration =
# 1 + 1 (+ 1 CutMix partner) per GPU on 8 GPUs, 103,990 iterations) with the segmentor replaced. Not a paper experiment.
#   tools/dist_train.sh configs/esl/esl_pspnet_r50-d8_voc_1-8.py 8
# The model is mmseg's configs/_base_/models/pspnet_r50-d8.py (written out: an mmengine config cannot take `model`
# from two bases) with 21 classes and no auxiliary head (Eq. 11). E^t = ResNet-50 layer4, 2048 channels; the projector
# reads PSPHead's bottleneck output (conv_seg input, 512 channels, stride 8) and its embedding is resized to the
# contrastive resolution H/4 x W/4.
_base_ = ['./esl_r101_voc_1-8.py']
model = dict(
    segmentor=dict(
        _delete_=True,
        type='EncoderDecoder',
        data_preprocessor=_base_.data_preprocessor,
        pretrained='open-mmlab://resnet50_v1c',
        backbone=dict(
            type='ResNetV1c',
            depth=50,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            dilations=(1, 1, 2, 4),
            strides=(1, 2, 1, 1),
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            norm_eval=False,
            style='pytorch',
            contract_dilation=True),
        decode_head=dict(
            type='PSPHead',
            in_channels=2048,
            in_index=3,
            channels=512,
            pool_scales=(1, 2, 3, 6),
            dropout_ratio=0.1,
            num_classes=21,
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole')),
    semi_train_cfg=dict(loss_contrast=dict(feat_channels=2048, in_index=-1)))
