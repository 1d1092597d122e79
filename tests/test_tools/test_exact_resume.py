"""Exact resume: N iterations in one go == N/2, stop, ``--resume``, N/2 more, bit for bit on CPU.

Three ``tools/train.py`` runs of the tiny ESL config (full Eq. 11: CutMix with probability 1, DSL, anchors, bank
and prototype updates every iteration, K-means prototypes before training), one process, ``num_workers=0``:

* A: 8 iterations uninterrupted (checkpoint and validation at 4 and 8);
* B: the same schedule (PolyLR over 8 iterations) stopped at ``max_iters=4`` (validation + checkpoint at 4);
* C: ``--resume`` in B's work dir up to 8, with ``randomness.seed=123`` on the command line: the resumed run
  must take the seed B trained with from the checkpoint (``mmseg_esl.utils.resume``), or the sampler would
  replay another data order.

Compared: every logged value of every iteration (exact float equality), the images of every batch, and the
final state (student, teacher, bank queues and pointers, prototypes), optimizer and RNG states. A control run
without ``RNGStateHook`` shows the comparison is sensitive: it diverges at the first resumed iteration.

The same comparison across the teacher's phase boundary: ``EMATeacherHook(sup_only_iters=6)``, stopped at 4,
resumed: iterations 5-6 supervised only, then the copy and the semi-supervised iterations 7-8.
"""
import glob
import os.path as osp
import sys

import pytest
import torch
from conftest import REPO_ROOT, clean_env, run, tiny_data_options
from mmengine.runner.checkpoint import _load_checkpoint
from record_train_hook import read_records, write_recorded_config

from mmseg_esl.testing import make_tiny_voc

TINY_ESL = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_esl_voc.py')
TESTS_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
N = 8
HALF = N // 2
SUP_ONLY = 6  # iterations of the supervised-only phase in phase_runs: the boundary lies after the stop


def train(root, config, work_dir, data, max_iters, *extra):
    """tools/train.py with the fixed 8-iteration schedule, stopped at ``max_iters``."""
    cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir, *extra,
           '--cfg-options', *tiny_data_options(data, semi=True), f'train_cfg.max_iters={max_iters}',
           f'train_cfg.val_interval={HALF}', f'default_hooks.checkpoint.interval={HALF}',
           f'param_scheduler.0.end={N}']
    env = clean_env({'PYTHONPATH': REPO_ROOT + ':' + TESTS_DIR})
    return run(cmd, cwd=str(root), env=env)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('exact_resume')
    data = str(root / 'data')
    # 2 labeled + 6 unlabeled: one epoch is 6 iterations, so the 8 cross an epoch boundary of the sampler.
    make_tiny_voc(data, num_train=8, num_val=2, num_labeled=2, seed=5)
    out = {}
    for name, keep_rng in (('A', True), ('B', True), ('control', False)):
        out[name] = str(root / f'rec_{name}')
        write_recorded_config(str(root / f'cfg_{name}.py'), TINY_ESL, out[name], rng_state_hook=keep_rng)
    train(root, str(root / 'cfg_A.py'), str(root / 'work_A'), data, N)
    train(root, str(root / 'cfg_B.py'), str(root / 'work_B'), data, HALF)
    resumed = train(root, str(root / 'cfg_B.py'), str(root / 'work_B'), data, N, '--resume',
                    '--cfg-options', 'randomness.seed=123')
    # Control: the same stop and resume without RNGStateHook (B's iteration-4 checkpoint, copied).
    control = train(root, str(root / 'cfg_control.py'), str(root / 'work_control'), data, N, '--resume',
                    osp.join(root, 'work_B', f'iter_{HALF}.pth'))
    return dict(root=root, out=out, resumed_log=resumed.stdout, control_log=control.stdout,
                work_A=str(root / 'work_A'), work_B=str(root / 'work_B'))


