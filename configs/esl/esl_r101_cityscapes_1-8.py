# ESL, Cityscapes, 1/8 partition (372 labeled): Table 1 (c), paper mIoU 77.15.
# Labeled: 372 of the 2,975 train images; unlabeled: the other 2,975 - 372 = 2,603. Split: U2PL
# data/splits/cityscapes/372/ (Table 1 (c) takes the other methods' numbers from U2PL). CPS's splits are
# other images (at 1/16 only 8 of the 186 labeled ids are shared); select them with
#   --cfg-options train_dataloader.dataset.datasets.0.split_file=splits/cps/city/config_new/subset_train/train_aug_labeled_1-8.txt
#   train_dataloader.dataset.datasets.1.split_file=splits/cps/city/config_new/subset_train/train_aug_unlabeled_1-8.txt
#   custom_hooks.1.dataloader.dataset.split_file=splits/cps/city/config_new/subset_train/train_aug_labeled_1-8.txt
# OHEM on the supervised loss and sliding-window evaluation (769, stride 513): ../_base_/experiments/esl_r101_cityscapes.py.
# Iterations: 200 epochs x 2,603 unlabeled images / 8 unlabeled per iteration = 65,075 (one epoch = one
# pass over the unlabeled set, U2PL's convention).
# Batch: 8 labeled + 8 unlabeled images per iteration in total = per GPU 1 labeled + 1 unlabeled (+ 1 CutMix
# partner) on 8 GPUs with SyncBN:
#   tools/dist_train.sh configs/esl/esl_r101_cityscapes_1-8.py 8
# On G < 8 GPUs keep the total: per GPU 8/G + 8/G, e.g. on 4 GPUs --cfg-options train_dataloader.batch_size=6
#   train_dataloader.sampler.num_labeled=2 train_dataloader.sampler.num_unlabeled=2 (README "Paper configs").
_base_ = ['../_base_/experiments/esl_r101_cityscapes.py']
labeled = dict(_base_.labeled_set, split_file='splits/u2pl/cityscapes/372/labeled.txt')
unlabeled = dict(_base_.unlabeled_set, split_file='splits/u2pl/cityscapes/372/unlabeled.txt')
train_dataloader = dict(
    batch_size=3,  # per GPU: 1 labeled + 1 unlabeled + 1 CutMix partner
    sampler=dict(num_labeled=1, num_unlabeled=1),
    dataset=dict(datasets=[labeled, unlabeled]))
# Teacher schedule, U2PL's (train_semi.py; not in the paper): one epoch = ceil(2,603 / 8) = 326 iterations
# supervised only (sup_only_epoch = 1), one epoch with teacher = student, then EMA 0.99 with the warm-up counted
# from the end of the supervised phase. Ours: the teacher also follows the student in the supervised phase, and its
# BN statistics are averaged like its weights (buffers='ema', the hook's default; U2PL's teacher keeps its own).
ema_teacher_hook = dict(_base_.ema_teacher_hook, sup_only_iters=326, copy_iters=326)
# K-means prototypes (§3.3) from the same labeled images.
custom_hooks = [
    ema_teacher_hook,
    dict(_base_.prototype_init_hook,
         dataloader=dict(_base_.prototype_dataloader, dataset=dict(labeled, pipeline=_base_.prototype_pipeline))),
    _base_.rng_state_hook,
]
train_cfg = dict(max_iters=65075)
