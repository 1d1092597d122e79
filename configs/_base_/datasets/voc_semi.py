# Pascal VOC 2012 for the semi-supervised protocols of Table 1 (a) "classic" and (b) "blender" (§4.1). Both use the
# same 10,582 train_aug images and labels; they differ only in the split files, which each config of configs/esl/
# sets (labeled_set / unlabeled_set below plus a split_file):
#   classic: the labeled images are drawn from the 1,464 finely annotated VOC train images, the unlabeled set is the
#            rest of train_aug (e.g. 10,582 - 92 = 10,490);
#   blender: the labeled images are drawn from all of train_aug (CPS's or U2PL's splits), the rest is unlabeled.
#
# Layout (data_root = data/VOCdevkit/VOC2012), see README "Paper configs":
#   JPEGImages/<id>.jpg
#   SegmentationClassAug/<id>.png      index PNGs of all 10,582 train_aug images (+ val), with VOC's own fine labels
#                                      for the 1,464 train images
#   SegmentationClass/<id>.png         VOC's fine labels (validation)
#   ImageSets/Segmentation/val.txt     the 1,449 validation ids
#   splits/<source>/...                published split files, copied as their repositories lay them out
#
# Weak augmentation (§4.1): random flip and random resize by a factor in [0.5, 2.0], then a 513 x 513 random crop
# (the data preprocessor pads smaller images to 513 with label 255). mmcv's RandomResize with keep_ratio fits the
# image into (500 r, 500 r) for r ~ U(0.5, 2): the factor is exactly r for the VOC images of long side 500 (nearly
# all); smaller ones are enlarged to long side 500 r. No cat_max_ratio (U2PL's crop has none).
# Evaluation (§4.1, U2PL's protocol): PadCenterCrop pads each validation image symmetrically to 513 x 513 (mean colour,
# label 255) and keeps the centre; metrics are computed on that crop. Whole-image evaluation instead:
#   --cfg-options val_dataloader.dataset.pipeline.2.crop_size=None test_dataloader.dataset.pipeline.2.crop_size=None
data_root = 'data/VOCdevkit/VOC2012'
crop_size = (513, 513)
voc_metainfo = dict(
    classes=('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
             'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
             'tvmonitor'),
    palette=[[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128], [0, 128, 128],
             [128, 128, 128], [64, 0, 0], [192, 0, 0], [64, 128, 0], [192, 128, 0], [64, 0, 128], [192, 0, 128],
             [64, 128, 128], [192, 128, 128], [0, 64, 0], [128, 64, 0], [0, 192, 0], [128, 192, 0], [0, 64, 128]])
# 'is_labeled' (set by SplitSegDataset) tells ESLSegmentor which samples of a batch are labeled.
meta_keys = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
             'flip_direction', 'reduce_zero_label', 'is_labeled')
weak_augmentation = [
    dict(type='RandomResize', scale=(500, 500), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
]
labeled_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')] + weak_augmentation + [
    dict(type='PackSegInputs', meta_keys=meta_keys)]
# train_aug labels of unlabeled images exist: they are loaded for the logged pseudo-label accuracy only, never a loss.
unlabeled_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadOptionalAnnotations')] + weak_augmentation + [
    dict(type='PackSegInputs', meta_keys=meta_keys)]
# Whole labeled images, deterministic, for PrototypeInitHook (K-means prototypes before training, §3.3).
prototype_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                      dict(type='PackSegInputs', meta_keys=meta_keys)]
split_dataset = dict(
    type='SplitSegDataset',
    data_root=data_root,
    metainfo=voc_metainfo,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
    img_suffix='.jpg',
    seg_map_suffix='.png')
# Each config adds split_file (relative to data_root) to these two.
labeled_set = dict(split_dataset, pipeline=labeled_pipeline)
unlabeled_set = dict(split_dataset, with_labels=False, pipeline=unlabeled_pipeline)

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    # U2PL's "center crop": img_pad_val is the ImageNet mean in BGR (U2PL pads the normalised image with 0);
    # seg_pad_val=255 ignores the padding (U2PL's loader pads labels with 0 = background; seg_pad_val=0 reproduces it).
    dict(type='PadCenterCrop', crop_size=crop_size, img_pad_val=(104, 116, 124), seg_pad_val=255),
    dict(type='PackSegInputs'),
]
# Test-time augmentation for tools/test.py --tta (not part of the paper's protocol): whole images, 6 scales x flip.
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug',
         transforms=[[dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)],
                     [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
                      dict(type='RandomFlip', prob=1.0, direction='horizontal')],
                     [dict(type='LoadAnnotations')],
                     [dict(type='PackSegInputs')]]),
]
# Per GPU and iteration: 1 labeled + 1 unlabeled image + 1 CutMix partner (SemiSupervisedSampler); on 8 GPUs that is
# the paper's 8 labeled + 8 unlabeled images per mini-batch. Each config states it again.
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
        type='PascalVOCDataset',
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# SemiIoUMetric = mmseg's IoUMetric of the predicting model (mIoU, ...) and, during training, of the teacher and
# the student (teacher/mIoU, student/mIoU: ESLSegmentor.val_step predicts with both); tools/test.py: the first only.
val_evaluator = dict(type='SemiIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
