"""tools/benchmarks/train_step.py: the five variants, the JSON it writes, the CPU RSS mode, AMP on CPU."""
import json
import math
import os.path as osp
import sys

import pytest
import torch
from conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'benchmarks'))
import train_step  # noqa: E402

TINY_ESL = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_esl_voc.py')
TINY_ARGS = ['--config', TINY_ESL, '--crop', '48', '--labeled', '2', '--unlabeled', '2', '--iters', '2',
             '--warmup', '1', '--device', 'cpu', '--threads', '1']
RESULT_FIELDS = {'step_ms_median', 'step_ms_iqr', 'anchors_mean', 'ratio_vs_sup', 'ratio_vs_floor', 'finite_losses'}


@pytest.fixture(scope='module')
def cfg():
    train_step.esl_imports()
    return train_step.load_config(TINY_ESL)


def run_main(tmp_path, extra):
    out = str(tmp_path / 'bench.json')
    md = str(tmp_path / 'bench.md')
    assert train_step.main(TINY_ARGS + extra + ['--json', out, '--md', md]) == 0
    with open(out) as f:
        return json.load(f), open(md).read()


def test_smoke_all_methods_with_components(tmp_path):
    report, table = run_main(tmp_path, ['--isolate', 'never', '--components', '--component-iters', '1'])
    meta = report['meta']
    for key in ('device', 'device_name', 'torch', 'mmseg', 'config', 'crop', 'labeled', 'unlabeled', 'iters', 'date'):
        assert key in meta, key
    assert (meta['crop'], meta['labeled'], meta['unlabeled'], meta['iters']) == (48, 2, 2, 2)
    assert set(report['results']) == set(train_step.METHODS)
    for method, by_amp in report['results'].items():
        res = by_amp['none']
        assert RESULT_FIELDS <= set(res), method
        assert 'peak_rss_gib' in res  # None in-process: the peak RSS needs a fresh process (see the RSS test)
        assert math.isfinite(res['ratio_vs_sup']) and math.isfinite(res['ratio_vs_floor']), method
        assert res['step_ms_median'] > 0 and res['finite_losses'], method
        assert len(res['step_ms']) == 2
    assert report['results']['sup']['none']['ratio_vs_sup'] == 1.0
    assert report['results']['floor']['none']['ratio_vs_floor'] == 1.0
    assert report['results']['esl']['none']['anchors_mean'] > 0
    for method in ('sup', 'mt-hard', 'mt-dsl', 'floor'):
        assert report['results'][method]['none']['anchors_mean'] == 0
    # The confident teacher puts most weak-view pixels above ζ, so unlabeled pixels are anchors too.
    assert report['results']['esl']['none']['confident_fraction'] >= 0.9
    assert set(report['components']) == set(train_step.COMPONENTS)
    for name, entry in report['components'].items():
        assert math.isfinite(entry['ms']) and math.isfinite(entry['pct_of_step']), name
        assert entry['ms'] >= 0 or name in ('prototype_update', 'contrast_other'), name  # differences of timers
    for label in train_step.METHOD_LABELS.values():
        assert label in table
    assert 'InfoNCE forward' in table


@pytest.mark.slow
def test_isolated_runs_report_peak_rss_and_bf16_autocast(tmp_path):
    """The CPU memory mode: every (method, amp) in its own process; bf16 via torch.autocast('cpu')."""
    report, _ = run_main(tmp_path, ['--methods', 'floor,esl', '--amp', 'none,bf16', '--amp-methods', 'esl',
                                    '--isolate', 'always'])
    assert report['meta']['isolated'] is True
    for method, amp in (('floor', 'none'), ('esl', 'none'), ('esl', 'bf16')):
        res = report['results'][method][amp]
        assert res['peak_rss_gib'] is not None and 0 < res['peak_rss_gib'] < 4, (method, amp)
        assert res['finite_losses'], (method, amp)
    assert 'bf16' not in report['results']['floor']
    assert report['results']['esl']['bf16']['anchors_mean'] > 0
    assert math.isfinite(report['results']['esl']['bf16']['ratio_vs_floor'] or 0.0)


