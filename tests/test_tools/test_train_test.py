"""Our tools: train.py / test.py (mmseg's CLI) and torchrun-based dist_train.sh with 2 CPU processes."""
import os
import os.path as osp
import re

import pytest
import torch
from conftest import REPO_ROOT, TINY_CONFIG, clean_env, free_port, run, tiny_data_options
from mmengine.runner.checkpoint import _load_checkpoint

TOOLS = osp.join(REPO_ROOT, 'tools')


@pytest.mark.slow
def test_train_then_test_with_show_dir(tiny_voc, tmp_path, python):
    work_dir = str(tmp_path / 'work')
    data = tiny_data_options(tiny_voc)
    run([python, osp.join(TOOLS, 'train.py'), TINY_CONFIG, '--work-dir', work_dir, '--cfg-options', *data],
        cwd=str(tmp_path))
    checkpoint = osp.join(work_dir, 'iter_2.pth')
    assert _load_checkpoint(checkpoint)['meta']['iter'] == 2

    # --resume with an explicit checkpoint path continues from it.
    resumed = run([python, osp.join(TOOLS, 'train.py'), TINY_CONFIG, '--work-dir', work_dir,
                   '--resume', checkpoint, '--cfg-options', 'train_cfg.max_iters=3', *data], cwd=str(tmp_path))
    assert re.search(r'resumed epoch: \d+, iter: 2', resumed.stdout)

    tested = run([python, osp.join(TOOLS, 'test.py'), TINY_CONFIG, checkpoint, '--work-dir',
                  str(tmp_path / 'test'), '--show-dir', 'vis', '--cfg-options', *data,
                  'default_hooks.visualization.interval=1'], cwd=str(tmp_path))
    assert re.search(r'mIoU: \d+\.\d+', tested.stdout)
    painted = os.listdir(tmp_path / 'vis' / 'vis_data' / 'vis_image')
    assert len(painted) == 4, painted  # one painted prediction per validation image


@pytest.mark.slow
def test_dist_train_two_cpu_processes(tiny_voc, tmp_path):
    work_dir = str(tmp_path / 'work')
    proc = run(['bash', osp.join(TOOLS, 'dist_train.sh'), TINY_CONFIG, '2', '--work-dir', work_dir,
                '--cfg-options', *tiny_data_options(tiny_voc)],
               cwd=str(tmp_path), env=clean_env({'PORT': str(free_port())}))
    assert 'Distributed training: True' in proc.stdout
    if not torch.cuda.is_available():  # the CPU path of mmseg_esl.utils.launch
        assert "backend='gloo'" in proc.stdout, proc.stdout[-3000:]
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))


def test_dist_train_usage_error(tmp_path):
    proc = run(['bash', osp.join(TOOLS, 'dist_train.sh')], cwd=str(tmp_path), check=False)
    assert proc.returncode == 2 and 'usage:' in proc.stdout
