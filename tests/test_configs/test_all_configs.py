"""Every config under configs/esl/ builds and runs one training iteration and one validation step on CPU.

Each config is loaded as it stands and changed only in the whitelist of paper_config_helpers.whitelist_overrides
(input size 64, data roots, no pretrained weights, 1 iteration and no checkpoint, SyncBN -> BN); being run inside
the pytest process, its dataloaders also use no worker processes. The real models are built (ResNet-101,
SegFormer-B5, ...), on 64 x 64 inputs. The data is a tiny generated dataset in the config's layout (Pascal VOC
or Cityscapes) with a split file at every path the config names.

The headline config (esl_r101_voc_1-8.py) runs in the quick suite; the others are marked slow (10-40 s each on
2 CPU cores).
"""
import glob
import os.path as osp

import pytest
from conftest import REPO_ROOT
from paper_config_helpers import make_tiny_cityscapes_root, make_tiny_voc_root, run_one_iteration

ESL_DIR = osp.join(REPO_ROOT, 'configs', 'esl')
ALL_CONFIGS = sorted(osp.relpath(p, ESL_DIR) for p in glob.glob(osp.join(ESL_DIR, '**', '*.py'), recursive=True))
HEADLINE = 'esl_r101_voc_1-8.py'


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


@pytest.mark.parametrize('name', params())
def test_config_trains_one_iteration_and_validates(name, tiny_roots, tmp_path):
    cfg, scalars, metrics, last_iter = run_one_iteration(osp.join(ESL_DIR, name), tiny_roots, str(tmp_path / 'work'))
    assert last_iter == 1
    assert scalars['loss'] > 0 and 'decode.loss_ce' in scalars
    assert 'val/mIoU' in metrics  # the validation step ran and was evaluated
    if cfg.model.type == 'ESLSegmentor':
        assert 'unsup.loss_dsl' in scalars and 'unsup.teacher_conf' in scalars
        contrast = cfg.model.semi_train_cfg.loss_contrast.num_parts > 0
        assert ('contrast.loss_ctr' in scalars) is contrast
    else:
        assert not any(k.startswith(('unsup.', 'contrast.')) for k in scalars)
