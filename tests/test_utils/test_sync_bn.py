"""convert_sync_bn_cfg: SyncBN -> BN in config trees, in place, with one warning that names the config."""
import logging
import os.path as osp
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, clean_env
from mmengine.config import Config
from mmengine.logging import MMLogger

from mmseg_esl.utils import convert_sync_bn_cfg

HEADLINE = osp.join(REPO_ROOT, 'configs', 'esl', 'esl_r101_voc_1-8.py')


def norm_types(node):
    """All norm types (dicts whose key is norm_cfg) of a tree, in walk order."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'norm_cfg' and isinstance(value, dict):
                found.append(value.get('type'))
            found += norm_types(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            found += norm_types(value)
    return found


def test_nested_dicts_lists_and_tuples_are_converted_in_place():
    cfg = dict(
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        model=dict(backbone=dict(norm_cfg=dict(type='SyncBN', eps=1e-3)),
                   heads=[dict(norm_cfg=dict(type='MMSyncBN')), dict(norm_cfg=dict(type='GN', num_groups=8))],
                   pair=(dict(norm_cfg=dict(type='SyncBN')), 'text')),
        other=dict(type='SyncBNHook'))  # not a norm type: left alone
    inner = cfg['model']['backbone']['norm_cfg']
    assert convert_sync_bn_cfg(cfg, warn=False) == 4
    assert cfg['model']['backbone']['norm_cfg'] is inner and inner == dict(type='BN', eps=1e-3)
    assert cfg['norm_cfg'] == dict(type='BN', requires_grad=True)
    assert [h['norm_cfg']['type'] for h in cfg['model']['heads']] == ['BN', 'GN']
    assert cfg['model']['pair'][0]['norm_cfg']['type'] == 'BN'
    assert cfg['other'] == dict(type='SyncBNHook')
    assert convert_sync_bn_cfg(cfg, warn=False) == 0  # idempotent


def test_paper_config_has_no_syncbn_left_and_warns_once_naming_the_file():
    cfg = Config.fromfile(HEADLINE)
    before = norm_types(cfg._cfg_dict)
    assert 'SyncBN' in before  # the paper config uses SyncBN
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        changed = convert_sync_bn_cfg(cfg)
    finally:
        logger.removeHandler(handler)
    assert changed == before.count('SyncBN') >= 3  # backbone, decode head, top-level norm_cfg at least
    assert 'SyncBN' not in norm_types(cfg._cfg_dict)
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and 'esl_r101_voc_1-8.py' in warnings[0].getMessage()
    assert 'SyncBN' in warnings[0].getMessage() and 'BN' in warnings[0].getMessage()


def test_no_syncbn_means_no_warning_and_zero():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        assert convert_sync_bn_cfg(Config(dict(model=dict(norm_cfg=dict(type='BN'))))) == 0
    finally:
        logger.removeHandler(handler)
    assert not records


def test_rejects_other_types():
    with pytest.raises(TypeError, match='Config or a dict'):
        convert_sync_bn_cfg(['SyncBN'])


@pytest.mark.skipif(torch.cuda.is_available(), reason='the tools convert SyncBN only without CUDA')
def test_tools_convert_before_building(tmp_path):
    """tools/train.py and tools/test.py call the conversion when there is no GPU (checked on the loaded config)."""
    probe = tmp_path / 'probe.py'
    probe.write_text(
        'import runpy, sys\n'
        'from mmengine.runner import Runner\n'
        'def stop(cfg):\n'
        '    from mmseg_esl.utils.sync_bn import _convert\n'
        '    print("SYNCBN_LEFT", _convert(cfg._cfg_dict))\n'
        '    raise SystemExit(0)\n'
        'Runner.from_cfg = staticmethod(stop)\n'
        'import mmseg_esl.utils.preflight as preflight\n'  # no data here: skip the pre-flight checks
        'preflight.exit_on_input_error = lambda *args, **kwargs: None\n'
        'tool = sys.argv[1]\n'
        'sys.argv = sys.argv[1:]\n'
        'runpy.run_path(tool, run_name="__main__")\n')
    for tool, extra in (('train.py', []), ('test.py', ['no_checkpoint.pth'])):
        proc = subprocess.run([sys.executable, str(probe), osp.join(REPO_ROOT, 'tools', tool), HEADLINE, *extra,
                               '--work-dir', str(tmp_path / tool)],
                              cwd=str(tmp_path), env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert 'SYNCBN_LEFT 0' in proc.stdout, proc.stdout[-3000:]
        assert 'converted to BN' in proc.stdout
