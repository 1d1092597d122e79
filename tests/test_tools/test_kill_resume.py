"""kill -9 at any moment: a tiny ESL run killed with SIGKILL several times (once in the middle of writing a
checkpoint, then at random moments) and restarted each time with a bare ``--resume`` ends bit-identical to an
uninterrupted run: student, teacher, bank, prototypes, optimizer (issue 18).

A: ``N`` iterations in one go. B: the same config plus ``KillDuringSaveHook`` (``tests/fault_injection_hook.py``),
which writes half of the iteration-``SAVE_KILL`` checkpoint and kills itself; then ``RANDOM_KILLS`` restarts
killed from outside: the first after a seeded random delay from its start (start-up or training), the others at a
seeded random moment after their first new checkpoint (training, validation or a save, wherever it lands);
then one restart that runs to the end. A checkpoint is saved every iteration so that kills often hit a save.
"""
import glob
import os
import os.path as osp
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO_ROOT, clean_env, run, tiny_data_options
from mmengine.config import Config
from mmengine.runner.checkpoint import _load_checkpoint
from record_train_hook import write_recorded_config

from mmseg_esl.testing import make_tiny_voc

TINY_ESL = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_esl_voc.py')
TESTS_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
N = 16
SAVE_KILL = 3  # the checkpoint of this iteration is cut in half by a SIGKILL
RANDOM_KILLS = 3


def command(config: str, work_dir: str, data: str) -> list:
    return [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir, '--resume',
            '--cfg-options', *tiny_data_options(data, semi=True), f'train_cfg.max_iters={N}',
            f'train_cfg.val_interval={N // 2}', 'default_hooks.checkpoint.interval=1', f'param_scheduler.0.end={N}']


def env() -> dict:
    return clean_env({'PYTHONPATH': REPO_ROOT + ':' + TESTS_DIR})


def saved_iterations(work_dir: str) -> int:
    return len(glob.glob(osp.join(work_dir, 'iter_*.pth')))


def checkpoints_are_complete(work_dir: str) -> None:
    for path in glob.glob(osp.join(work_dir, 'iter_*.pth')):
        _load_checkpoint(path, map_location='cpu')  # raises on a partial file


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('kill_resume')
    data = str(root / 'data')
    make_tiny_voc(data, num_train=8, num_val=2, num_labeled=2, seed=5)
    out = {name: str(root / f'rec_{name}') for name in 'AB'}
    write_recorded_config(str(root / 'cfg_A.py'), TINY_ESL, out['A'])
    cfg_b = Config.fromfile(write_recorded_config(str(root / 'cfg_B.py'), TINY_ESL, out['B']))
    marker = str(root / 'killed_during_save')
    cfg_b.custom_hooks.append(dict(type='KillDuringSaveHook', at_iter=SAVE_KILL, marker=marker))
    cfg_b.custom_imports['imports'].append('fault_injection_hook')
    cfg_b.dump(str(root / 'cfg_B.py'))
    work_a, work_b = str(root / 'work_A'), str(root / 'work_B')
    run(command(str(root / 'cfg_A.py'), work_a, data), cwd=str(root), env=env())

    events = []
    killed = subprocess.run(command(str(root / 'cfg_B.py'), work_b, data), cwd=str(root), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    events.append(dict(returncode=killed.returncode, files=sorted(os.listdir(work_b))))
    checkpoints_are_complete(work_b)
    delays = random.Random(0)
    for attempt in range(RANDOM_KILLS):
        before = saved_iterations(work_b)
        proc = subprocess.Popen(command(str(root / 'cfg_B.py'), work_b, data), cwd=str(root), env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        if attempt == 0:  # anywhere from the start-up on
            time.sleep(delays.uniform(0.5, 6.0))
        else:  # inside training: once it has saved a new checkpoint, a random moment of the next iterations
            deadline = time.time() + 300
            while saved_iterations(work_b) <= before and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(delays.uniform(0.0, 0.7))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        events.append(dict(returncode=proc.returncode, files=sorted(os.listdir(work_b))))
        checkpoints_are_complete(work_b)
    final = run(command(str(root / 'cfg_B.py'), work_b, data), cwd=str(root), env=env())
    return dict(out=out, work_A=work_a, work_B=work_b, events=events, final_log=final.stdout)


@pytest.mark.slow
def test_a_kill_during_a_save_leaves_no_partial_checkpoint(runs):
    first = runs['events'][0]
    assert first['returncode'] == -signal.SIGKILL
    assert f'iter_{SAVE_KILL}.pth' not in first['files'] and f'iter_{SAVE_KILL - 1}.pth' in first['files']
    assert any(name.startswith(f'.iter_{SAVE_KILL}.pth.') and name.endswith('.tmp') for name in first['files'])
    with open(osp.join(runs['work_B'], 'last_checkpoint')) as f:
        assert f.read().strip() == osp.join(runs['work_B'], f'iter_{N}.pth')
    assert not glob.glob(osp.join(runs['work_B'], '.*.tmp'))  # removed by the resumes


@pytest.mark.slow
def test_the_random_kills_landed_in_training_and_each_restart_resumed(runs):
    """Kills that all landed in the start-up would test nothing: the later ones came after new checkpoints."""
    def saved(event):
        return {name for name in event['files'] if name.startswith('iter_') and name.endswith('.pth')}
    random_kills = runs['events'][1:]
    assert all(event['returncode'] == -signal.SIGKILL for event in random_kills), runs['events']
    progress = [len(saved(b)) - len(saved(a)) for a, b in zip(runs['events'], random_kills)]
    assert all(p > 0 for p in progress[1:]), runs['events']
    assert len(saved(runs['events'][-1])) < N  # the last kill still came before the end
    assert 'Resuming from' in runs['final_log'] and 'Advance dataloader' in runs['final_log']


@pytest.mark.slow
def test_killed_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(runs):
    final_a = torch.load(osp.join(runs['out']['A'], 'final_rank0.pth'), weights_only=True)
    final_b = torch.load(osp.join(runs['out']['B'], 'final_rank0.pth'), weights_only=True)
    assert final_a.keys() == final_b.keys()
    for prefix in ('student.', 'teacher.', 'contrast_loss.bank.queues', 'contrast_loss.bank.pointers',
                   'contrast_loss.prototypes'):
        assert any(k.startswith(prefix) for k in final_a), prefix
    different = [k for k in final_a if not torch.equal(final_a[k], final_b[k])]
    assert not different, (different[:10], runs['events'])
    ckpt_a = _load_checkpoint(osp.join(runs['work_A'], f'iter_{N}.pth'), map_location='cpu')
    ckpt_b = _load_checkpoint(osp.join(runs['work_B'], f'iter_{N}.pth'), map_location='cpu')
    states_a, states_b = ckpt_a['optimizer']['state'], ckpt_b['optimizer']['state']
    assert states_a.keys() == states_b.keys() and states_a
    for key in states_a:
        assert all(torch.equal(states_a[key][k], states_b[key][k]) for k in states_a[key])
