"""EMATeacherHook: drives the mean teacher of ESL (§3.4); the EMA maths live in ``mmseg_esl.models.utils.ema``.

Why not mmengine's ``EMAHook``: it keeps its average outside the model and swaps it in only to validate. ESL needs
the teacher during training (inside ``ESLSegmentor.loss()``) and in the model's state dict (resume,
``predict_on='teacher'``, ``tools/export_checkpoint.py``), so the teacher is a submodule and this hook updates it.
The schedule's choices (U2PL's and ours) are in the README, "Where the paper is silent".
"""
import logging
from typing import Tuple

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS
from torch import nn

from mmseg_esl.models.utils.ema import (
    BUFFER_POLICIES,
    average_buffers_,
    check_teacher_student,
    ema_decay,
    ema_update_,
    first_names,
)

__all__ = ['EMATeacherHook', 'check_teacher_student', 'ema_update_']


@HOOKS.register_module()
class EMATeacherHook(Hook):
    """A supervised-only phase, then ``teacher = d_i · teacher + (1 − d_i) · student`` after each iteration.

    With ``i = runner.iter`` in ``after_train_iter``, ``S = sup_only_iters``, ``F = S + copy_iters``::

        i <  S:   model.semi_supervised = False (no teacher pass, no unlabeled or contrastive term); d_i = 0
        i <  F:   semi-supervised; d_i = 0 (the teacher is the student)
        i >= F:   d_i = min(1 − 1 / (i − S + 1), decay)   (``ema_decay``; ``decay`` alone without warm-up)

    ``d_i`` depends on ``runner.iter`` only, so a resume continues it exactly, across the phase boundary too.
    U2PL's schedule is ``sup_only_iters = copy_iters = <one epoch>``; ours differs in that the teacher follows the
    student during the supervised phase (so validation scores a trained teacher).

    Teacher BN statistics (``buffers``): ``'ema'`` (default: the best final teacher on the demo's dev split,
    docs/benchmarks.md) averages them like the weights; ``'copy'`` takes the student's; ``'own'`` lets the teacher
    keep its own from its weak pass (``model.teacher_own_bn_stats``, U2PL-like). Under DDP with ``sync_buffers``
    the floating-point buffers are averaged over processes before each update. Priority ``'NORMAL'``: the update
    runs before ``CheckpointHook``.

    Args:
        decay: Weight kept by the teacher, in [0, 1] (0.99: U2PL's ``ema_decay``; the paper gives none).
        warmup: Use the warm-up above instead of ``decay``.
        buffers: ``'ema'``, ``'copy'`` or ``'own'``.
        interval: After the copy phase, update every ``interval`` iterations (the optimizer's
            ``accumulative_counts`` with gradient accumulation).
        sync_buffers: Under DDP, average floating-point buffers over processes before each update.
        sup_only_iters: Iterations ``S`` of the supervised-only phase.
        copy_iters: Further iterations during which the teacher is the student.
    """

    priority = 'NORMAL'

    def __init__(self, *, decay: float = 0.99, warmup: bool = True, buffers: str = 'ema', interval: int = 1,
                 sync_buffers: bool = True, sup_only_iters: int = 0, copy_iters: int = 0) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay <= 1.0:
            raise ValueError(f'EMATeacherHook: decay must be a number in [0, 1], got decay={decay!r}')
        for name, value in (('warmup', warmup), ('sync_buffers', sync_buffers)):
            if not isinstance(value, bool):
                raise ValueError(f'EMATeacherHook: {name} must be a bool, got {name}={value!r}')
        if buffers not in BUFFER_POLICIES:
            raise ValueError(f'EMATeacherHook: buffers must be one of {BUFFER_POLICIES}, got buffers={buffers!r}')
        for name, value, low in (('interval', interval, 1), ('sup_only_iters', sup_only_iters, 0),
                                 ('copy_iters', copy_iters, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f'EMATeacherHook: {name} must be an int >= {low}, got {name}={value!r}')
        self.decay, self.warmup, self.buffers = float(decay), warmup, buffers
        self.interval, self.sync_buffers = interval, sync_buffers
        self.sup_only_iters, self.copy_iters = sup_only_iters, copy_iters

    def decay_at(self, iteration: int) -> float:
        """``d_i`` of the update after iteration ``iteration`` (``runner.iter`` in ``after_train_iter``)."""
        return ema_decay(iteration, decay=self.decay, warmup=self.warmup, sup_only_iters=self.sup_only_iters,
                         copy_iters=self.copy_iters)

    @staticmethod
    def _model(runner) -> nn.Module:
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def _student_teacher(self, runner) -> Tuple[nn.Module, nn.Module]:
        model = self._model(runner)
        student, teacher = getattr(model, 'student', None), getattr(model, 'teacher', None)
        if not isinstance(student, nn.Module) or not isinstance(teacher, nn.Module):
            raise TypeError(f'EMATeacherHook needs a model with `student` and `teacher` nn.Module attributes; '
                            f'{type(model).__name__} has student={type(student).__name__}, '
                            f'teacher={type(teacher).__name__}.')
        return student, teacher

    def before_train(self, runner) -> None:
        """Checks the pair and the model's switches; on a fresh run (``runner.iter == 0``) teacher := student."""
        student, teacher = self._student_teacher(runner)
        check_teacher_student(teacher, student)
        model = self._model(runner)
        needs = []
        if self.sup_only_iters and not hasattr(model, 'semi_supervised'):
            needs.append(('semi_supervised', f'sup_only_iters={self.sup_only_iters}'))
        if self.buffers == 'own' and not hasattr(model, 'teacher_own_bn_stats'):
            needs.append(('teacher_own_bn_stats', "buffers='own'"))
        if needs:
            raise TypeError(f'EMATeacherHook({", ".join(r for _, r in needs)}) needs a model with the switch(es) '
                            f'{", ".join(repr(n) for n, _ in needs)} (ESLSegmentor has them); '
                            f"{type(model).__name__} has not. Use buffers='copy' and sup_only_iters=0 with it.")
        trainable = [n for n, p in teacher.named_parameters() if p.requires_grad]
        if trainable:
            print_log(f'EMATeacherHook: teacher parameters require grad ({first_names(trainable)}); the teacher '
                      'should be frozen and left out of the optimizer, it is updated by EMA only.',
                      logger='current', level=logging.WARNING)
        if runner.iter == 0:
            ema_update_(teacher, student, 0.0)
        else:
            print_log(f'EMATeacherHook: resumed at iter {runner.iter}; keeping the teacher from the checkpoint.',
                      logger='current')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Sets the model's phase switches from ``runner.iter``; keeps the teacher in eval mode."""
        _, teacher = self._student_teacher(runner)
        teacher.eval()
        model = self._model(runner)
        if hasattr(model, 'semi_supervised'):
            model.semi_supervised = runner.iter >= self.sup_only_iters
        if hasattr(model, 'teacher_own_bn_stats'):
            model.teacher_own_bn_stats = self.buffers == 'own'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """``teacher = d_i * teacher + (1 - d_i) * student`` when due (every iteration while ``d_i = 0``)."""
        copying = runner.iter < self.sup_only_iters + self.copy_iters
        if not copying and not self.every_n_train_iters(runner, self.interval):
            return
        student, teacher = self._student_teacher(runner)
        if self.sync_buffers:
            average_buffers_(student)
            if self.buffers == 'own':
                average_buffers_(teacher)
        ema_update_(teacher, student, self.decay_at(runner.iter), self.buffers)
