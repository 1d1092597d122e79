"""The demo: configs agree with the generated data, and tools/demo.py runs every method and prints the table."""
import json
import os.path as osp
import re
import sys

import pytest
from conftest import REPO_ROOT, run
from mmengine.config import Config

from mmseg_esl.testing import make_demo_dataset
from mmseg_esl.testing.demo_dataset import DEMO_CLASSES, DEMO_PALETTE
from mmseg_esl.utils.experiment import DEMO_METHODS, data_root_options


@pytest.mark.parametrize('name', sorted(DEMO_METHODS))
def test_demo_configs_match_the_dataset_and_differ_only_in_the_unlabeled_part(name):
    cfg = Config.fromfile(osp.join(REPO_ROOT, DEMO_METHODS[name]))
    segmentor = cfg.model if name in ('Sup', 'Full') else cfg.model.segmentor
    assert segmentor.decode_head.num_classes == len(DEMO_CLASSES)
    assert tuple(cfg.val_dataloader.dataset.metainfo.classes) == DEMO_CLASSES
    assert [list(c) for c in cfg.val_dataloader.dataset.metainfo.palette] == DEMO_PALETTE
    assert segmentor.backbone.type == 'EfficientNetLite' and segmentor.backbone.pretrained == 'efficientnet-lite0'
    sup = Config.fromfile(osp.join(REPO_ROOT, DEMO_METHODS['Sup']))
    assert cfg.train_cfg == sup.train_cfg and cfg.optim_wrapper.optimizer == sup.optim_wrapper.optimizer
    if name == 'Full':  # every training image with its label
        assert cfg.train_dataloader.dataset.ann_file == 'ImageSets/Segmentation/train.txt'
        assert cfg.train_dataloader.batch_size == sup.train_dataloader.batch_size
    elif name != 'Sup':
        assert cfg.train_dataloader.sampler.num_labeled == sup.train_dataloader.batch_size  # same labeled batch
        semi = cfg.model.semi_train_cfg
        assert semi.loss_unsup.mode == ('hard' if name == 'MT-hard' else 'dsl')
        assert (semi.loss_contrast.num_parts == 0) == (name != 'ESL')
    # Every data_root of the config can be redirected (tools/demo.py --data-root).
    options = data_root_options(osp.join(REPO_ROOT, DEMO_METHODS[name]), '/elsewhere')
    assert any(o.startswith('val_dataloader.dataset.data_root=') for o in options)


@pytest.mark.slow
def test_demo_runs_every_method_and_prints_the_table(tmp_path):
    data = str(tmp_path / 'data')
    make_demo_dataset(data, num_labeled=8, num_unlabeled=16, num_dev=0, num_val=6, seed=1)
    work = str(tmp_path / 'work')
    proc = run([sys.executable, osp.join(REPO_ROOT, 'tools', 'demo.py'), '--data-root', data, '--work-dir', work,
                '--iters', '2', '--methods', 'Sup', 'MT-hard', 'ESL'], cwd=str(tmp_path), timeout=900)
    assert '== demo dataset found' in proc.stdout
    assert 'Iter(train) [2/2]' in proc.stdout  # mmengine's progress reaches the terminal
    table = proc.stdout[proc.stdout.index('== ESL demo'):]
    for name in ('Sup', 'MT-hard', 'ESL'):
        both = r'\d+\.\d\d \| \d+\.\d\d' if name != 'Sup' else '– \\| –'  # teacher | student mIoU
        assert re.search(rf'\| {name} \| \S+ \| \d+\.\d\d \| {both} \| \d+\.\d\d \| \d+\.\d\d \| \d+\.\d min \|',
                         table), table
    with open(osp.join(work, 'results.json')) as f:
        results = json.load(f)['results']
    assert [r['name'] for r in results] == ['Sup', 'MT-hard', 'ESL'] and all(r['returncode'] == 0 for r in results)
