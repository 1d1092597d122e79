# ESL with DeepLabv3+ R101-D8 on Cityscapes: everything but the split files and the iteration count, which each
# configs/esl/esl_r101_cityscapes_<protocol>.py sets. OHEM on the supervised loss (§4.1 "OHEM loss is applied on
# Cityscapes like previous methods"): mmseg's OHEMPixelSampler with U2PL's thresh=0.7, min_kept=100000 (U2PL's
# criterion config; per image here, and U2PL's per-GPU batch is 1 labeled image too in the 8 + 8 setting).
# Evaluation: sliding window 769 x 769, stride 513 (§4.1; U2PL's eval.py, mmseg's 769x769 Cityscapes configs).
_base_ = [
    '../models/esl_deeplabv3plus_r101-d8.py',
    '../datasets/cityscapes_semi.py',
    '../schedules/esl_cityscapes_200e.py',
    '../default_runtime.py',
]
custom_imports = dict(imports=['mmseg_esl'], allow_failed_imports=False)
# mmengine's Runner passes the top-level data_preprocessor to the model: keep both the same, as mmseg configs do.
data_preprocessor = dict(size=_base_.crop_size)
model = dict(segmentor=dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=19, sampler=dict(type='OHEMPixelSampler', thresh=0.7, min_kept=100000)),
    test_cfg=dict(mode='slide', crop_size=_base_.crop_size, stride=(513, 513))))
optim_wrapper = dict(constructor='StudentOptimWrapperConstructor')
# Not in the paper: teacher EMA decay 0.99 is U2PL's ema_decay (not θ, the prototype momentum).
ema_teacher_hook = dict(type='EMATeacherHook', decay=0.99)
prototype_init_hook = dict(type='PrototypeInitHook', dataloader=_base_.prototype_dataloader,
                           max_pixels_per_class=5000)
# Saves the torch RNG states in checkpoints so that --resume continues exactly (CutMix boxes, anchors,
# negatives): see RNGStateHook.
rng_state_hook = dict(type='RNGStateHook')
custom_hooks = [ema_teacher_hook, prototype_init_hook, rng_state_hook]
