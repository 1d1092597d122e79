"""Every config under configs/esl/ builds and trains on CPU: one training per distinct config, the rest on meta.

Each config is loaded as it stands and changed only in the whitelist of paper_config_helpers.whitelist_overrides
(input size 64, data roots, no pretrained weights, few iterations and no checkpoint, SyncBN -> BN); being run inside
the pytest process, its dataloaders also use no worker processes. The data is a tiny generated dataset in the
config's layout (Pascal VOC or Cityscapes) with a split file at every path the config names.

Configs that differ only in paths or scalars (a split, η, K > 0, a channel count: one
``paper_config_helpers.config_fingerprint``) run the same code: the first of each group (the headline config for
its own) trains ITERS iterations and validates with its real model (ResNet-101, SegFormer, ...); the others pass
the pre-flight on their tiny data (model built on the meta device, datasets, consistency) and a forward of the
meta model whose shapes must fit (E^t has ``feat_channels`` channels, the logits C, the projector its input).

ESL's losses mixed into other mmseg models (SegFormer, PSPNet, UPerNet Swin-T / ConvNeXt-T: mmseg-native or
mmpretrain backbones) are checked here too: their head and backbone types, E^t's channels, and, from their
training, L = L_CE + λ1·L_SCE + λ2·L_CTR with a bank that filled after the first step (hence 3 iterations).
UPerNet ConvNeXt-T needs mmpretrain, an optional extra that needs a torchvision matching torch: where it does not
import (as on the CPU-only torch of the development machine) that case is skipped and the reason printed.

The headline config (esl_r101_voc_1-8.py) runs in the quick suite; the others are marked slow.
"""
import functools
import glob
import os.path as osp
from collections import defaultdict
from typing import Dict, List

import pytest
from conftest import REPO_ROOT
from mmengine.config import Config
from paper_config_helpers import (
    check_on_meta_device,
    config_fingerprint,
    make_tiny_cityscapes_root,
    make_tiny_voc_root,
    run_one_iteration,
)

ESL_DIR = osp.join(REPO_ROOT, 'configs', 'esl')
ALL_CONFIGS = sorted(osp.relpath(p, ESL_DIR) for p in glob.glob(osp.join(ESL_DIR, '**', '*.py'), recursive=True))
HEADLINE = 'esl_r101_voc_1-8.py'
#: Configs that mix ESL into another mmseg model: (decode head, backbone, channels of E^t).
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
#: Training iterations of a trained config: the contrastive bank is empty during the first loss, filled after.
ITERS = 3


@functools.lru_cache(maxsize=None)
def config_groups() -> Dict[str, List[str]]:
    """Fingerprint -> config names (sorted, the headline first in its group)."""
    groups: Dict[str, List[str]] = defaultdict(list)
    for name in ALL_CONFIGS:
        groups[config_fingerprint(Config.fromfile(osp.join(ESL_DIR, name)))].append(name)
    return {key: sorted(names, key=lambda n: (n != HEADLINE, n)) for key, names in groups.items()}


def trains(name: str) -> bool:
    """Whether ``name`` is the config its fingerprint group trains."""
    return name == HEADLINE or any(names[0] == name for names in config_groups().values())


@pytest.fixture(scope='module')
def tiny_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp('paper_configs')
    return dict(voc=make_tiny_voc_root(str(base / 'voc')), cityscapes=make_tiny_cityscapes_root(str(base / 'city')))


def params():
    return [pytest.param(name, marks=() if name == HEADLINE else pytest.mark.slow, id=name) for name in ALL_CONFIGS]


def test_the_sweep_sees_every_kind_of_config():
    names = set(ALL_CONFIGS)
    assert HEADLINE in names and len(names) >= 50
    for prefix in ('esl_r101_voc_', 'esl_r101_voc-aug_', 'esl_r101_cityscapes_', 'sup_r101_', 'mt-hard_',
                   'ablations/', 'esl_segformer_', 'esl_pspnet_', 'esl_upernet_swin', 'esl_upernet_convnext'):
        assert any(n.startswith(prefix) for n in names), prefix
    assert set(MIXED_IN) <= names


