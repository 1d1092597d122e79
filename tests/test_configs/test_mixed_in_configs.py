"""ESL's losses mixed into other mmseg models by config alone: a few iterations, with the ESL terms in the losses.

SegFormer MiT-B0 ... B5, PSPNet R50-D8 and UPerNet Swin-T are mmseg-native; UPerNet ConvNeXt-T uses mmpretrain's
backbone, an optional extra that needs a torchvision matching torch: where it does not import (as on the CPU-only
torch of the development machine) that case is skipped and the reason printed. Same whitelist as the sweep
(paper_config_helpers), 3 iterations: the contrastive bank is empty during the first loss and has entries after.
"""
import os.path as osp

import pytest
from conftest import REPO_ROOT
from paper_config_helpers import make_tiny_cityscapes_root, make_tiny_voc_root, run_one_iteration

ESL_DIR = osp.join(REPO_ROOT, 'configs', 'esl')
MIXED_IN = {
    'esl_segformer_mit-b0_voc_1-8.py': ('SegformerHead', 'MixVisionTransformer', 256),
    'esl_segformer_mit-b1_voc_1-8.py': ('SegformerHead', 'MixVisionTransformer', 512),
    'esl_segformer_mit-b2_voc_1-8.py': ('SegformerHead', 'MixVisionTransformer', 512),
    'esl_segformer_mit-b3_voc_1-8.py': ('SegformerHead', 'MixVisionTransformer', 512),
    'esl_segformer_mit-b4_voc_1-8.py': ('SegformerHead', 'MixVisionTransformer', 512),
    'esl_segformer_mit-b5_voc_1-8.py': ('SegformerHead', 'MixVisionTransformer', 512),
    'esl_pspnet_r50-d8_voc_1-8.py': ('PSPHead', 'ResNetV1c', 2048),
    'esl_upernet_swin-t_voc_1-8.py': ('UPerHead', 'SwinTransformer', 768),
    'esl_upernet_convnext-t_voc_1-8.py': ('UPerHead', 'mmpretrain.ConvNeXt', 768),
}
ITERS = 3


@pytest.fixture(scope='module')
def tiny_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp('mixed_in')
    return dict(voc=make_tiny_voc_root(str(base / 'voc')), cityscapes=make_tiny_cityscapes_root(str(base / 'city')))


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(MIXED_IN))
def test_mixed_in_config_trains_with_the_esl_terms(name, tiny_roots, tmp_path):
    head, backbone, feat_channels = MIXED_IN[name]
    cfg, scalars, metrics, last_iter = run_one_iteration(osp.join(ESL_DIR, name), tiny_roots, str(tmp_path / 'w'),
                                                         iters=ITERS)
    seg = cfg.model.segmentor
    assert cfg.model.type == 'ESLSegmentor' and seg.decode_head.type == head and seg.backbone.type == backbone
    assert seg.get('auxiliary_head') is None
    assert cfg.model.semi_train_cfg.loss_contrast.feat_channels == feat_channels
    assert last_iter == ITERS and 'val/mIoU' in metrics
    # Eq. 11: L_CE of the wrapped model, λ1·L_SCE (DSL) and λ2·L_CTR, all summed into the total loss.
    for key in ('decode.loss_ce', 'unsup.loss_dsl', 'contrast.loss_ctr'):
        assert key in scalars, (key, sorted(scalars))
    assert scalars['unsup.loss_dsl'] > 0
    assert scalars['contrast.anchors'] > 0 and scalars['contrast.loss_ctr'] > 0  # the bank filled after step 1
    total = scalars['decode.loss_ce'] + scalars['unsup.loss_dsl'] + scalars['contrast.loss_ctr']
    assert scalars['loss'] == pytest.approx(total, rel=1e-4)
    assert scalars['contrast.bank_fill'] > 0
