# Cityscapes for the semi-supervised protocols of Table 1 (c) (§4.1): labeled images drawn from the 2,975 finely
# annotated train images, the rest of them unlabeled. Each config of configs/esl/ adds the split files to
# labeled_set / unlabeled_set (split_file, relative to data_root).
#
# Layout (data_root = data/cityscapes; labelTrainIds from mmseg's tools/dataset_converters/cityscapes.py):
#   leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
#   gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png
#   splits/<source>/...      published split files (U2PL's or CPS's), as their repositories lay them out
#
# Weak augmentation (§4.1): random flip, random resize by a factor in [0.5, 2.0] (mmcv's RandomResize fits the
# 2048 x 1024 images into (2048 r, 1024 r): exactly the factor r), then a 769 x 769 random crop.
# Evaluation (§4.1): sliding window of 769 x 769 with stride 513 (U2PL's eval.py: stride = ceil(769 * 2 / 3)) on the
# full-resolution image: test_cfg=dict(mode='slide', ...) of the model, set in the Cityscapes experiment config.
data_root = 'data/cityscapes'
crop_size = (769, 769)
cityscapes_metainfo = dict(
    classes=('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign',
             'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle',
             'bicycle'),
    palette=[[128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153], [153, 153, 153],
             [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152], [70, 130, 180], [220, 20, 60],
             [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32]])
meta_keys = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
             'flip_direction', 'reduce_zero_label', 'is_labeled')
weak_augmentation = [
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
]
labeled_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')] + weak_augmentation + [
    dict(type='PackSegInputs', meta_keys=meta_keys)]
# Labels of unlabeled train images exist: loaded for the logged pseudo-label accuracy only, never a loss.
unlabeled_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadOptionalAnnotations')] + weak_augmentation + [
    dict(type='PackSegInputs', meta_keys=meta_keys)]
prototype_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                      dict(type='PackSegInputs', meta_keys=meta_keys)]
split_dataset = dict(
    type='SplitSegDataset',
    data_root=data_root,
    metainfo=cityscapes_metainfo,
    data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
    img_suffix='_leftImg8bit.png',
    seg_map_suffix='_gtFine_labelTrainIds.png')
labeled_set = dict(split_dataset, pipeline=labeled_pipeline)
unlabeled_set = dict(split_dataset, with_labels=False, pipeline=unlabeled_pipeline)

test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
# Test-time augmentation for tools/test.py --tta (not part of the paper's protocol).
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug',
         transforms=[[dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)],
                     [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
                      dict(type='RandomFlip', prob=1.0, direction='horizontal')],
                     [dict(type='LoadAnnotations')],
                     [dict(type='PackSegInputs')]]),
]
# Per GPU and iteration: 1 labeled + 1 unlabeled image + 1 CutMix partner; 8 + 8 on 8 GPUs (§4.1).
train_dataloader = dict(
    batch_size=3,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='SemiSupervisedSampler', num_labeled=1, num_unlabeled=1, cutmix_partners=True),
    dataset=dict(type='ConcatDataset', datasets=[labeled_set, unlabeled_set]))
prototype_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(labeled_set, pipeline=prototype_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CityscapesDataset',
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# SemiIoUMetric = mmseg's IoUMetric of the predicting model (mIoU, ...) and, during training, of the teacher and
# the student (teacher/mIoU, student/mIoU: ESLSegmentor.val_step predicts with both); tools/test.py: the first only.
val_evaluator = dict(type='SemiIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
