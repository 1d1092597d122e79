# "Sup Baseline" of Table 1 (c): DeepLabv3+ R101-D8 with OHEM and sliding-window evaluation as the ESL Cityscapes
# configs, trained on the labeled images only, 8 per iteration (2 per GPU on 4 GPUs), 200 epochs over the LABELED set
# (U2PL's train_sup.py convention, not in the paper): ceil(200 * N_labeled / 8) iterations, set by each
# configs/esl/sup_r101_cityscapes_*.py with its labeled split.
_base_ = [
    '../models/deeplabv3plus_r101-d8.py',
    '../datasets/cityscapes_semi.py',
    '../schedules/esl_cityscapes_200e.py',
    '../default_runtime.py',
]
custom_imports = dict(imports=['mmseg_esl'], allow_failed_imports=False)
data_preprocessor = dict(size=_base_.crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=19, sampler=dict(type='OHEMPixelSampler', thresh=0.7, min_kept=100000)),
    test_cfg=dict(mode='slide', crop_size=_base_.crop_size, stride=(513, 513)))
train_dataloader = dict(
    _delete_=True,
    batch_size=2,  # per GPU, on 4 GPUs: 8 labeled images per iteration
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=_base_.labeled_set)
auto_scale_lr = dict(base_batch_size=8)
