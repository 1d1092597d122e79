# Supervised baseline, classic Pascal VOC 2012, 1/16 partition: the 92 labeled images only.
# "Sup Baseline" of Table 1 (a), paper mIoU 45.77: the number of U2PL's SupOnly row (U2PL README).
# Split: U2PL data/splits/pascal/92/labeled.txt.
# Iterations: 80 epochs x 92 labeled images / 8 per iteration = 920
# (an epoch of a supervised run is a pass over the labeled set, U2PL's train_sup.py; not in the paper).
# Batch: 8 labeled images per iteration in total = 2 per GPU on 4 GPUs with SyncBN (2, not 1 + 8 GPUs: the
# ASPP image-pooling BN needs >= 2 values per channel whenever BN is not synchronised, e.g. on one device):
#   tools/dist_train.sh configs/esl/sup_r101_voc_1-16.py 4
# On G GPUs keep the total: --cfg-options train_dataloader.batch_size=8/G (with SyncBN also 1 on 8 GPUs).
_base_ = ['../_base_/experiments/sup_r101_voc.py']
train_dataloader = dict(
    batch_size=2,  # per GPU, on 4 GPUs
    dataset=dict(split_file='splits/u2pl/pascal/92/labeled.txt'))
train_cfg = dict(max_iters=920)
