# Table 4, K = 7 (paper mIoU 81.72): ESL with 7 subclass(es) per class, classic
# Pascal VOC, full partition (1464 labeled). K = 5 is esl_r101_voc_full.py (81.77), K = 0 mt-dsl_r101_voc_full.py.
# Iterations and batch as esl_r101_voc_full.py: 91,180 iterations (80 epochs x 9,118 unlabeled / 8), 1 labeled + 1
# unlabeled (+ 1 CutMix partner) per GPU on 8 GPUs.
#   tools/dist_train.sh configs/esl/ablations/esl-k7_r101_voc_full.py 8
_base_ = ['../esl_r101_voc_full.py']
model = dict(semi_train_cfg=dict(loss_contrast=dict(num_parts=7)))
