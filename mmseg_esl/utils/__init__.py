"""Utilities shared by tools and components."""
from .launch import load_tool_config, setup_cpu_distributed
from .preflight import (
    CheckpointMismatchError,
    DataFileError,
    ESLInputError,
    InputConfigError,
    check_test_checkpoint,
    check_training_inputs,
)
from .sync_bn import convert_sync_bn_cfg

__all__ = ['CheckpointMismatchError', 'DataFileError', 'ESLInputError', 'InputConfigError', 'check_test_checkpoint',
           'check_training_inputs', 'convert_sync_bn_cfg', 'load_tool_config', 'setup_cpu_distributed']
