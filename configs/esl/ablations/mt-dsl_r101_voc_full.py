# Table 2, row 4 (L_CE + L_SCE with DSL, no L_CTR; paper mIoU 80.41) = Table 3, η = 0.95 = Table 4, K = 0:
# ESL on classic Pascal VOC, full partition (1464 labeled), without the pixel-to-part contrast.
# Iterations and batch as esl_r101_voc_full.py: 91,180 iterations (80 epochs x 9,118 unlabeled / 8), 1 labeled + 1
# unlabeled (+ 1 CutMix partner) per GPU on 8 GPUs.
#   tools/dist_train.sh configs/esl/ablations/mt-dsl_r101_voc_full.py 8
_base_ = ['../esl_r101_voc_full.py']
model = dict(semi_train_cfg=dict(loss_contrast=dict(num_parts=0)))
custom_hooks = [_base_.ema_teacher_hook, _base_.rng_state_hook]  # no prototypes without the contrastive term
