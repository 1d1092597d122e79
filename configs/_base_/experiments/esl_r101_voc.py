# ESL with DeepLabv3+ R101-D8 on Pascal VOC 2012 (classic and blender protocols): everything but the split files and
# the iteration count, which each configs/esl/esl_r101_voc*_<protocol>.py sets.
_base_ = [
    '../models/esl_deeplabv3plus_r101-d8.py',
    '../datasets/voc_semi.py',
    '../schedules/esl_voc_80e.py',
    '../default_runtime.py',
]
custom_imports = dict(imports=['mmseg_esl'], allow_failed_imports=False)
# mmengine's Runner passes the top-level data_preprocessor to the model: keep both the same, as mmseg configs do.
data_preprocessor = dict(size=_base_.crop_size)
model = dict(segmentor=dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=21)))
# The optimizer holds the student only; the teacher follows it by EMA.
optim_wrapper = dict(constructor='StudentOptimWrapperConstructor')
# Not in the paper: teacher EMA decay 0.99 is U2PL's ema_decay (with its warm-up), NOT the paper's θ = 0.99, which is
# the prototype momentum (loss_contrast.prototype_momentum). 5000 sampled pixels per class for K-means (§3.3).
ema_teacher_hook = dict(type='EMATeacherHook', decay=0.99)
prototype_init_hook = dict(type='PrototypeInitHook', dataloader=_base_.prototype_dataloader,
                           max_pixels_per_class=5000)
# Saves the torch RNG states in checkpoints so that --resume continues exactly (CutMix boxes, anchors,
# negatives): see RNGStateHook.
rng_state_hook = dict(type='RNGStateHook')
custom_hooks = [ema_teacher_hook, prototype_init_hook, rng_state_hook]
