"""README "Train ESL on your own dataset": its command blocks, read from the README, on a generated dataset.

The dataset is laid out as the README describes and unlike the demo: 4 classes of its own (from ``classes.txt``),
``.png`` images of three sizes, ``<id>_mask.png`` masks for 70 of the 136 images, no split files. The commands
run in a folder that has the repository's ``tools/`` and ``configs/`` and the dataset under ``data/``, as a user's
clone would. What is not run as written, and why:

* block ``train-gpu`` (``dist_train.sh ... 4``) needs 4 GPUs: not run; its checkpoint name is checked against
  what ``make_config.py`` prints;
* block ``cpu``: both trainings get ``--cfg-options`` that cut them to 4 iterations (the README's 2,000 take about 20
  minutes on 2 cores) with 1-iteration teacher phases and a log line per iteration, and the checkpoint
  ``iter_2000.pth`` becomes ``iter_4.pth``.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import re
import sys

import pytest
from conftest import REPO_ROOT, clean_env, run

from mmseg_esl.testing.own_dataset import OWN_CLASSES, make_own_dataset

README = osp.join(REPO_ROOT, 'README.md')
SHORT_TRAINING = ('--cfg-options train_cfg.max_iters=4 train_cfg.val_interval=2 default_hooks.checkpoint.interval=2 '
                  'default_hooks.logger.interval=1 custom_hooks.0.sup_only_iters=1 custom_hooks.0.copy_iters=1')


def readme_block(name: str) -> str:
    """The bash code block after ``<!-- own-dataset:NAME -->`` in the README."""
    text = open(README, encoding='utf-8').read()
    match = re.search(rf'<!-- own-dataset:{name} -->\n```bash\n(.*?)```', text, re.S)
    assert match, f'README.md has no block <!-- own-dataset:{name} -->'
    return match.group(1)


def commands(block: str) -> list:
    """The block's commands, continuation lines joined, comments dropped."""
    joined = block.replace('\\\n', ' ')
    return [' '.join(line.split(' #')[0].split()) for line in joined.splitlines()
            if line.strip() and not line.startswith('#')]


@pytest.fixture
def workspace(tmp_path):
    """A user's working folder: the repository's tools and configs, the dataset in data/my_dataset."""
    os.symlink(osp.join(REPO_ROOT, 'tools'), tmp_path / 'tools')
    os.makedirs(tmp_path / 'configs')
    for name in os.listdir(osp.join(REPO_ROOT, 'configs')):
        os.symlink(osp.join(REPO_ROOT, 'configs', name), tmp_path / 'configs' / name)
    make_own_dataset(str(tmp_path / 'data' / 'my_dataset'), num_images=136, num_masked=70)
    return str(tmp_path)


def bash(command: str, cwd: str):
    env = clean_env({'PATH': osp.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', '')})
    return run(['bash', '-euo', 'pipefail', '-c', command], cwd=cwd, env=env, timeout=900)


@pytest.mark.slow
def test_readme_own_dataset_commands_prepare_train_test_and_analyse(workspace):
    splits_cmd, config_cmd = commands(readme_block('prepare'))
    made = bash(splits_cmd, workspace).stdout
    assert '136 images' in made and 'val.txt: 40 ids' in made and 'labeled.txt: 20 ids' in made
    assert 'unlabeled.txt: 76 ids' in made

    written = bash(config_cmd, workspace).stdout
    gpu_config = osp.join(workspace, 'configs', 'my_dataset', 'esl_r101_my_dataset.py')
    assert osp.isfile(gpu_config), written
    assert '8 + 8 images per iteration on 4 process(es); 760 iterations' in written
    assert 'checked: 136 images and 60 masks read without a problem' in written
    for name in OWN_CLASSES:
        assert re.search(rf'\d+ {name} +\d+\.\d+ %', written), written
    dist_train, mmseg_tools, mmseg_test = commands(readme_block('train-gpu'))
    assert dist_train == 'tools/dist_train.sh configs/my_dataset/esl_r101_my_dataset.py 4'
    assert mmseg_test.endswith('work_dirs/esl_r101_my_dataset/iter_760.pth')
    assert 'work_dirs/esl_r101_my_dataset/iter_760.pth' in written  # what make_config prints as the next step

    cpu_config, train, sup_train, test, analyse = commands(readme_block('cpu'))
    assert train == 'python tools/train.py configs/my_dataset/esl_effnet-lite0_my_dataset.py'
    assert 'wrote configs/my_dataset/sup_effnet-lite0_my_dataset.py' in bash(cpu_config, workspace).stdout
    trained = bash(f'{train} {SHORT_TRAINING}', workspace).stdout
    assert 'Iter(train) [4/4]' in trained and 'teacher/mIoU' in trained and 'student/mIoU' in trained
    assert 'unsup.loss_dsl' in trained and 'contrast.loss_ctr' in trained  # the unlabeled terms trained
    assert 'unsup.pseudo_acc' in trained  # unlabeled images with a mask feed the logged accuracy

    sup_short = SHORT_TRAINING.replace(' custom_hooks.0.sup_only_iters=1 custom_hooks.0.copy_iters=1', '')
    supervised = bash(f'{sup_train} {sup_short}', workspace).stdout
    assert 'Iter(train) [4/4]' in supervised and 'unsup.' not in supervised and re.search(r'mIoU: \d', supervised)

    tested = bash(test.replace('iter_2000.pth', 'iter_4.pth'), workspace).stdout
    assert re.search(r'Iter\(test\) \[40/40\].*mIoU: \d+\.\d+', tested), tested[-2000:]
    bash(mmseg_tools + ' && ' + mmseg_test.replace('esl_r101_my_dataset', 'esl_effnet-lite0_my_dataset')
         .replace('iter_760.pth', 'iter_4.pth'), workspace)  # mmseg's own test.py on the CPU checkpoint

    bash(analyse.replace('iter_2000.pth', 'iter_4.pth'), workspace)
    figure = osp.join(workspace, 'work_dirs', 'analysis', 'my_dataset_pseudo_labels.png')
    assert osp.isfile(figure)
    stats = json.load(open(osp.splitext(figure)[0] + '.json'))
    assert stats['classes'] == list(OWN_CLASSES) and stats['num_images'] == 76  # the unlabeled split
