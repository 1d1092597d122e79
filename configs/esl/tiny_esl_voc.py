# ESL (DSL + CutMix + EMA teacher + pixel-to-part contrast, Eq. 11) on the tiny generated dataset, for tests
# and smoke runs on a CPU:
#   python tools/make_tiny_dataset.py --out data/tiny_voc
#   python tools/train.py configs/esl/tiny_esl_voc.py
_base_ = [
    '../_base_/models/deeplabv3plus_tiny-r18.py',
    '../_base_/datasets/tiny_voc_semi.py',
    '../_base_/schedules/schedule_tiny.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmseg_esl'], allow_failed_imports=False)
randomness = dict(seed=0)

model = dict(
    _delete_=True,
    type='ESLSegmentor',
    segmentor=_base_.model,
    semi_train_cfg=dict(
        loss_unsup=dict(type='DSLLoss', mode='dsl', eta=0.95, loss_weight=0.2),
        cutmix=dict(prob=1.0, partner='extra'),
        # E^t = the tiny ResNet-18's last stage (64 channels). Paper's K, ζ, σ, N_s, λ2; a short queue and
        # embedding for the tiny model.
        loss_contrast=dict(type='PixelPartContrastLoss', feat_channels=64, num_parts=5, queue_size=16,
                           loss_weight=0.1)),
    semi_test_cfg=dict(predict_on='teacher'),
    projector=dict(type='ProjectorHead', channels=16, out_channels=32))
optim_wrapper = dict(constructor='StudentOptimWrapperConstructor')
# Teacher decay 0.99 is U2PL's ema_decay (the paper gives none); see EMATeacherHook.
custom_hooks = [
    dict(type='EMATeacherHook', decay=0.99),
    dict(type='PrototypeInitHook', dataloader=_base_.prototype_dataloader, max_pixels_per_class=2000),
    dict(type='RNGStateHook'),
]