@pytest.fixture(scope='module')
def phase_runs(tmp_path_factory):
    """A (8 iterations) and B (stop at 4, resume) with a supervised-only phase that ends after the stop."""
    root = tmp_path_factory.mktemp('exact_resume_phases')
    data = str(root / 'data')
    make_tiny_voc(data, num_train=8, num_val=2, num_labeled=2, seed=5)
    # 2 labeled images per iteration: the supervised-only phase forwards them alone, and the tiny model's ASPP
    # image-pool BatchNorm needs more than one value per channel.
    phase = ('--cfg-options', f'custom_hooks.0.sup_only_iters={SUP_ONLY}', 'train_dataloader.sampler.num_labeled=2',
             'train_dataloader.batch_size=4')
    out = {}
    for name in ('A', 'B'):
        out[name] = str(root / f'rec_{name}')
        write_recorded_config(str(root / f'cfg_{name}.py'), TINY_ESL, out[name])
    train(root, str(root / 'cfg_A.py'), str(root / 'work_A'), data, N, *phase)
    train(root, str(root / 'cfg_B.py'), str(root / 'work_B'), data, HALF, *phase)
    train(root, str(root / 'cfg_B.py'), str(root / 'work_B'), data, N, '--resume', *phase)
    return out


@pytest.mark.slow
def test_resume_is_exact_across_the_supervised_only_phase_boundary(phase_runs):
    full = read_records(phase_runs['A'])
    resumed = read_records(phase_runs['B'])
    assert [r['iter'] for r in resumed] == list(range(1, N + 1))
    for record in full:  # the phase really switches at the configured iteration
        semi = record['iter'] > SUP_ONLY
        assert ('unsup.loss_dsl' in record['logs']) == semi, record
        assert record['logs']['contrast.loss_ctr'] == 0.0 or semi
    for a, b in zip(full, resumed):
        assert a['samples'] == b['samples'] and a['logs'] == b['logs'], a['iter']
    final_a = torch.load(osp.join(phase_runs['A'], 'final_rank0.pth'), weights_only=True)
    final_b = torch.load(osp.join(phase_runs['B'], 'final_rank0.pth'), weights_only=True)
    different = [k for k in final_a if not torch.equal(final_a[k], final_b[k])]
    assert not different, different[:10]


@pytest.mark.slow
def test_the_resume_replays_data_and_restores_rng_and_seed(runs):
    log = runs['resumed_log']
    assert f'Advance dataloader {HALF} steps' in log
    # upstream replays the pipeline; the OneDL fork's loop skips it and the hook restores the states of the stop
    assert (f'RNGStateHook: restored the torch RNG states of iteration {HALF} and replayed' in log
            or f'RNGStateHook: restored the torch RNG states of iteration {HALF} and restored the numpy/random '
            'states of the stop' in log)
    assert 'trained with randomness.seed=0; using it instead of the configured 123' in log
    assert 'PrototypeInitHook: resumed at iter 4; prototypes come from the checkpoint' in log


@pytest.mark.slow
def test_second_half_losses_and_batches_are_identical(runs):
    full = read_records(runs['out']['A'])
    stopped_and_resumed = read_records(runs['out']['B'])
    assert [r['iter'] for r in full] == list(range(1, N + 1))
    assert [r['iter'] for r in stopped_and_resumed] == list(range(1, N + 1))
    for a, b in zip(full, stopped_and_resumed):
        assert a['samples'] == b['samples'], a['iter']
        assert a['logs'] == b['logs'], (a['iter'], a['logs'], b['logs'])  # exact float equality, every key


