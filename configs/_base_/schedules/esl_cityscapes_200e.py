# The paper's Cityscapes schedule (§4.1): SGD, backbone learning rate 1e-2 and 10 times that (1e-1) for the decoder,
# projector and segmentation head (the paper applies the x10 on both datasets; U2PL did it on VOC only), weight decay
# 5e-4, 200 epochs of U2PL's kind (one epoch = one pass over the unlabeled set): each config sets
# train_cfg.max_iters = ceil(200 * N_unlabeled / 8) (supervised baselines: ceil(200 * N_labeled / 8)).
# Not in the paper (U2PL's): momentum 0.9, poly decay with power 0.9. See esl_voc_80e.py for the batch and
# auto_scale_lr.
_base_ = ['./esl_voc_80e.py']
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)
optim_wrapper = dict(optimizer=optimizer)
