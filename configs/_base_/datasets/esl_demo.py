# The demo dataset (python tools/make_demo_dataset.py --out data/esl_demo; mmseg_esl.testing.make_demo_dataset):
# 7 classes, 128x128 images; 20 labeled, 1,000 unlabeled, 300 dev (held-out training images, on which the demo's
# hyper-parameters were chosen: docs/benchmarks.md) and 500 validation images. This file is the supervised view:
# training on the labeled split only. esl_demo_semi.py adds the unlabeled split. Training crops are 96x96 (cost on a
# 2-core CPU, docs/benchmarks.md); validation is on whole 128x128 images.
dataset_type = 'BaseSegDataset'
data_root = 'data/esl_demo'
metainfo = dict(
    classes=('background', 'robot', 'doll', 'car', 'truck', 'tree', 'flower'),
    palette=[[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128], [0, 128, 128]])
crop_size = (96, 96)
# The paper's weak augmentation: random flip and random resize with a scale in [0.5, 2.0].
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(128, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug',
         transforms=[[dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (1.0, 1.5)],
                     [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
                      dict(type='RandomFlip', prob=1.0, direction='horizontal')],
                     [dict(type='LoadAnnotations')],
                     [dict(type='PackSegInputs')]]),
]
seg_dataset = dict(
    type=dataset_type,
    data_root=data_root,
    metainfo=metainfo,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    img_suffix='.jpg',
    seg_map_suffix='.png')
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(seg_dataset, ann_file='ImageSets/Segmentation/labeled.txt', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=10,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(seg_dataset, ann_file='ImageSets/Segmentation/val.txt', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
