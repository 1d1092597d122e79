"""The work dir of a run: checked to be writable before anything else runs."""
from __future__ import annotations

import os
import os.path as osp

from .errors import InputConfigError


def check_work_dir(work_dir: str) -> None:
    """Raises if ``work_dir`` cannot be created or written, before the (long) data scan and the runner.

    Nothing is created: the check walks up to the first existing folder and asks the OS whether it is writable
    (``os.access`` also reports read-only file systems).

    Raises:
        InputConfigError: A file is in the way, or the folder (or its first existing parent) is not writable.
    """
    path = osp.abspath(work_dir)
    existing = path
    while not osp.exists(existing):
        existing = osp.dirname(existing)
    fix = 'Pass another --work-dir (or work_dir in the config); nothing was written.'
    if not osp.isdir(existing):
        what = 'is a file' if existing == path else f'cannot be created: {existing} is a file'
        raise InputConfigError(f'The work dir {work_dir} {what}. {fix}')
    if not os.access(existing, os.W_OK | os.X_OK):
        where = '' if existing == path else f' (its first existing parent {existing} is not writable)'
        raise InputConfigError(f'The work dir {work_dir} cannot be written{where}: a read-only file system or '
                               f'missing permissions. {fix}')
