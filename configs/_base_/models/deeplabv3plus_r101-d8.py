# The paper's segmentor (§4.1, Tab. 1 "based on ResNet-101"): mmseg's DeepLabv3+ on ResNet-101 V1c, ImageNet weights
# from mmseg's usual 'open-mmlab://resnet101_v1c', output stride 8 (dilations 1, 1, 2, 4; ASPP rates 12, 24, 36) and
# SyncBN, all as mmseg's deeplabv3plus_r101-d8 configs. Plain EncoderDecoder: the supervised baselines use it as it
# is, configs/_base_/models/esl_deeplabv3plus_r101-d8.py wraps it in ESLSegmentor.
#
# Not mmseg's defaults:
# - No auxiliary FCN head: the paper's loss (Eq. 11) has none; mmseg's DeepLabv3+ configs, and U2PL, add one
#   (weight 0.4 on layer3). To add it back, write a config with
#       _base_ = ['./esl_r101_voc_1-8.py']   # any config of configs/esl/
#       model = dict(segmentor=dict(auxiliary_head=dict(_base_.fcn_auxiliary_head, num_classes=21, _delete_=True)))
#   (plain models: model = dict(auxiliary_head=...)); the optimizer already gives 'auxiliary_head' the x10 rate.
# - align_corners=True: the paper's crops are 8k + 1 pixels (513, 769), the DeepLab convention that mmseg's 769x769
#   Cityscapes configs and U2PL's decoder follow.
# num_classes is set by the experiment configs (configs/_base_/experiments/): 21 for VOC, 19 for Cityscapes.
_base_ = ['./deeplabv3plus_r50-d8.py']
model = dict(
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(depth=101),
    decode_head=dict(align_corners=True),
    auxiliary_head=None)
fcn_auxiliary_head = dict(
    type='FCNHead',
    in_channels=1024,
    in_index=2,
    channels=256,
    num_convs=1,
    concat_input=False,
    dropout_ratio=0.1,
    num_classes=21,
    norm_cfg=_base_.norm_cfg,
    align_corners=True,
    loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
