"""The errors of the pre-flight checks and how their messages list problems."""
from __future__ import annotations

import re
from typing import Optional, Sequence

#: How many problems an error lists (the rest is counted).
MAX_LISTED = 10
#: Prefix mmengine's registry puts before a constructor's message (``class `X` in module: ``), removed in ours.
_REGISTRY_PREFIX = re.compile(r'class `\w+` in [\w./\\-]+(?: py)?: ')


class ESLInputError(ValueError):
    """Bad input (config, data files, checkpoint) found before training or testing; the message says the fix."""


class InputConfigError(ESLInputError):
    """The config cannot work: a constructor refuses an argument, a dataset cannot be built, values disagree."""


class DataFileError(ESLInputError):
    """Images or label maps that cannot be read, or that do not fit each other or the classes."""


class CheckpointMismatchError(ESLInputError):
    """The checkpoint's tensors do not fit the model of the config."""


def _listed(problems: Sequence[str], total: Optional[int] = None) -> str:
    total = len(problems) if total is None else total
    lines = '\n'.join(f'  - {p}' for p in problems[:MAX_LISTED])
    more = f'\n  ... and {total - min(len(problems), MAX_LISTED)} more' if total > MAX_LISTED else ''
    return lines + more


def _clean(error: BaseException) -> str:
    """The message of a constructor error without mmengine's ``class `X` in module:`` prefixes."""
    return _REGISTRY_PREFIX.sub('', str(error)).strip()


def _reader_error(error: BaseException) -> str:
    """A reader's exception on one line, shortened (OpenCV's span several lines)."""
    return f'{type(error).__name__}: {" ".join(str(error).split())[:160]}'
