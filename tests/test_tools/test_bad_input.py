"""Issue 9 through the tools: bad input stops ``tools/train.py`` / ``tools/test.py`` with one clear message before
anything is written, and a NaN loss stops training before the optimizer step and the checkpoint of that iteration.

The pre-flight itself is tested case by case in ``tests/test_utils/test_preflight.py``; these tests check the
wiring: exit code, message, no traceback, no work dir.
"""
import os
import os.path as osp
from typing import List

import pytest
import torch
from conftest import REPO_ROOT, run, tiny_data_options
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmseg.registry import MODELS

from mmseg_esl.models.segmentors.esl_segmentor import ESLSegmentor, NonFiniteLossError
from mmseg_esl.testing import make_tiny_voc

TOOLS = osp.join(REPO_ROOT, 'tools')
ESL_CONFIG = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_esl_voc.py')
PLAIN_CONFIG = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_supervised_voc.py')


def tool(python: str, script: str, *args: str, cwd: str) -> str:
    """Runs a tool that must refuse its input; returns its output after the common assertions."""
    proc = run([python, osp.join(TOOLS, script), *args], cwd=cwd, check=False)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert 'Traceback' not in proc.stdout, proc.stdout[-3000:]  # the message says it all
    return proc.stdout


def work_dir_args(tmp_path) -> List[str]:
    return ['--work-dir', str(tmp_path / 'work')]


@pytest.fixture
def data(tmp_path) -> dict:
    root = str(tmp_path / 'tiny')
    return dict(root=root, ids=make_tiny_voc(root, num_train=8, num_val=4, seed=0))


@pytest.mark.slow
def test_train_refuses_a_corrupt_image_before_creating_the_work_dir(data, tmp_path, python):
    broken = osp.join(data['root'], 'JPEGImages', f'{data["ids"]["unlabeled"][3]}.jpg')
    open(broken, 'wb').close()
    out = tool(python, 'train.py', ESL_CONFIG, *work_dir_args(tmp_path), '--cfg-options',
               *tiny_data_options(data['root'], semi=True), cwd=str(tmp_path))
    assert 'DataFileError: 1 problem(s)' in out and f'image {broken} cannot be read (the file is empty' in out
    assert not osp.exists(tmp_path / 'work')


@pytest.mark.slow
def test_train_refuses_an_out_of_range_eta_before_creating_the_work_dir(data, tmp_path, python):
    out = tool(python, 'train.py', ESL_CONFIG, *work_dir_args(tmp_path), '--cfg-options',
               *tiny_data_options(data['root'], semi=True), 'model.semi_train_cfg.loss_unsup.eta=1.5',
               cwd=str(tmp_path))
    assert 'InputConfigError' in out and 'semi_train_cfg.loss_unsup.eta' in out and 'eta=1.5' in out
    assert not osp.exists(tmp_path / 'work')


@pytest.mark.slow
def test_test_refuses_an_esl_checkpoint_with_a_plain_config(data, tmp_path, python):
    with DefaultScope.overwrite_default_scope('mmseg'):
        esl = MODELS.build(Config.fromfile(ESL_CONFIG).model)
    checkpoint = str(tmp_path / 'esl.pth')
    torch.save(dict(state_dict=esl.state_dict(), meta=dict()), checkpoint)
    out = tool(python, 'test.py', PLAIN_CONFIG, checkpoint, *work_dir_args(tmp_path), '--cfg-options',
               *tiny_data_options(data['root']), cwd=str(tmp_path))
    assert 'CheckpointMismatchError' in out and 'is an ESL checkpoint' in out
    assert f'python tools/export_checkpoint.py {checkpoint} OUT.pth --which teacher' in out
    assert not osp.exists(tmp_path / 'work')


@pytest.mark.slow
def test_nan_loss_stops_training_before_the_step_and_the_checkpoint(data, tmp_path, monkeypatch):
    """Iteration 2 (runner.iter 1) returns a NaN L_SCE: no step, no iter_2.pth, parameters as in iter_1.pth."""
    original = ESLSegmentor.loss

    def nan_at_second_iteration(self, inputs, data_samples):
        losses = original(self, inputs, data_samples)
        if MessageHub.get_current_instance().get_info('iter') == 1:
            losses['unsup.loss_dsl'] = losses['unsup.loss_dsl'] * float('nan')
        return losses

    monkeypatch.setattr(ESLSegmentor, 'loss', nan_at_second_iteration)
    cfg = Config.fromfile(ESL_CONFIG)
    cfg.merge_from_dict(dict(option.split('=', 1) for option in tiny_data_options(data['root'], semi=True)))
    cfg.merge_from_dict({'train_cfg.max_iters': 3, 'train_cfg.val_interval': 3,
                         'default_hooks.checkpoint.interval': 1, 'param_scheduler.0.end': 3})
    # Without the contrastive term (and its K-means hook), to keep the test short; the NaN is in L_SCE.
    cfg.model.semi_train_cfg.loss_contrast.num_parts = 0
    cfg.custom_hooks = [hook for hook in cfg.custom_hooks if hook.type != 'PrototypeInitHook']
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    with pytest.raises(NonFiniteLossError, match=r'at training iteration 2 .*unsup\.loss_dsl=nan') as error:
        runner.train()
    assert error.traceback[-1].path.name == 'esl_segmentor.py'  # raised by parse_losses, not deep in torch
    saved = sorted(f for f in os.listdir(cfg.work_dir) if f.endswith('.pth'))
    assert saved == ['iter_1.pth']
    state = torch.load(osp.join(cfg.work_dir, 'iter_1.pth'), map_location='cpu', weights_only=False)['state_dict']
    # No optimizer step: every parameter is as saved after iteration 1. (Buffers such as BN statistics and the
    # memory bank move in the forward pass, before the loss exists; no checkpoint keeps them.)
    for name, value in runner.model.named_parameters():
        assert torch.equal(value, state[name]), f'{name} changed after the NaN iteration'
