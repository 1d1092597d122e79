# ESL mixed into mmseg's SegFormer MiT-B5: esl_segformer_mit-b0_voc_1-8.py with the B5 encoder (mmseg's
# segformer_mit-b5_8xb2-160k_ade20k-512x512.py values); E^t = the last stage, 512 channels.
#   tools/dist_train.sh configs/esl/esl_segformer_mit-b5_voc_1-8.py 8
_base_ = ['./esl_segformer_mit-b0_voc_1-8.py']
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b5_20220624-658746d9.pth'  # noqa
model = dict(
    segmentor=dict(
        backbone=dict(
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint),
            embed_dims=64,
            num_heads=[1, 2, 5, 8],
            num_layers=[3, 6, 40, 3]),
        decode_head=dict(in_channels=[64, 128, 320, 512])),
    semi_train_cfg=dict(loss_contrast=dict(feat_channels=512)))
