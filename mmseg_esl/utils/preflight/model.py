"""The model of a config, built without memory or weights, and what the checks read of it."""
from __future__ import annotations

import copy
import warnings
from typing import Any, Dict, List, Optional, Tuple

import torch
from mmengine.config import Config
from mmseg.registry import MODELS
from torch import nn

from ...checks import is_non_negative_number
from ...models.losses.pixel_part_contrast_loss import CONFIG_KEY as CONTRAST_KEY
from ...models.losses.pixel_part_contrast_loss import PixelPartContrastLoss
from ...models.segmentors.esl_segmentor import ESLSegmentor
from .errors import InputConfigError, _clean


def build_model_cheaply(model_cfg: dict) -> nn.Module:
    """Builds a model from its config without memory or weights, to run the constructor checks.

    Built on the ``meta`` device; a model whose constructor does not work there (e.g. one that calls
    ``.item()`` on a tensor) is built on the CPU. ``init_weights`` is not called, so no pretrained weights
    are read or downloaded. Call it inside the config's default scope (mmseg).

    Args:
        model_cfg: ``cfg.model``.

    Returns:
        The model (parameters on ``meta`` or the CPU).

    Raises:
        Exception: Whatever the constructors raise on the CPU (e.g. a ValueError naming a bad argument).
    """
    try:
        with torch.device('meta'), warnings.catch_warnings():
            warnings.simplefilter('ignore')  # they are emitted again by the runner's own build
            return MODELS.build(copy.deepcopy(model_cfg))
    except Exception:  # noqa: BLE001  (meta-specific failures; real errors reappear on the CPU below)
        pass
    return MODELS.build(copy.deepcopy(model_cfg))


def check_loss_weights(node: Any, key: str = 'model') -> List[str]:
    """Every ``loss_weight`` under ``node`` (any head, any loss) that is not a finite number >= 0, by config key.

    A negative weight turns a loss into a reward and mmengine sums it without a word, so the check covers mmseg's
    own losses too, not only ESL's λ1 and λ2.
    """
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, (list, tuple)) else ()
    for name, value in items:
        path = f'{key}.{name}'
        if name == 'loss_weight':
            weights = value if isinstance(value, (list, tuple)) else [value]
            if not all(is_non_negative_number(w) for w in weights):
                found.append(f'{path}={value!r}: a loss weight must be a finite number >= 0 (0 switches the term '
                             'off).')
        else:
            found += check_loss_weights(value, path)
    return found


def _build_model(cfg: Config) -> nn.Module:
    try:
        return build_model_cheaply(cfg.model)
    except (ValueError, TypeError, KeyError) as e:
        raise InputConfigError(f'The model config (model=...) is refused by its constructors:\n  {_clean(e)}\n'
                               'Fix the named key in the config or on the command line; the keys of the model '
                               'live under model. (e.g. --cfg-options model.semi_train_cfg.loss_unsup.eta=0.95).'
                               ) from e


def _segmentor_and_prefix(model: nn.Module) -> Tuple[nn.Module, str]:
    if isinstance(model, ESLSegmentor):
        return model.student, 'model.segmentor.'
    return model, 'model.'


def _heads(module: Optional[nn.Module], key: str) -> Dict[str, int]:
    if module is None:
        return {}
    if isinstance(module, nn.ModuleList):
        return {f'{key}.{i}.num_classes': head.num_classes for i, head in enumerate(module)}
    return {f'{key}.num_classes': module.num_classes}


def model_num_classes(model: nn.Module) -> Dict[str, int]:
    """Every ``num_classes`` of a model, by config key (decode head(s), auxiliary heads, prototypes)."""
    segmentor, prefix = _segmentor_and_prefix(model)
    found = _heads(getattr(segmentor, 'decode_head', None), prefix + 'decode_head')
    found.update(_heads(getattr(segmentor, 'auxiliary_head', None), prefix + 'auxiliary_head'))
    contrast = getattr(model, 'contrast_loss', None)
    if isinstance(contrast, PixelPartContrastLoss):
        found[f'model.{CONTRAST_KEY}.num_classes'] = contrast.num_classes
    return found


def _ignore_index(model: nn.Module) -> int:
    segmentor, _ = _segmentor_and_prefix(model)
    head = getattr(segmentor, 'decode_head', None)
    if isinstance(head, nn.ModuleList):
        head = head[-1]
    return int(getattr(head, 'ignore_index', 255))
