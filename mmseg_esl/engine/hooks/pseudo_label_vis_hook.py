"""Pseudo-label monitoring during training: the paper's Fig. 3 for the current batch, every N iterations.

The DSL and contrast statistics are logged as scalars by ``ESLSegmentor.loss`` (``unsup.dominant_classes``,
``unsup.multi_dominant``, ``unsup.teacher_conf``, ``unsup.pseudo_acc``, ``contrast.*``); they reach every
visualisation backend through mmengine's ``LoggerHook``. :class:`PseudoLabelVisHook` adds the picture: how many
dominant classes (Eq. 3-4) the teacher gives each pixel of the batch's unlabeled images, rendered as in
``tools/analysis/dominant_classes.py`` (shared code: :mod:`mmseg_esl.visualization.pseudo_labels`), sent with
``runner.visualizer.add_image`` to every backend of the config's visualizer: ``LocalVisBackend`` writes
``<work_dir>/<timestamp>/vis_data/vis_image/<name>_<iter>.png``, ``TensorboardVisBackend`` an image summary.
See ``configs/esl/esl_effnet-lite0_demo_tensorboard.py``.
"""
from __future__ import annotations

import os.path as osp
from typing import Optional

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from mmseg_esl.visualization.pseudo_labels import dominant_class_counts, render_dominant_classes

__all__ = ['PseudoLabelVisHook']

#: What the hook calls on the (unwrapped) model; ``ESLSegmentor`` has all of them.
_MODEL_ATTRIBUTES = ('unlabeled_teacher_probs', 'unsup_loss')


@HOOKS.register_module()
class PseudoLabelVisHook(Hook):
    """Every ``interval`` iterations, draws the teacher's dominant-class counts (Fig. 3) of the batch's unlabeled
    images and sends the figure to the visualizer's backends.

    After training iteration ``i`` (1-based) with ``i % interval == 0``, on the main process only (the visualizer
    writes there; no collective is involved):

    1. ``model.unlabeled_teacher_probs(data_batch, max_images)``: the teacher's ``p^t`` (Eq. 1) of the batch's
       first ``max_images`` unlabeled images as the model saw them (preprocessed, weak views before CutMix);
    2. the dominant-class count per pixel (Eq. 3-4,
       ``mmseg_esl.models.losses.dominant_classes``) with the model's η (``semi_train_cfg.loss_unsup.eta``) or
       ``eta``, cropped to each image's size (no padding);
    3. rows [image | overlay] with a legend of the pixel fractions
       (:func:`~mmseg_esl.visualization.pseudo_labels.render_dominant_classes`), then
       ``runner.visualizer.add_image(name, figure, step=i)``.

    It draws no random numbers (teacher in eval mode, deterministic preprocessing), so it does not change the
    training run or an exact resume, and costs one teacher forward of ``max_images`` images per ``interval``.

    Args:
        interval: Iterations between two figures (>= 1).
        max_images: Unlabeled images per figure (>= 1).
        eta: η of Eq. 4; None (default) reads ``model.unsup_loss.eta``.
        alpha: Opacity of the colours in the overlay, in [0, 1].
        scale: Integer enlargement of the panels; None: about 256 px per panel.
        name: Image name in the backends (a file name part: no ``/``).

    Raises:
        ValueError: On an out-of-range argument, naming it.
    """

    priority = 'LOW'  # after EMATeacherHook (NORMAL): the figure shows the teacher after this iteration's update

    def __init__(self, *, interval: int = 50, max_images: int = 4, eta: Optional[float] = None, alpha: float = 0.5,
                 scale: Optional[int] = None, name: str = 'dominant_classes') -> None:
        for key, value in (('interval', interval), ('max_images', max_images)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'PseudoLabelVisHook: {key} must be an int >= 1, got {key}={value!r}.')
        if eta is not None and not 0.0 < eta <= 1.0:
            raise ValueError(f'PseudoLabelVisHook: eta must be None (the model\'s) or in (0, 1], got eta={eta!r}.')
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f'PseudoLabelVisHook: alpha must be in [0, 1], got alpha={alpha!r}.')
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1):
            raise ValueError(f'PseudoLabelVisHook: scale must be None or an int >= 1, got scale={scale!r}.')
        if not name or '/' in name or '\\' in name:
            raise ValueError(f'PseudoLabelVisHook: name must be a non-empty file-name part, got name={name!r}.')
        self.interval = interval
        self.max_images = max_images
        self.eta = eta
        self.alpha = alpha
        self.scale = scale
        self.name = name

    @staticmethod
    def _unwrap(runner) -> torch.nn.Module:
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_train(self, runner) -> None:
        """Checks that the model is an ESL model (teacher, batch layout, DSL loss)."""
        model = self._unwrap(runner)
        missing = [a for a in _MODEL_ATTRIBUTES if not hasattr(model, a)]
        if missing:
            raise TypeError(f'PseudoLabelVisHook needs an ESLSegmentor (a teacher and a semi-supervised batch); '
                            f'{type(model).__name__} lacks {", ".join(missing)}. Remove the hook from custom_hooks '
                            'for this model.')

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        """Renders and sends the figure after every ``interval``-th iteration (main process only)."""
        if data_batch is None or not self.every_n_train_iters(runner, self.interval) or not is_main_process():
            return
        step = runner.iter + 1
        model = self._unwrap(runner)
        image = self.render(model, data_batch, title_prefix=f'iter {step}')
        if image is not None:
            runner.visualizer.add_image(self.name, image, step=step)

    @torch.no_grad()
    def render(self, model: torch.nn.Module, data_batch: dict, *, title_prefix: str = '') -> Optional[np.ndarray]:
        """The Fig. 3 figure of the batch's first ``max_images`` unlabeled images.

        Args:
            model: The unwrapped ESL model.
            data_batch: The batch as the data loader gave it (``inputs``: uint8 (3, H_i, W_i) tensors in the
                loader's channel order, BGR for mmseg's ``LoadImageFromFile``; ``data_samples``).
            title_prefix: Start of the figure title (e.g. the iteration).

        Returns:
            (H, W, 3) uint8 RGB figure, or None when the batch has no unlabeled image.
        """
        chosen, samples, probs = model.unlabeled_teacher_probs(data_batch, self.max_images)  # (U, C, H, W), Eq. 1
        if not chosen:
            return None
        eta = float(self.eta if self.eta is not None else model.unsup_loss.eta)
        counts = dominant_class_counts(probs, eta).cpu().numpy()  # Eq. 3-4
        images, maps, names = [], [], []
        for row, index in enumerate(chosen):
            height, width = samples[row].img_shape[:2]  # the preprocessor pads at the bottom and right
            images.append(self._rgb(data_batch['inputs'][index])[:height, :width])
            maps.append(counts[row, :height, :width])
            names.append(self._name(samples[row], index))
        title = f'{title_prefix}: teacher dominant classes (Eq. 3-4, \u03b7 = {eta:g})'.lstrip(': ')
        return render_dominant_classes(images, maps, eta=eta, names=names, title=title, alpha=self.alpha,
                                       scale=self.scale)

    @staticmethod
    def _rgb(raw: torch.Tensor) -> np.ndarray:
        """(3, H, W) BGR input as mmseg's ``LoadImageFromFile`` loads it -> (H, W, 3) uint8 RGB."""
        return raw.detach().cpu()[[2, 1, 0]].permute(1, 2, 0).clamp(0, 255).to(torch.uint8).numpy()

    @staticmethod
    def _name(sample, index: int) -> str:
        path: Optional[str] = sample.metainfo.get('img_path')
        return osp.splitext(osp.basename(path))[0] if path else f'sample {index}'

