"""Builds the optimizer over the student only: the ESL teacher is updated by EMA, never by the optimizer."""
from __future__ import annotations

from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class StudentOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor applied to ``model.student``.

    mmengine's default constructor puts every parameter into the optimizer, including ones with
    ``requires_grad=False``; for a teacher/student model that would give the teacher optimizer state (and
    weight decay would touch it if a gradient ever appeared). ``paramwise_cfg`` works as usual, with names
    relative to the student (``custom_keys={'decode_head': dict(lr_mult=10.)}``).

    Use it with ``optim_wrapper = dict(type='OptimWrapper', optimizer=..., constructor=
    'StudentOptimWrapperConstructor')``.
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if is_model_wrapper(model):
            model = model.module
        student = getattr(model, 'student', None)
        if not isinstance(student, nn.Module):
            raise TypeError(f'StudentOptimWrapperConstructor needs a model with a `student` module (e.g. '
                            f'ESLSegmentor), got {type(model).__name__}; remove optim_wrapper.constructor.')
        return super().__call__(student)
