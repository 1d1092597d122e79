"""Atomic checkpoint saves: a file named like a checkpoint is complete, or absent (issue 18)."""
import os

import mmengine.runner.runner as mmengine_runner
import pytest
import torch

import mmseg_esl  # noqa: F401  (installs the atomic save)
from mmseg_esl.engine import atomic_checkpoint
from mmseg_esl.engine.atomic_checkpoint import remove_partial_checkpoints, save_checkpoint_atomically


def test_mmengines_runner_saves_through_the_atomic_writer():
    assert mmengine_runner.save_checkpoint is save_checkpoint_atomically


def test_a_save_writes_the_checkpoint_and_no_temporary_file(tmp_path):
    path = str(tmp_path / 'iter_1.pth')
    save_checkpoint_atomically(dict(meta=dict(iter=1), w=torch.arange(3)), path)
    assert torch.equal(torch.load(path, weights_only=False)['w'], torch.arange(3))
    assert os.listdir(tmp_path) == ['iter_1.pth']


def test_a_save_that_fails_midway_leaves_the_previous_file_whole_and_no_temporary(tmp_path, monkeypatch):
    path = str(tmp_path / 'iter_1.pth')
    save_checkpoint_atomically(dict(w=torch.zeros(4)), path)

    def write_half_then_fail(obj, f):
        f.write(b'PK\x03\x04 half a zip')
        raise OSError('No space left on device')

    monkeypatch.setattr(atomic_checkpoint.torch, 'save', write_half_then_fail)
    with pytest.raises(OSError, match='No space left'):
        save_checkpoint_atomically(dict(w=torch.ones(4)), path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=False)['w'], torch.zeros(4))
    assert os.listdir(tmp_path) == ['iter_1.pth']


def test_remote_paths_go_to_mmengine_unchanged(monkeypatch):
    calls = []
    monkeypatch.setattr(atomic_checkpoint, '_mmengine_save', lambda *args, **kwargs: calls.append((args, kwargs)))
    save_checkpoint_atomically({}, 's3://bucket/iter_1.pth')
    assert calls == [(({}, 's3://bucket/iter_1.pth'), dict(file_client_args=None, backend_args=None))]


def test_temporary_files_of_killed_saves_are_removed(tmp_path):
    (tmp_path / '.iter_3.pth.abc123.tmp').write_bytes(b'half')
    (tmp_path / 'iter_2.pth').write_bytes(b'whole')
    assert remove_partial_checkpoints(str(tmp_path)) == [str(tmp_path / '.iter_3.pth.abc123.tmp')]
    assert os.listdir(tmp_path) == ['iter_2.pth']
