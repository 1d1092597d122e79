"""ESL end to end on CPU: train the tiny ESL config (full Eq. 11), log DSL and contrast statistics, evaluate with
mmseg's own tools, export a plain checkpoint that gives bit-identical logits."""
import glob
import json
import os.path as osp
import re
import sys

import mmseg
import pytest
import torch
from conftest import REPO_ROOT, run, tiny_data_options
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import _load_checkpoint, load_checkpoint
from mmseg.registry import MODELS

from mmseg_esl.testing import make_tiny_voc

ESL_CONFIG = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_esl_voc.py')
PLAIN_CONFIG = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_supervised_voc.py')
MMSEG_TOOLS = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools')
ITERS = 30


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Trains the tiny ESL config for 30 iterations (4 labeled + 12 unlabeled images)."""
    root = tmp_path_factory.mktemp('esl_e2e')
    data = str(root / 'data' / 'tiny_voc')  # the configs' default data_root, relative to the working dir
    make_tiny_voc(data, num_train=16, num_val=4, num_labeled=4, seed=3)
    work_dir = str(root / 'work')
    run([sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), ESL_CONFIG, '--work-dir', work_dir, '--cfg-options',
         *tiny_data_options(data, semi=True), f'train_cfg.max_iters={ITERS}', f'train_cfg.val_interval={ITERS}',
         f'default_hooks.checkpoint.interval={ITERS}', f'param_scheduler.0.end={ITERS}'], cwd=str(root))
    return dict(root=root, data=data, work_dir=work_dir, checkpoint=osp.join(work_dir, f'iter_{ITERS}.pth'))


def logged_iterations(work_dir):
    (scalars,) = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(scalars) as f:
        records = [json.loads(line) for line in f]
    return [r for r in records if 'loss' in r]


@pytest.mark.slow
def test_training_learns_and_logs_dsl_and_contrast_statistics(trained):
    records = logged_iterations(trained['work_dir'])
    assert [r['iter'] for r in records] == list(range(1, ITERS + 1))
    for r in records:
        assert r['unsup.loss_dsl'] > 0
        assert 1.0 <= r['unsup.dominant_classes'] <= 4.0 and 0.0 <= r['unsup.multi_dominant'] <= 1.0
        assert 0.0 < r['unsup.teacher_conf'] <= 1.0 and 0.0 <= r['unsup.pseudo_acc'] <= 1.0
        assert 0.0 <= r['contrast.bank_fill'] <= 1.0 and r['contrast.anchors'] >= 0
        assert -1.0 <= r['contrast.pos_cos'] <= 1.0 and -1.0 <= r['contrast.neg_cos'] <= 1.0
        # Eq. 11: L = L_CE + λ1·L_SCE + λ2·L_CTR (the weights are inside the logged losses).
        total = r['decode.loss_ce'] + r['unsup.loss_dsl'] + r['contrast.loss_ctr']
        assert r['loss'] == pytest.approx(total, rel=1e-3, abs=1e-4)
    assert records[0]['contrast.anchors'] == 0  # the bank is empty during the first loss (enqueue after it)
    for r in records[-5:]:  # a zero contrastive term is not a pass
        assert r['contrast.loss_ctr'] > 0 and r['contrast.anchors'] > 0, r
    assert records[-1]['contrast.bank_fill'] > records[0]['contrast.bank_fill']
    first = sum(r['loss'] for r in records[:5]) / 5
    last = sum(r['loss'] for r in records[-5:]) / 5
    assert last < first, f'the total loss did not decrease: {first:.4f} -> {last:.4f}'
    # λ2·L_CTR grows from 0 while the bank fills (more classes have anchors), so the total falls by less than
    # the supervised term does; that term must fall clearly.
    ce_first = sum(r['decode.loss_ce'] for r in records[:5]) / 5
    ce_last = sum(r['decode.loss_ce'] for r in records[-5:]) / 5
    assert ce_last < 0.9 * ce_first, f'L_CE did not decrease: {ce_first:.4f} -> {ce_last:.4f}'
    log = open(glob.glob(osp.join(trained['work_dir'], '*', '*.log'))[0]).read()
    assert re.search(r'PrototypeInitHook.*\d+(\.\d+)? ?s', log), 'the prototype initialisation time is not logged'


@pytest.mark.slow
def test_checkpoint_has_both_networks_and_they_differ(trained):
    state = _load_checkpoint(trained['checkpoint'], map_location='cpu')['state_dict']
    student = {k[len('student.'):]: v for k, v in state.items() if k.startswith('student.')}
    teacher = {k[len('teacher.'):]: v for k, v in state.items() if k.startswith('teacher.')}
    assert student.keys() == teacher.keys() and student
    assert 'projector.proj.weight' in student
    assert {'contrast_loss.prototypes', 'contrast_loss.prototypes_ready', 'contrast_loss.bank.queues',
            'contrast_loss.bank.pointers', 'contrast_loss.bank.fill'} <= set(state)
    assert bool(state['contrast_loss.prototypes_ready']) and state['contrast_loss.bank.fill'].sum() > 0
    assert any(not torch.equal(student[k], teacher[k]) for k in student if student[k].is_floating_point())


@pytest.mark.slow
def test_resume_restores_bank_and_prototypes_instead_of_reinitialising(trained, tmp_path):
    work_dir = str(tmp_path / 'resumed')
    proc = run([sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), ESL_CONFIG, '--work-dir', work_dir,
                '--resume', trained['checkpoint'], '--cfg-options', *tiny_data_options(trained['data'], semi=True),
                f'train_cfg.max_iters={ITERS + 2}', f'train_cfg.val_interval={ITERS + 2}',
                f'default_hooks.checkpoint.interval={ITERS + 2}', f'param_scheduler.0.end={ITERS + 2}'],
               cwd=str(trained['root']))
    assert f'PrototypeInitHook: resumed at iter {ITERS}; prototypes come from the checkpoint' in proc.stdout
    assert 'initialised by K-means' not in proc.stdout
    before = _load_checkpoint(trained['checkpoint'], map_location='cpu')['state_dict']
    records = logged_iterations(work_dir)
    assert [r['iter'] for r in records] == [ITERS + 1, ITERS + 2]
    # The bank came back with the checkpoint: the first resumed iteration already has anchors with positives.
    fill = before['contrast_loss.bank.fill'].sum().item() / before['contrast_loss.bank.queues'].shape[:2].numel()
    assert records[0]['contrast.bank_fill'] == pytest.approx(fill, abs=1e-4)
    assert records[0]['contrast.anchors'] > 0 and records[0]['contrast.loss_ctr'] > 0


@pytest.mark.slow
def test_mmseg_own_test_and_benchmark_on_an_esl_checkpoint(trained):
    cwd = str(trained['root'])
    tested = run([sys.executable, osp.join(MMSEG_TOOLS, 'test.py'), ESL_CONFIG, trained['checkpoint'], '--work-dir',
                  osp.join(cwd, 'test'), '--cfg-options', *tiny_data_options(trained['data'], semi=True)], cwd=cwd)
    assert re.search(r'mIoU: \d+\.\d+', tested.stdout), tested.stdout[-3000:]
    tta = run([sys.executable, osp.join(MMSEG_TOOLS, 'test.py'), ESL_CONFIG, trained['checkpoint'], '--tta',
               '--work-dir', osp.join(cwd, 'tta'), '--cfg-options', *tiny_data_options(trained['data'], semi=True)],
              cwd=cwd)
    assert re.search(r'mIoU: \d+\.\d+', tta.stdout), tta.stdout[-3000:]
    # benchmark.py takes no --cfg-options: it reads the config's data_root, data/tiny_voc under cwd.
    bench = run([sys.executable, osp.join(MMSEG_TOOLS, 'analysis_tools', 'benchmark.py'), ESL_CONFIG,
                 trained['checkpoint'], '--repeat-times', '1', '--work-dir', osp.join(cwd, 'bench')], cwd=cwd)
    assert 'Average fps of 1 evaluations' in bench.stdout, bench.stdout[-3000:]


@pytest.mark.slow
def test_exported_teacher_gives_bit_identical_logits(trained, tmp_path):
    out = str(tmp_path / 'teacher.pth')
    run([sys.executable, osp.join(REPO_ROOT, 'tools', 'export_checkpoint.py'), trained['checkpoint'], out],
        cwd=str(tmp_path))
    init_default_scope('mmseg')
    esl_cfg, plain_cfg = Config.fromfile(ESL_CONFIG), Config.fromfile(PLAIN_CONFIG)
    esl = MODELS.build(esl_cfg.model)
    load_checkpoint(esl, trained['checkpoint'], map_location='cpu', strict=True)
    plain = MODELS.build(plain_cfg.model)
    plain.load_state_dict(torch.load(out, map_location='cpu', weights_only=True)['state_dict'], strict=True)
    esl.eval()
    plain.eval()
    inputs = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(esl(inputs, mode='tensor'), plain(inputs, mode='tensor'))


def test_export_refuses_a_plain_checkpoint(tmp_path):
    torch.save(dict(state_dict={'backbone.w': torch.ones(1)}), tmp_path / 'plain.pth')
    proc = run([sys.executable, osp.join(REPO_ROOT, 'tools', 'export_checkpoint.py'), str(tmp_path / 'plain.pth'),
                str(tmp_path / 'out.pth')], cwd=str(tmp_path), check=False)
    assert proc.returncode != 0 and 'it is not an ESLSegmentor checkpoint' in proc.stdout
