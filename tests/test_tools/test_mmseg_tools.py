"""mmseg's *own* tools (installed under mmseg/.mim/tools) train, resume and test our configs unchanged."""
import os.path as osp
import re

import mmseg
import pytest
from conftest import TINY_CONFIG, run, tiny_data_options

MMSEG_TOOLS = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools')


@pytest.mark.slow
def test_mmseg_train_resume_test(tiny_voc, tmp_path, python):
    work_dir = str(tmp_path / 'work')
    data = tiny_data_options(tiny_voc)
    train = [python, osp.join(MMSEG_TOOLS, 'train.py'), TINY_CONFIG, '--work-dir', work_dir]

    first = run(train + ['--cfg-options', *data], cwd=str(tmp_path))
    assert 'Iter(train) [2/2]' in first.stdout
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))

    resumed = run(train + ['--resume', '--cfg-options', 'train_cfg.max_iters=4', *data], cwd=str(tmp_path))
    assert re.search(r'resumed epoch: \d+, iter: 2', resumed.stdout), resumed.stdout[-3000:]
    assert 'Iter(train) [3/4]' in resumed.stdout and 'Iter(train) [1/4]' not in resumed.stdout
    assert osp.isfile(osp.join(work_dir, 'iter_4.pth'))

    tested = run([python, osp.join(MMSEG_TOOLS, 'test.py'), TINY_CONFIG, osp.join(work_dir, 'iter_4.pth'),
                  '--work-dir', str(tmp_path / 'test'), '--cfg-options', *data], cwd=str(tmp_path))
    miou = re.search(r'mIoU: (\d+\.\d+)', tested.stdout)
    assert miou, tested.stdout[-3000:]
    assert 0.0 <= float(miou.group(1)) <= 100.0
