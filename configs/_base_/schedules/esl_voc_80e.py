# The paper's Pascal VOC schedule (§4.1): SGD, backbone learning rate 1e-3 and 10 times that (1e-2) for the decoder,
# projector and segmentation head ('decode_head' is mmseg's decoder + segmentation head; 'auxiliary_head' if one is
# added), weight decay 1e-4, 80 epochs of U2PL's kind: one epoch is one pass over the UNLABELED set, so each config
# sets train_cfg.max_iters = ceil(80 * N_unlabeled / 8 unlabeled images per iteration) (supervised baselines:
# ceil(80 * N_labeled / 8)).
# Not in the paper, U2PL's: momentum 0.9, poly decay with power 0.9 to 0 (mmengine ends PolyLR at max_iters when
# `end` is unset, so --cfg-options train_cfg.max_iters=N shortens the whole schedule).
# The learning rates are for the paper's total batch of 8 labeled + 8 unlabeled images per iteration (1 + 1 per GPU
# on 8 GPUs); keep that total on fewer GPUs (README "Paper configs"). auto_scale_lr is off; enabling it
# (--cfg-options auto_scale_lr.enable=True) scales the rates by (GPUs x train_dataloader.batch_size) / 24.
optimizer = dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=0.0001)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=optimizer,
    clip_grad=None,
    paramwise_cfg=dict(custom_keys={
        'decode_head': dict(lr_mult=10.0),
        'auxiliary_head': dict(lr_mult=10.0),
        'projector': dict(lr_mult=10.0),
    }))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, by_epoch=False)]
# max_iters: set by every config (the iteration count of its protocol).
train_cfg = dict(type='IterBasedTrainLoop', max_iters=None, val_interval=5000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=False, base_batch_size=24)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
