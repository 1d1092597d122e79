"""Engine components registered into mmseg's ``HOOKS`` registry."""
from . import hooks  # noqa: F401
