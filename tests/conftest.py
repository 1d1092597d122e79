"""Shared fixtures: the repository root, a tiny generated dataset, and a clean subprocess runner."""
from __future__ import annotations

import os
import os.path as osp
import socket
import subprocess
import sys
from typing import Dict, List, Optional

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_CONFIG = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_supervised_voc.py')

# Variables that would hide the torch.load fix of mmseg_esl.compat: the tools must work without them.
_FORBIDDEN_ENV = ('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', 'TORCH_FORCE_WEIGHTS_ONLY_LOAD')


def clean_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The current environment without the torch.load override variables, with this tree importable."""
    env = {k: v for k, v in os.environ.items() if k not in _FORBIDDEN_ENV}
    env['PYTHONPATH'] = REPO_ROOT + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    env['PYTHONUNBUFFERED'] = '1'
    env.update(extra or {})
    return env


def run(cmd: List[str], *, cwd: str, timeout: float = 600, env: Optional[Dict[str, str]] = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """Runs ``cmd`` and returns its result; on an unexpected exit code fails with the output's tail."""
    proc = subprocess.run(cmd, cwd=cwd, env=env or clean_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f'{" ".join(cmd)} exited with {proc.returncode}:\n{proc.stdout[-6000:]}')
    return proc


def tiny_data_options(data_root: str, *, semi: bool = False) -> List[str]:
    """``--cfg-options`` that point every dataloader of a tiny config at ``data_root``.

    With ``semi=True`` the training set is the ``[labeled, unlabeled]`` ConcatDataset of the ESL configs, and
    ``custom_hooks[1]`` their ``PrototypeInitHook`` with its labeled-set dataloader.
    """
    train = ([f'train_dataloader.dataset.datasets.{i}.data_root={data_root}' for i in (0, 1)]
             + [f'custom_hooks.1.dataloader.dataset.data_root={data_root}'] if semi
             else [f'train_dataloader.dataset.data_root={data_root}'])
    return train + [f'{split}_dataloader.dataset.data_root={data_root}' for split in ('val', 'test')]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a test's process group (torchrun's PORT, tcp:// init)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='session')
def tiny_voc(tmp_path_factory) -> str:
    """Root of a tiny VOC-layout dataset generated once per test session."""
    from mmseg_esl.testing import make_tiny_voc
    root = str(tmp_path_factory.mktemp('tiny_voc'))
    make_tiny_voc(root, num_train=8, num_val=4, seed=0)
    return root


@pytest.fixture
def python() -> str:
    return sys.executable
