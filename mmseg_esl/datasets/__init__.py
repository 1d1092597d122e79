"""Data pieces for semi-supervised training: datasets, transforms and samplers."""
from . import samplers, transforms  # noqa: F401
from .folder_splits import FolderSplits, folder_ids, folder_splits
from .split_dataset import SplitSegDataset
from .splits import (
    SPLIT_FORMATS,
    SplitFileError,
    SplitFileNotFoundError,
    detect_split_format,
    draw_labeled,
    read_split,
    write_split,
)

__all__ = ['FolderSplits', 'SPLIT_FORMATS', 'SplitFileError', 'SplitFileNotFoundError', 'SplitSegDataset',
           'detect_split_format', 'draw_labeled', 'folder_ids', 'folder_splits', 'read_split', 'write_split']
