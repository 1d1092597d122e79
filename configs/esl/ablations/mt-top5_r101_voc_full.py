# Table 3, "Top-5" (paper mIoU 79.89): the five most probable classes as dominant classes instead of Eq. 4's η
# rule, no contrastive term, classic Pascal VOC, full partition (1464 labeled).
# Iterations and batch as esl_r101_voc_full.py: 91,180 iterations (80 epochs x 9,118 unlabeled / 8), 1 labeled + 1
# unlabeled (+ 1 CutMix partner) per GPU on 8 GPUs.
#   tools/dist_train.sh configs/esl/ablations/mt-top5_r101_voc_full.py 8
_base_ = ['./mt-dsl_r101_voc_full.py']
model = dict(semi_train_cfg=dict(loss_unsup=dict(mode='top_k', top_k=5)))
