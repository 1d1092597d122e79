# ESL, classic Pascal VOC 2012, 1/8 partition (183 labeled): Table 1 (a), paper mIoU 74.06.
# Labeled: 183 of the 1,464 finely annotated train images; unlabeled: the other 10,582 - 183 = 10,399
# train_aug images. Split: U2PL data/splits/pascal/183/ (identical to UniMatch splits/pascal/183/).
# Iterations: 80 epochs x 10,399 unlabeled images / 8 unlabeled per iteration = 103,990 (one epoch = one
# pass over the unlabeled set, U2PL's convention).
# Batch: 8 labeled + 8 unlabeled images per iteration in total = per GPU 1 labeled + 1 unlabeled (+ 1 CutMix
# partner) on 8 GPUs with SyncBN:
#   tools/dist_train.sh configs/esl/esl_r101_voc_1-8.py 8
# On G < 8 GPUs keep the total: per GPU 8/G + 8/G, e.g. on 4 GPUs --cfg-options train_dataloader.batch_size=6
#   train_dataloader.sampler.num_labeled=2 train_dataloader.sampler.num_unlabeled=2 (README "Paper configs").
_base_ = ['../_base_/experiments/esl_r101_voc.py']
labeled = dict(_base_.labeled_set, split_file='splits/u2pl/pascal/183/labeled.txt')
unlabeled = dict(_base_.unlabeled_set, split_file='splits/u2pl/pascal/183/unlabeled.txt')
train_dataloader = dict(
    batch_size=3,  # per GPU: 1 labeled + 1 unlabeled + 1 CutMix partner
    sampler=dict(num_labeled=1, num_unlabeled=1),
    dataset=dict(datasets=[labeled, unlabeled]))
# Teacher schedule, U2PL's (train_semi.py; not in the paper): one epoch = ceil(10,399 / 8) = 1300 iterations
# supervised only (sup_only_epoch = 1), one epoch with teacher = student, then EMA 0.99 with the warm-up counted
# from the end of the supervised phase. Ours: the teacher also follows the student in the supervised phase, and its
# BN statistics are averaged like its weights (buffers='ema', the hook's default; U2PL's teacher keeps its own).
ema_teacher_hook = dict(_base_.ema_teacher_hook, sup_only_iters=1300, copy_iters=1300)
# K-means prototypes (§3.3) from the same labeled images.
custom_hooks = [
    ema_teacher_hook,
    dict(_base_.prototype_init_hook,
         dataloader=dict(_base_.prototype_dataloader, dataset=dict(labeled, pipeline=_base_.prototype_pipeline))),
    _base_.rng_state_hook,
]
train_cfg = dict(max_iters=103990)
