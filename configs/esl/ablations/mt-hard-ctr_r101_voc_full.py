# Table 2, row 3 (L_CE + L_SCE with hard labels + L_CTR; paper mIoU 80.26): ESL on classic Pascal VOC, full
# partition (1464 labeled), with one-hot pseudo labels instead of DSL; the pixel-to-part contrast as in ESL (K = 5).
# Iterations and batch as esl_r101_voc_full.py: 91,180 iterations (80 epochs x 9,118 unlabeled / 8), 1 labeled + 1
# unlabeled (+ 1 CutMix partner) per GPU on 8 GPUs.
#   tools/dist_train.sh configs/esl/ablations/mt-hard-ctr_r101_voc_full.py 8
_base_ = ['../esl_r101_voc_full.py']
model = dict(semi_train_cfg=dict(loss_unsup=dict(mode='hard')))
