# Supervised baseline, blender Pascal VOC 2012, 1/16 partition: the 662 labeled images only.
# "Sup Baseline" of Table 1 (b), paper mIoU 67.87: the number of U2PL's SupOnly row (U2PL README), which U2PL trained on its own blender splits.
# Split: CPS DATA/pascal_voc/subset_train_aug/train_aug_labeled_1-16.txt (the split of esl_r101_voc-aug_1-16.py).
# Iterations: 80 epochs x 662 labeled images / 8 per iteration = 6,620
# (an epoch of a supervised run is a pass over the labeled set, U2PL's train_sup.py; not in the paper).
# Batch: 8 labeled images per iteration in total = 2 per GPU on 4 GPUs with SyncBN (2, not 1 + 8 GPUs: the
# ASPP image-pooling BN needs >= 2 values per channel whenever BN is not synchronised, e.g. on one device):
#   tools/dist_train.sh configs/esl/sup_r101_voc-aug_1-16.py 4
# On G GPUs keep the total: --cfg-options train_dataloader.batch_size=8/G (with SyncBN also 1 on 8 GPUs).
_base_ = ['../_base_/experiments/sup_r101_voc.py']
train_dataloader = dict(
    batch_size=2,  # per GPU, on 4 GPUs
    dataset=dict(split_file='splits/cps/pascal_voc/subset_train_aug/train_aug_labeled_1-16.txt'))
train_cfg = dict(max_iters=6620)
