"""Utilities shared by tools and components."""
from .launch import load_tool_config, setup_cpu_distributed
from .sync_bn import convert_sync_bn_cfg

__all__ = ['convert_sync_bn_cfg', 'load_tool_config', 'setup_cpu_distributed']
