"""setup_cpu_distributed: a gloo process group and a CPU DDP wrapper config when CUDA is unavailable."""
import pytest
import torch
import torch.distributed as torch_dist
from conftest import TINY_CONFIG
from mmengine.config import Config

from mmseg_esl.utils import load_tool_config, setup_cpu_distributed

CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only path; CUDA is present')


@CPU_ONLY
def test_no_launcher_changes_nothing():
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    assert setup_cpu_distributed(cfg, 'none') is False
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg


@CPU_ONLY
def test_slurm_on_cpu_is_refused_with_a_fix():
    with pytest.raises(RuntimeError, match='use --launcher pytorch with torchrun'):
        setup_cpu_distributed(Config(), 'slurm')


@CPU_ONLY
def test_missing_torchrun_variables_are_named(monkeypatch):
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match='missing: RANK, .*WORLD_SIZE, MASTER_ADDR, MASTER_PORT'):
        setup_cpu_distributed(Config(), 'pytorch')


@CPU_ONLY
def test_single_process_group_and_wrapper(monkeypatch):
    env = dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT='29517')
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl')), find_unused_parameters=True))
    try:
        assert setup_cpu_distributed(cfg, 'pytorch') is True
        assert torch_dist.is_initialized() and torch_dist.get_backend() == 'gloo'
        assert cfg.env_cfg.dist_cfg.backend == 'gloo'
        assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                                             find_unused_parameters=True, device_ids=None)
        # A user's own wrapper config is kept; only the CUDA device ids are dropped.
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=[0], static_graph=True)
        setup_cpu_distributed(cfg, 'pytorch')
        assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel', device_ids=None, static_graph=True)
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def test_load_tool_config_resolves_work_dir_like_mmseg(tmp_path):
    cfg = load_tool_config(TINY_CONFIG, launcher='none', cfg_options={'train_cfg.max_iters': 7})
    assert cfg.launcher == 'none' and cfg.train_cfg.max_iters == 7
    assert cfg.work_dir == './work_dirs/tiny_supervised_voc'
    assert load_tool_config(TINY_CONFIG, launcher='pytorch', work_dir=str(tmp_path)).work_dir == str(tmp_path)
