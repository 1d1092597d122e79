"""The package imports, mirrors mmseg's layout, and its configs name it in ``custom_imports``."""
import glob
import importlib
import os.path as osp

import pytest
from conftest import REPO_ROOT
from mmengine.config import Config


def test_import_applies_everything_once():
    import mmcv.ops  # noqa: F401  (full mmcv with compiled ops, not mmcv-lite)
    import mmseg.models  # noqa: F401

    import mmseg_esl
    assert mmseg_esl.__version__
    mmseg_esl.apply_compat_fixes()  # idempotent


@pytest.mark.parametrize('name', [
    'mmseg_esl.models.segmentors', 'mmseg_esl.models.decode_heads', 'mmseg_esl.models.losses',
    'mmseg_esl.models.backbones', 'mmseg_esl.models.utils', 'mmseg_esl.engine.hooks',
    'mmseg_esl.datasets.transforms', 'mmseg_esl.datasets.samplers', 'mmseg_esl.utils', 'mmseg_esl.testing'])
def test_skeleton_mirrors_mmseg(name):
    assert importlib.import_module(name).__doc__


ESL_CONFIGS = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', 'esl', '*.py')))


def test_there_are_esl_configs():
    assert ESL_CONFIGS


@pytest.mark.parametrize('path', ESL_CONFIGS, ids=osp.basename)
def test_every_esl_config_imports_the_plugin(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(imports=['mmseg_esl'], allow_failed_imports=False), (
        f'{path} must carry custom_imports=dict(imports=["mmseg_esl"], allow_failed_imports=False) so that '
        "mmseg's own tools load the plugin.")
