# Mean-teacher baseline with hard (one-hot) pseudo labels, classic Pascal VOC 2012, 1/16 partition (92 labeled):
# ESL's model, data, schedule and EMA teacher (esl_r101_voc_1-16.py) with L_SCE on the teacher's arg-max
# ("L_SCE (Hard label)", §4.3) and no contrastive term (K = 0): the "hard label" curve of Fig. 7 (a).
# Iterations and batch as that file: 104,900 iterations (80 epochs x 10,490 unlabeled / 8), 1 labeled + 1
# unlabeled (+ 1 CutMix partner) per GPU on 8 GPUs:
#   tools/dist_train.sh configs/esl/mt-hard_r101_voc_1-16.py 8
_base_ = ['./esl_r101_voc_1-16.py']
model = dict(semi_train_cfg=dict(loss_unsup=dict(mode='hard'), loss_contrast=dict(num_parts=0)))
# No contrastive term, so no prototypes: only the EMA teacher hook.
custom_hooks = [_base_.ema_teacher_hook, _base_.rng_state_hook]
