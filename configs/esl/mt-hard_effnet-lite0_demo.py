# Demo "MT-hard": mean teacher with CutMix and one-hot pseudo labels (the hard-label baseline of the paper's
# Tab. 2): ESLSegmentor with DSLLoss(mode='hard') and no contrastive term (K = 0). Same model, labeled batch
# and schedule as the supervised baseline, plus 4 unlabeled images (and their CutMix partners) per iteration.
_base_ = [
    '../_base_/models/deeplabv3plus_effnet-lite0.py',
    '../_base_/datasets/esl_demo_semi.py',
    '../_base_/schedules/schedule_demo.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmseg_esl'], allow_failed_imports=False)
randomness = dict(seed=0)
model = dict(
    _delete_=True,
    type='ESLSegmentor',
    segmentor=_base_.model,
    semi_train_cfg=dict(
        loss_unsup=dict(type='DSLLoss', mode='hard', loss_weight=0.2),
        cutmix=dict(prob=1.0, partner='extra'),
        loss_contrast=dict(num_parts=0)),
    semi_test_cfg=dict(predict_on='teacher'))
optim_wrapper = dict(constructor='StudentOptimWrapperConstructor')
# Teacher schedule (EMATeacherHook): 125 supervised-only iterations (1/8 of the demo's 1000; ours, chosen on
# the dev split: U2PL's analogue is one epoch of the unlabeled set, 250 iterations here), then student -> teacher
# copy and EMA (theta = 0.99) with the warm-up restarted; BN statistics averaged like the weights ('ema', default).
ema_teacher_hook = dict(type='EMATeacherHook', decay=0.99, sup_only_iters=125)
custom_hooks = [ema_teacher_hook, dict(type='RNGStateHook')]
