"""Engine components registered into mmseg's ``HOOKS`` and ``OPTIM_WRAPPER_CONSTRUCTORS`` registries."""
from . import hooks, optimizers  # noqa: F401
