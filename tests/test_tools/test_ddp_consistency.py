"""DDP consistency: ``tools/dist_train.sh`` with 2 CPU processes (gloo) on the tiny ESL config.

The ranks must see different labeled and unlabeled images, yet end with the same student, teacher (BatchNorm
buffers included: the tiny ResNet-18 has plain BN on CPU), memory bank (queues, pointers, fill) and prototypes.
A control run with ``EMATeacherHook(sync_buffers=False)`` shows why the hook averages BN buffers: there the
ranks' teachers differ in exactly those buffers.
"""
import os.path as osp

import pytest
import torch
from conftest import REPO_ROOT, clean_env, free_port, run, tiny_data_options
from record_train_hook import read_records, write_recorded_config

from mmseg_esl.testing import make_tiny_voc

TINY_ESL = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_esl_voc.py')
TESTS_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
ITERS = 4


def dist_train(root, config, work_dir, data, *extra):
    env = clean_env({'PORT': str(free_port()), 'PYTHONPATH': REPO_ROOT + ':' + TESTS_DIR})
    return run(['bash', osp.join(REPO_ROOT, 'tools', 'dist_train.sh'), config, '2', '--work-dir', work_dir,
                '--cfg-options', *tiny_data_options(data, semi=True), f'train_cfg.max_iters={ITERS}',
                f'train_cfg.val_interval={ITERS}', f'default_hooks.checkpoint.interval={ITERS}',
                f'param_scheduler.0.end={ITERS}', *extra], cwd=str(root), env=env, timeout=900)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('ddp_consistency')
    data = str(root / 'data')
    # 2 labeled + 6 unlabeled: 3 iterations per epoch on 2 processes, so 4 iterations cross an epoch.
    make_tiny_voc(data, num_train=8, num_val=2, num_labeled=2, seed=7)
    out = dict(synced=str(root / 'rec_synced'), control=str(root / 'rec_control'))
    write_recorded_config(str(root / 'cfg.py'), TINY_ESL, out['synced'])
    write_recorded_config(str(root / 'cfg_control.py'), TINY_ESL, out['control'])
    log = dist_train(root, str(root / 'cfg.py'), str(root / 'work'), data).stdout
    dist_train(root, str(root / 'cfg_control.py'), str(root / 'work_control'), data,
               'custom_hooks.0.sync_buffers=False')
    return dict(out=out, log=log)


def final_states(out_dir):
    return [torch.load(osp.join(out_dir, f'final_rank{r}.pth'), weights_only=True) for r in (0, 1)]


@pytest.mark.slow
def test_ranks_saw_different_labeled_and_unlabeled_images(runs):
    assert 'Distributed training: True' in runs['log']
    rank0, rank1 = (read_records(runs['out']['synced'], rank) for rank in (0, 1))
    assert [r['iter'] for r in rank0] == [r['iter'] for r in rank1] == list(range(1, ITERS + 1))
    for a, b in zip(rank0, rank1):
        # Batch layout per rank: [1 labeled | 1 unlabeled | 1 CutMix partner].
        assert a['samples'][0] != b['samples'][0], a['iter']
        assert set(a['samples'][1:2]).isdisjoint(b['samples'][1:2]), a['iter']
    seen_unlabeled = [{r['samples'][1] for r in records} for records in (rank0, rank1)]
    assert seen_unlabeled[0] != seen_unlabeled[1]


@pytest.mark.slow
def test_contrastive_state_was_active(runs):
    records = read_records(runs['out']['synced'], 0)
    assert records[-1]['logs']['contrast.anchors'] > 0 and records[-1]['logs']['contrast.loss_ctr'] > 0
    assert records[-1]['logs']['contrast.bank_fill'] > records[0]['logs']['contrast.bank_fill']


@pytest.mark.slow
def test_teacher_student_bank_pointers_prototypes_identical_on_both_ranks(runs):
    state0, state1 = final_states(runs['out']['synced'])
    assert state0.keys() == state1.keys()
    for key in ('contrast_loss.bank.queues', 'contrast_loss.bank.pointers', 'contrast_loss.bank.fill',
                'contrast_loss.prototypes'):
        assert key in state0, key
    assert any(k.startswith('teacher.backbone.') and k.endswith('running_mean') for k in state0)  # plain BN
    assert state0['contrast_loss.bank.fill'].sum() > 0 and bool(state0['contrast_loss.prototypes_ready'])
    different = [k for k in state0 if not torch.equal(state0[k], state1[k])]
    assert not different, different[:10]


@pytest.mark.slow
def test_without_buffer_sync_the_teachers_bn_statistics_differ(runs):
    state0, state1 = final_states(runs['out']['control'])
    different = [k for k in state0 if not torch.equal(state0[k], state1[k])]
    assert any(k.startswith('teacher.') and k.endswith(('running_mean', 'running_var')) for k in different)
    # Parameters, bank and prototypes agree even then (DDP gradients, collectives of the contrastive loss).
    assert not [k for k in different if not k.endswith(('running_mean', 'running_var'))], different[:10]
