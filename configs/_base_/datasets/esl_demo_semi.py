# Semi-supervised view of the demo dataset: per iteration 4 labeled + 4 unlabeled images + 4 CutMix partners
# (SemiSupervisedSampler), the same labeled batch as the supervised view (esl_demo.py).
_base_ = ['./esl_demo.py']
num_labeled_per_gpu = 4
num_unlabeled_per_gpu = 4
meta_keys = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
             'flip_direction', 'reduce_zero_label', 'is_labeled')
weak_augmentation = [
    dict(type='RandomResize', scale=(128, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size={{_base_.crop_size}}),
    dict(type='RandomFlip', prob=0.5),
]
labeled_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')] + weak_augmentation + [
    dict(type='PackSegInputs', meta_keys=meta_keys)]
# Unlabeled label files exist (for the logged pseudo-label accuracy only; never a loss).
unlabeled_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadOptionalAnnotations')] + weak_augmentation + [
    dict(type='PackSegInputs', meta_keys=meta_keys)]
split_dataset = dict(_base_.seg_dataset, type='SplitSegDataset')
train_dataloader = dict(
    _delete_=True,
    batch_size=num_labeled_per_gpu + 2 * num_unlabeled_per_gpu,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='SemiSupervisedSampler', num_labeled=num_labeled_per_gpu,
                 num_unlabeled=num_unlabeled_per_gpu, cutmix_partners=True),
    dataset=dict(
        type='ConcatDataset',
        datasets=[
            dict(split_dataset, split_file='ImageSets/Segmentation/labeled.txt', pipeline=labeled_pipeline),
            dict(split_dataset, split_file='ImageSets/Segmentation/unlabeled.txt', with_labels=False,
                 pipeline=unlabeled_pipeline),
        ]))
# The labeled set as it is, for PrototypeInitHook (K-means prototypes before training).
prototype_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(split_dataset, split_file='ImageSets/Segmentation/labeled.txt',
                 pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                           dict(type='PackSegInputs', meta_keys=meta_keys)]))
# Validation during training scores teacher and student (ESLSegmentor.val_step): keys mIoU (the predict_on model),
# teacher/mIoU, student/mIoU. tools/test.py scores the predict_on model only.
val_evaluator = dict(type='SemiIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
