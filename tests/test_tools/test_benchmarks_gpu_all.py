"""tools/benchmarks/gpu_all.sh, rehearsed at tiny scale on the CPU: both steps run and write their outputs."""
import json
import os.path as osp

import pytest
from conftest import REPO_ROOT, clean_env, run

SCRIPT = osp.join(REPO_ROOT, 'tools', 'benchmarks', 'gpu_all.sh')


def test_script_is_valid_bash():
    run(['bash', '-n', SCRIPT], cwd=REPO_ROOT)


@pytest.mark.slow
def test_rehearsal_on_cpu(tmp_path):
    out = str(tmp_path / 'bench')
    env = clean_env(dict(BENCH_DEVICE='cpu', BENCH_AMP='none', BENCH_CROP='48', BENCH_LABELED='2',
                         BENCH_UNLABELED='2', BENCH_ITERS='2', BENCH_WARMUP='1', BENCH_IMAGES='4', BENCH_SIZE='48'))
    proc = run(['bash', SCRIPT, osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_esl_voc.py'), out], cwd=REPO_ROOT,
               env=env, timeout=900)
    assert '[gpu_all] done' in proc.stdout
    with open(osp.join(out, 'train_step.json')) as f:
        report = json.load(f)
    assert set(report['results']) == {'sup', 'mt-hard', 'mt-dsl', 'floor', 'esl'}
    assert report['results']['esl']['none']['anchors_mean'] > 0 and report['components']
    with open(osp.join(out, 'prototype_init.json')) as f:
        assert json.load(f)['meta']['images'] == 4
    for name in ('env.txt', 'train_step.md', 'prototype_init.md', 'train_step.log'):
        assert osp.isfile(osp.join(out, name)), name


def test_missing_config_falls_back_to_the_builtin_r101():
    text = open(SCRIPT).read()
    assert 'CONFIG=builtin:r101-voc' in text and 'configs/esl/esl_r101_voc_1-8.py' in text