def test_interleaved_timing_with_isolated_memory(tmp_path):
    report, _ = run_main(tmp_path, ['--methods', 'floor,esl', '--interleave', '--isolate', 'always'])
    assert report['meta']['interleaved'] is True
    for method in ('floor', 'esl'):
        res = report['results'][method]['none']
        assert res['peak_rss_gib'] is not None and res['peak_rss_gib'] > 0
        assert math.isfinite(res['ratio_vs_floor'])


def test_variants_differ_only_in_semi_train_cfg(cfg):
    semi = {m: train_step.semi_cfg_for(cfg, m) for m in ('mt-hard', 'mt-dsl', 'floor', 'esl')}
    assert [semi[m]['loss_unsup']['mode'] for m in semi] == ['hard', 'dsl', 'hard', 'dsl']
    assert semi['mt-hard']['loss_contrast'] is None and semi['mt-dsl']['loss_contrast'] is None
    assert semi['floor']['loss_contrast'] == semi['esl']['loss_contrast'] == cfg.model.semi_train_cfg.loss_contrast
    for m in semi:
        assert semi[m]['cutmix'] == semi['esl']['cutmix']
        assert semi[m]['loss_unsup']['loss_weight'] == cfg.model.semi_train_cfg.loss_unsup.loss_weight


def test_floor_runs_projectors_but_no_contrast(cfg):
    """(d): the real loss() with the contrastive steps replaced by a zero loss on z_s: projector in the graph, no
    bank."""
    args = train_step.parse_args(TINY_ARGS)
    run = train_step.Run(cfg, 'floor', 'none', args)
    model = run.model
    queues = model.contrast_loss.bank.queues.clone()
    prototypes = model.contrast_loss.prototypes.clone()
    losses = model.loss(run.inputs, run.samples)
    assert losses['contrast.loss_ctr'].item() == 0 and 'contrast.anchors' not in losses
    total, _ = model.parse_losses(losses)
    total.backward()
    assert all(p.grad is not None for p in model.student.projector.parameters())
    assert torch.equal(model.contrast_loss.bank.queues, queues)
    assert torch.equal(model.contrast_loss.prototypes, prototypes)
    for name in ('contrast_targets', 'loss_contrast', 'update_bank_and_prototypes'):
        assert getattr(type(model), name) is not getattr(model, name).__func__  # patched on the instance only


def test_steady_state_bank_is_full_and_prototypes_ready(cfg):
    args = train_step.parse_args(TINY_ARGS)
    run = train_step.Run(cfg, 'esl', 'none', args)
    loss_fn = run.model.contrast_loss
    assert bool(loss_fn.prototypes_ready)
    assert loss_fn.bank.fill_fraction().item() == 1.0
    log = run.step()
    assert log['contrast.bank_fill'] == 1.0 and log['contrast.anchors'] > 0


def test_refuses_fp16_on_cpu_and_non_esl_configs(capsys):
    with pytest.raises(SystemExit):
        train_step.parse_args(TINY_ARGS + ['--amp', 'fp16'])
    assert 'fp16 needs CUDA' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_step.parse_args(TINY_ARGS + ['--methods', 'esl,nope'])
    train_step.esl_imports()
    with pytest.raises(ValueError, match='ESLSegmentor'):
        train_step.load_config(osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_supervised_voc.py'))


def test_strip_options():
    argv = ['--config', 'c.py', '--methods', 'sup,esl', '--json=o.json', '--components', '--amp', 'none', '--iters',
            '3']
    assert train_step.strip_options(argv, ['--methods', '--json', '--amp']) == ['--config', 'c.py', '--components',
                                                                                '--iters', '3']
