# ESL (DSL + CutMix + EMA teacher; the contrastive term lands with the next issue) on the tiny generated
# dataset, for tests and smoke runs on a CPU:
#   python tools/make_tiny_dataset.py --out data/tiny_voc
#   python tools/train.py configs/esl/tiny_esl_voc.py
_base_ = [
    '../_base_/models/deeplabv3plus_tiny-r18.py',
    '../_base_/datasets/tiny_voc_semi.py',
    '../_base_/schedules/schedule_tiny.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmseg_esl'], allow_failed_imports=False)
randomness = dict(seed=0)

model = dict(
    _delete_=True,
    type='ESLSegmentor',
    segmentor=_base_.model,
    semi_train_cfg=dict(
        loss_unsup=dict(type='DSLLoss', mode='dsl', eta=0.95, loss_weight=0.2),
        cutmix=dict(prob=1.0, partner='extra')),
    semi_test_cfg=dict(predict_on='teacher'))
optim_wrapper = dict(constructor='StudentOptimWrapperConstructor')
# Teacher decay 0.99 is U2PL's ema_decay (the paper gives none); see EMATeacherHook.
custom_hooks = [dict(type='EMATeacherHook', decay=0.99)]
