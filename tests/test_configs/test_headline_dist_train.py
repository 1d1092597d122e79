"""The README's headline command, shrunk with --cfg-options, under tools/dist_train.sh with 2 CPU processes.

    tools/dist_train.sh configs/esl/esl_r101_voc_1-8.py 2 --cfg-options <whitelist>

The whitelist (paper_config_helpers.whitelist_overrides) changes only the input size (64), the data roots (a tiny
VOC-layout dataset holding the config's split paths), the pretrained weights (none), the iteration count (2) and,
through tools/train.py on a machine without CUDA, SyncBN -> BN. Everything else runs as configured: ResNet-101
DeepLabv3+, ESL with K-means prototypes, 4 dataloader workers per loader, gloo DDP, validation and a checkpoint.
"""
import glob
import json
import os
import os.path as osp

import pytest
import torch
from conftest import REPO_ROOT, clean_env, free_port, run
from mmengine.config import Config
from paper_config_helpers import as_cli_options, make_tiny_voc_root, whitelist_overrides, write_tiny_splits

HEADLINE = osp.join(REPO_ROOT, 'configs', 'esl', 'esl_r101_voc_1-8.py')
ITERS = 2


@pytest.mark.slow
def test_headline_command_runs_with_two_cpu_processes(tmp_path):
    data_root = make_tiny_voc_root(str(tmp_path / 'data'))
    cfg = Config.fromfile(HEADLINE)
    write_tiny_splits(cfg, data_root)
    options = as_cli_options(whitelist_overrides(cfg, data_root, iters=ITERS))
    work_dir = str(tmp_path / 'work')
    proc = run(['bash', osp.join(REPO_ROOT, 'tools', 'dist_train.sh'), HEADLINE, '2', '--work-dir', work_dir,
                '--cfg-options', *options],
               cwd=str(tmp_path), env=clean_env({'PORT': str(free_port())}), timeout=900)
    out = proc.stdout
    assert 'Distributed training: True' in out
    if not torch.cuda.is_available():
        assert "backend='gloo'" in out and 'converted to BN' in out, out[-3000:]
    assert 'PrototypeInitHook: prototypes (21, 5, 2048) initialised by K-means' in out
    checkpoint = osp.join(work_dir, f'iter_{ITERS}.pth')
    assert osp.isfile(checkpoint)
    (scalars,) = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    records = [json.loads(line) for line in open(scalars)]
    train = [r for r in records if 'loss' in r]
    assert train and train[-1]['iter'] == ITERS
    for key in ('decode.loss_ce', 'unsup.loss_dsl', 'contrast.loss_ctr', 'contrast.bank_fill'):
        assert key in train[-1], (key, train[-1])
    assert any('mIoU' in r for r in records)  # validation ran at the end
    os.remove(checkpoint)  # 800 MB
