"""tools/benchmarks/prototype_init.py: PrototypeInitHook's real machinery timed on synthetic labeled images."""
import json
import math
import os.path as osp
import sys

import pytest
import torch
from conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'benchmarks'))
import prototype_init  # noqa: E402

TINY_ESL = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_esl_voc.py')
BASE = ['--config', TINY_ESL, '--images', '6', '--size', '48', '--batch-size', '4', '--device', 'cpu', '--n-init', '1',
        '--threads', '1']


@pytest.mark.parametrize('feature_only', [False, True])
def test_smoke(tmp_path, feature_only):
    out = str(tmp_path / 'init.json')
    md = str(tmp_path / 'init.md')
    extra = ['--feature-only', '--feat-stride', '8'] if feature_only else []
    assert prototype_init.main(BASE + extra + ['--json', out, '--md', md]) == 0
    with open(out) as f:
        result = json.load(f)
    assert result['meta']['images'] == 6 and result['meta']['feature_only'] is feature_only
    for key in ('total_s', 'total_without_data_s', 'per_image_s', 'peak_rss_growth_gib'):
        assert math.isfinite(result[key]) and result[key] >= 0, key
    assert result['peak_gpu_mem_gib'] is None
    assert result['prototypes_shape'] == [4, 5, 64]  # the tiny config: C = 4, K = 5, L' = 64
    stages = result['breakdown_s']
    assert 'kmeans' in stages and 'reservoir_add' in stages and 'preprocess' in stages
    assert ('random_features' if feature_only else 'teacher_forward') in stages
    assert stages['kmeans'] > 0
    assert abs(sum(stages.values()) - result['total_s']) < 1e-6
    assert result['meta']['hook']['n_init'] == 1 and result['meta']['hook']['max_pixels_per_class'] == 2000
    if feature_only:
        assert result['meta']['feat_shape'] == [64, 6, 6]
    assert result['meets_2min_target'] is None  # only a run over 1464 images can tell
    assert 'kmeans' in open(md).read()


def test_random_encoder_shapes_and_channel_check():
    encode = prototype_init.random_encoder(-1, 16, 8)
    feats = encode(torch.zeros(2, 3, 65, 64))
    assert len(feats) == 1 and feats[-1].shape == (2, 16, 9, 8) and (feats[-1] >= 0).all()
    assert prototype_init.random_encoder(3, 16, 8)(torch.zeros(1, 3, 16, 16))[3].shape == (1, 16, 2, 2)
    args = prototype_init.parse_args(BASE + ['--feature-only', '--feat-channels', '32'])
    with pytest.raises(ValueError, match='feat_channels'):
        prototype_init.run(args, [])
