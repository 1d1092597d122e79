"""Utilities shared by tools and components."""
from .launch import load_tool_config, setup_cpu_distributed

__all__ = ['load_tool_config', 'setup_cpu_distributed']