@pytest.mark.slow
def test_fingerprints_group_variants_and_keep_distinct_code_paths_apart():
    groups = config_groups()
    group_of = {name: key for key, names in groups.items() for name in names}
    assert len(groups) < len(ALL_CONFIGS)
    print(f'{len(ALL_CONFIGS)} configs, {len(groups)} trainings: ' + '; '.join(map(', '.join, groups.values())))
    # Splits of one method share a training; methods, datasets and the K = 0 / DSL switches do not.
    assert group_of['esl_r101_voc_1-8.py'] == group_of['esl_r101_voc_1-16.py'] == group_of['esl_r101_voc_full.py']
    assert len({group_of[n] for n in ('esl_r101_voc_1-8.py', 'sup_r101_voc_1-8.py', 'mt-hard_r101_voc_1-8.py',
                                      'esl_r101_cityscapes_1-8.py', 'ablations/mt-dsl_r101_voc_full.py')}) == 5


@pytest.mark.parametrize('name', params())
def test_config_trains_or_fits_its_trained_twin(name, tiny_roots, tmp_path):
    if not trains(name):
        cfg = check_on_meta_device(osp.join(ESL_DIR, name), tiny_roots, str(tmp_path / 'work'))
        check_mixed_in_types(name, cfg)
        return
    cfg, scalars, metrics, last_iter = run_one_iteration(osp.join(ESL_DIR, name), tiny_roots, str(tmp_path / 'work'),
                                                         iters=ITERS)
    assert last_iter == ITERS
    assert scalars['loss'] > 0 and 'decode.loss_ce' in scalars
    assert 'val/mIoU' in metrics  # the validation step ran and was evaluated
    if cfg.model.type == 'ESLSegmentor':
        assert 'unsup.loss_dsl' in scalars and 'unsup.teacher_conf' in scalars
        contrast = cfg.model.semi_train_cfg.loss_contrast.num_parts > 0
        assert ('contrast.loss_ctr' in scalars) is contrast
    else:
        assert not any(k.startswith(('unsup.', 'contrast.')) for k in scalars)
    if name in MIXED_IN:
        check_mixed_in_types(name, cfg)
        # Eq. 11: L_CE of the wrapped model, λ1·L_SCE (DSL) and λ2·L_CTR, all summed into the total loss.
        for key in ('decode.loss_ce', 'unsup.loss_dsl', 'contrast.loss_ctr'):
            assert key in scalars, (key, sorted(scalars))
        assert scalars['unsup.loss_dsl'] > 0
        assert scalars['contrast.anchors'] > 0 and scalars['contrast.loss_ctr'] > 0  # the bank filled after step 1
        total = scalars['decode.loss_ce'] + scalars['unsup.loss_dsl'] + scalars['contrast.loss_ctr']
        assert scalars['loss'] == pytest.approx(total, rel=1e-4)
        assert scalars['contrast.bank_fill'] > 0


def check_mixed_in_types(name: str, cfg: Config) -> None:
    if name not in MIXED_IN:
        return
    head, backbone, feat_channels = MIXED_IN[name]
    seg = cfg.model.segmentor
    assert cfg.model.type == 'ESLSegmentor' and seg.decode_head.type == head and seg.backbone.type == backbone
    assert seg.get('auxiliary_head') is None
    assert cfg.model.semi_train_cfg.loss_contrast.feat_channels == feat_channels


def test_meta_check_catches_a_wrong_feat_channels(tiny_roots, tmp_path):
    """What the meta check adds to the pre-flight: E^t's channels against feat_channels, from a forward."""
    with pytest.raises(AssertionError, match='feat_channels'):
        check_on_meta_device(osp.join(ESL_DIR, HEADLINE), tiny_roots, str(tmp_path / 'work'),
                             options={'model.semi_train_cfg.loss_contrast.feat_channels': 1024})
