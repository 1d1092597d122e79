"""Each fix in mmseg_esl.compat, with a check that it is needed (the upstream behaviour fails)."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

import mmseg_esl  # noqa: F401
from mmseg_esl.compat import (
    APPLIED,
    MMENGINE_LOADS_SAFELY,
    NEEDS_TORCH_LOAD_FIX,
    TORCH_LOAD_DEFAULTS_TO_WEIGHTS_ONLY,
    apply_compat_fixes,
    load_from_local_trusted,
)


@pytest.fixture
def mmengine_style_checkpoint(tmp_path):
    """A checkpoint holding what mmengine's runner saves besides tensors: HistoryBuffers, numpy values."""
    hub = MessageHub(name='compat_test')
    hub.update_scalar('train/loss', np.float64(0.5))
    hub.update_info('iter', 7)
    checkpoint = dict(
        meta=dict(iter=7, seed=np.int64(3)),
        state_dict={'w': torch.ones(2)},
        message_hub=hub.state_dict())
    path = tmp_path / 'iter_7.pth'
    torch.save(checkpoint, path)
    return str(path)


def test_upstream_torch_load_refuses_mmengine_checkpoints(mmengine_style_checkpoint):
    """What mmengine 0.10.7 does (torch.load with the default weights_only) fails on torch >= 2.6."""
    if not TORCH_LOAD_DEFAULTS_TO_WEIGHTS_ONLY:
        pytest.skip(f'torch {torch.__version__} still defaults to weights_only=False: the fix is inactive')
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        torch.load(mmengine_style_checkpoint, map_location='cpu')


def test_local_scheme_is_ours_exactly_where_mmengine_needs_it():
    """Upstream mmengine 0.10.7 on torch >= 2.6 gets our loader; the fork's own safe loader is left alone."""
    from mmengine.runner import checkpoint
    loader = CheckpointLoader._get_checkpoint_loader('/some/file.pth')
    assert NEEDS_TORCH_LOAD_FIX == (TORCH_LOAD_DEFAULTS_TO_WEIGHTS_ONLY and not MMENGINE_LOADS_SAFELY)
    if NEEDS_TORCH_LOAD_FIX:
        assert loader is load_from_local_trusted and 'torch_load' in APPLIED
    else:
        assert loader is checkpoint.load_from_local and 'torch_load' not in APPLIED
    apply_compat_fixes()  # again: nothing changes, nothing is said twice
    assert APPLIED.count('torch_load') == int(NEEDS_TORCH_LOAD_FIX)


def test_mmengine_loads_its_own_checkpoints(mmengine_style_checkpoint):
    checkpoint = _load_checkpoint(mmengine_style_checkpoint, map_location='cpu')
    assert checkpoint['meta']['iter'] == 7
    assert torch.equal(checkpoint['state_dict']['w'], torch.ones(2))
    buffer = checkpoint['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer) and buffer.current() == 0.5
    _load_checkpoint(mmengine_style_checkpoint, map_location='cpu')
    from mmseg_esl import compat
    assert compat._SAID == ([True] if NEEDS_TORCH_LOAD_FIX else [])  # said once, on the first load


def test_missing_file_says_which(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        _load_checkpoint(str(tmp_path / 'nope.pth'))


def test_remote_loader_keeps_full_unpickling():
    """http(s):// and open-mmlab:// go through torch.hub, which must still default to weights_only=False."""
    import inspect

    from torch.hub import load_state_dict_from_url
    assert inspect.signature(load_state_dict_from_url).parameters['weights_only'].default is False