@pytest.mark.slow
def test_everything_is_active_around_the_stop(runs):
    """A resume that is exact only because CutMix, anchors or the bank were idle would prove nothing."""
    records = {r['iter']: r['logs'] for r in read_records(runs['out']['A'])}
    for it in (HALF, HALF + 1, N):
        assert records[it]['contrast.anchors'] > 0 and records[it]['contrast.loss_ctr'] > 0, records[it]
        assert records[it]['unsup.loss_dsl'] > 0
    assert records[HALF + 1]['contrast.bank_fill'] > records[1]['contrast.bank_fill']
    half = _load_checkpoint(osp.join(runs['work_B'], f'iter_{HALF}.pth'), map_location='cpu')
    final = torch.load(osp.join(runs['out']['A'], 'final_rank0.pth'), weights_only=True)
    assert bool(half['state_dict']['contrast_loss.prototypes_ready'])
    for key in ('contrast_loss.bank.queues', 'contrast_loss.bank.pointers', 'contrast_loss.prototypes'):
        assert not torch.equal(half['state_dict'][key], final[key]), f'{key} did not change after the stop'
    assert half['meta']['cfg'].count("prob=1.0") >= 1  # CutMix every iteration (semi_train_cfg.cutmix.prob)


@pytest.mark.slow
def test_final_state_optimizer_and_rng_are_identical(runs):
    final_a = torch.load(osp.join(runs['out']['A'], 'final_rank0.pth'), weights_only=True)
    final_b = torch.load(osp.join(runs['out']['B'], 'final_rank0.pth'), weights_only=True)
    assert final_a.keys() == final_b.keys()
    prefixes = ('student.', 'teacher.', 'contrast_loss.bank.queues', 'contrast_loss.bank.pointers',
                'contrast_loss.bank.fill', 'contrast_loss.prototypes')
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in final_a), prefix
    different = [k for k in final_a if not torch.equal(final_a[k], final_b[k])]
    assert not different, different[:10]
    ckpt_a = _load_checkpoint(osp.join(runs['work_A'], f'iter_{N}.pth'), map_location='cpu')
    ckpt_b = _load_checkpoint(osp.join(runs['work_B'], f'iter_{N}.pth'), map_location='cpu')
    for state_a, state_b in zip(ckpt_a['optimizer']['state'].values(), ckpt_b['optimizer']['state'].values()):
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert torch.equal(ckpt_a['rng_states'][0]['cpu'], ckpt_b['rng_states'][0]['cpu'])
    assert ckpt_a['message_hub']['runtime_info']['iter'] == ckpt_b['message_hub']['runtime_info']['iter']


@pytest.mark.slow
def test_control_without_rng_state_hook_diverges_at_the_first_resumed_iteration(runs):
    assert 'RNGStateHook' not in runs['control_log']  # B's checkpoint has RNG states; this config ignores them
    full = {r['iter']: r['logs'] for r in read_records(runs['out']['A'])}
    control = {r['iter']: r['logs'] for r in read_records(runs['out']['control'])}
    assert sorted(control) == list(range(HALF + 1, N + 1))
    assert control[HALF + 1]['loss'] != full[HALF + 1]['loss']


@pytest.mark.slow
def test_checkpoint_carries_everything_to_resume_and_evaluate(runs):
    ckpt = _load_checkpoint(osp.join(runs['work_B'], f'iter_{HALF}.pth'), map_location='cpu')
    assert {'meta', 'state_dict', 'optimizer', 'param_schedulers', 'message_hub', 'rng_states'} <= set(ckpt)
    state = ckpt['state_dict']
    assert any(k.startswith('student.') for k in state) and any(k.startswith('teacher.') for k in state)
    assert 'student.projector.proj.weight' in state  # the projector, trained and EMA'd with the rest
    for key in ('contrast_loss.prototypes', 'contrast_loss.prototypes_ready', 'contrast_loss.bank.queues',
                'contrast_loss.bank.pointers', 'contrast_loss.bank.fill'):
        assert key in state, key
    assert 'ESLSegmentor' in ckpt['meta']['cfg'] and ckpt['meta']['seed'] == 0 and ckpt['meta']['iter'] == HALF
    assert glob.glob(osp.join(runs['work_B'], 'last_checkpoint'))
