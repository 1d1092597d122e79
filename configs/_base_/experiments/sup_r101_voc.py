# "Sup Baseline" of Table 1 (a), (b) and Table 2's first row: the same DeepLabv3+ R101-D8 and optimizer as ESL,
# trained on the labeled images only, 8 per iteration (2 per GPU on 4 GPUs). Each configs/esl/sup_r101_voc*.py sets
# the labeled split and the iteration count.
# Not in the paper (its Sup numbers are U2PL's): U2PL's train_sup.py convention, an epoch = one pass over the
# LABELED set, so 80 epochs = ceil(80 * N_labeled / 8) iterations. For a baseline with ESL's iteration count, use
# --cfg-options train_cfg.max_iters=<the matching esl_ config's max_iters>.
_base_ = [
    '../models/deeplabv3plus_r101-d8.py',
    '../datasets/voc_semi.py',
    '../schedules/esl_voc_80e.py',
    '../default_runtime.py',
]
custom_imports = dict(imports=['mmseg_esl'], allow_failed_imports=False)
data_preprocessor = dict(size=_base_.crop_size)
model = dict(data_preprocessor=data_preprocessor, decode_head=dict(num_classes=21))
train_dataloader = dict(
    _delete_=True,
    batch_size=2,  # per GPU, on 4 GPUs: 8 labeled images per iteration
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=_base_.labeled_set)
auto_scale_lr = dict(base_batch_size=8)
