# Table 3, η = 0.90 (paper mIoU 78.96): DSL with η = 0.90 in Eq. 4, no contrastive term (Table 3's η = 0.95 column,
# 80.41, is Table 2's L_CE + L_SCE (DSL) row), classic Pascal VOC, full partition (1464 labeled).
# Iterations and batch as esl_r101_voc_full.py: 91,180 iterations (80 epochs x 9,118 unlabeled / 8), 1 labeled + 1
# unlabeled (+ 1 CutMix partner) per GPU on 8 GPUs.
#   tools/dist_train.sh configs/esl/ablations/mt-dsl-eta0.90_r101_voc_full.py 8
_base_ = ['./mt-dsl_r101_voc_full.py']
model = dict(semi_train_cfg=dict(loss_unsup=dict(eta=0.9)))
