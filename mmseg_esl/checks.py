"""Argument checks shared by the constructors: one rule, one message.

Integers are ``numbers.Integral`` (so numpy integers from a config or a sweep pass) and never ``bool``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any


def is_positive_int(value: Any) -> bool:
    """Whether ``value`` is an integer >= 1 (Python or numpy, not bool)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= 1


def positive_int(name: str, value: Any, *, owner: str = '') -> int:
    """``int(value)`` if :func:`is_positive_int`, else a ValueError naming the argument and the value.

    Args:
        name: The argument (or config key) name.
        value: Its value.
        owner: The class or function it belongs to, prefixed to the message (e.g. ``'ProjectorHead'``).

    Raises:
        ValueError: ``"<owner>: <name> must be a positive integer (an integer >= 1), got <name>=<value>."``
    """
    if not is_positive_int(value):
        prefix = f'{owner}: ' if owner else ''
        raise ValueError(f'{prefix}{name} must be a positive integer (an integer >= 1), got {name}={value!r}.')
    return int(value)


def is_non_negative_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number >= 0 (Python or numpy, not bool): e.g. a loss weight."""
    return (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
            and value >= 0)
