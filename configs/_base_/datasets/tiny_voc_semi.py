# Semi-supervised version of the tiny dataset (tools/make_tiny_dataset.py writes labeled.txt and
# unlabeled.txt next to train.txt). Per process and iteration: 1 labeled + 1 unlabeled image + 1 CutMix
# partner (SemiSupervisedSampler). One epoch = one pass over the unlabeled set (U2PL's convention):
# len(unlabeled) // (num_processes * num_unlabeled_per_gpu) iterations, e.g. 6 for the default 8-image tiny set
# (2 labeled + 6 unlabeled) on one process. Validation/test as in tiny_voc.py.
_base_ = ['./tiny_voc.py']
num_labeled_per_gpu = 1
num_unlabeled_per_gpu = 1
# 'is_labeled' (set by SplitSegDataset) tells ESLSegmentor which samples are labeled.
meta_keys = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
             'flip_direction', 'reduce_zero_label', 'is_labeled')
labeled_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(96, 96), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size={{_base_.crop_size}}, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
# Same weak geometric augmentation, no label needed (one that exists is loaded for logged accuracy only).
unlabeled_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadOptionalAnnotations'),
    dict(type='RandomResize', scale=(96, 96), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size={{_base_.crop_size}}),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
split_dataset = dict(
    type='SplitSegDataset',
    data_root={{_base_.data_root}},
    metainfo={{_base_.metainfo}},
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    img_suffix='.jpg',
    seg_map_suffix='.png')
train_dataloader = dict(
    _delete_=True,
    batch_size=num_labeled_per_gpu + 2 * num_unlabeled_per_gpu,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='SemiSupervisedSampler', num_labeled=num_labeled_per_gpu,
                 num_unlabeled=num_unlabeled_per_gpu, cutmix_partners=True),
    dataset=dict(
        type='ConcatDataset',
        datasets=[
            dict(split_dataset, split_file='ImageSets/Segmentation/labeled.txt', pipeline=labeled_pipeline),
            dict(split_dataset, split_file='ImageSets/Segmentation/unlabeled.txt', with_labels=False,
                 pipeline=unlabeled_pipeline),
        ]))
# The labeled set, whole images and deterministic, for PrototypeInitHook (K-means prototypes of Eq. 7
# before training). DefaultSampler shards it across processes.
prototype_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        split_dataset,
        split_file='ImageSets/Segmentation/labeled.txt',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='PackSegInputs', meta_keys=meta_keys),
        ]))
# Validation scores the predicting model and, during training, teacher and student (SemiIoUMetric).
val_evaluator = dict(type='SemiIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
