# ESL (Eq. 11) around the paper's DeepLabv3+ R101-D8 (./deeplabv3plus_r101-d8.py): a student and an EMA teacher of
# the same architecture, CutMix, Dynamic Soft Labels and the pixel-to-part contrast. Every value the paper gives is
# written out here, with where it comes from; the others are marked "not in the paper".
_base_ = ['./deeplabv3plus_r101-d8.py']
model = dict(
    _delete_=True,
    type='ESLSegmentor',
    segmentor=_base_.model,
    semi_train_cfg=dict(
        # Eq. 3-6 and 11: Dynamic Soft Label with η = 0.95 (Tab. 3), soft cross-entropy weighted by λ1 = 0.2.
        loss_unsup=dict(type='DSLLoss', mode='dsl', eta=0.95, loss_weight=0.2),
        # §4.1: the strong view is CutMix only. Not in the paper: probability 1 (U2PL: 0.5), UniMatch's boxes, the
        # partner = an extra unlabeled image per unlabeled image (works with 1 unlabeled image per GPU).
        cutmix=dict(prob=1.0, area_range=(0.02, 0.4), ratio_range=(0.3, 1 / 0.3), partner='extra'),
        loss_contrast=dict(
            type='PixelPartContrastLoss',
            feat_channels=2048,  # L' = channels of E^t, ResNet-101 layer4 (the last output of extract_feat)
            in_index=-1,
            num_parts=5,  # K, subclasses per class (§3.3, Tab. 4)
            conf_thresh=0.95,  # ζ, teacher confidence of an unlabeled anchor (Eq. 9)
            anchor_ratio=0.1,  # 10 % of each class's pixels are anchors (Eq. 9)
            num_negatives=255,  # N_s (Eq. 10)
            temperature=0.5,  # σ (Eq. 10)
            stride=4,  # τ: Eq. 7-10, 12 at H/4 x W/4, the projector's resolution (§3.4)
            prototype_momentum=0.99,  # θ (Eq. 12)
            loss_weight=0.1,  # λ2 (Eq. 11)
            # Not in the paper (the defaults of PixelPartContrastLoss; README "Where the paper is silent"):
            queue_size=256,
            negatives='part',
            reduction='paper',
            unlabeled_part_thresh=0.0,
            normalize_prototype_feats=True)),
    # Projector P: L = 512 (§3.4). Not in the paper: 256 hidden channels and the layout (U2PL's representation
    # head); in_channels and norm_cfg (SyncBN) come from the decode head.
    projector=dict(type='ProjectorHead', channels=256, out_channels=512),
    # The EMA teacher predicts at validation and test time (as U2PL evaluates its teacher).
    semi_test_cfg=dict(predict_on='teacher'))
