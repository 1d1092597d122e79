# Supervised baseline, Cityscapes, 1/8 partition: the 372 labeled images only.
# "Sup Baseline" of Table 1 (c), paper mIoU 72.53: the number of U2PL's SupOnly row (U2PL README).
# Split: U2PL data/splits/cityscapes/372/labeled.txt.
# Iterations: 200 epochs x 372 labeled images / 8 per iteration = 9,300
# (an epoch of a supervised run is a pass over the labeled set, U2PL's train_sup.py; not in the paper).
# Batch: 8 labeled images per iteration in total = 2 per GPU on 4 GPUs with SyncBN (2, not 1 + 8 GPUs: the
# ASPP image-pooling BN needs >= 2 values per channel whenever BN is not synchronised, e.g. on one device):
#   tools/dist_train.sh configs/esl/sup_r101_cityscapes_1-8.py 4
# On G GPUs keep the total: --cfg-options train_dataloader.batch_size=8/G (with SyncBN also 1 on 8 GPUs).
_base_ = ['../_base_/experiments/sup_r101_cityscapes.py']
train_dataloader = dict(
    batch_size=2,  # per GPU, on 4 GPUs
    dataset=dict(split_file='splits/u2pl/cityscapes/372/labeled.txt'))
train_cfg = dict(max_iters=9300)
