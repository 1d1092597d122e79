"""EMA teacher: the teacher G^t follows an exponential moving average of the student G^s (ESL §3.4).

Convention, in one sentence: ``decay`` is the weight kept by the *teacher*, i.e.
``teacher = decay * teacher + (1 - decay) * student`` (timm's convention; mmdet's ``momentum`` is ``1 - decay``).

The paper says only that "G^t is updated via an exponential moving average (EMA) scheme from G^s" and gives no
value for the teacher decay. Its θ = 0.99 (Eq. 12) is the momentum of the *prototype* update, a separate setting
that lives with the contrastive loss. The default ``decay=0.99`` here is U2PL's ``ema_decay``
(``cfg['net']['ema_decay']`` in its configs; ESL's reported settings match U2PL's), as is the warm-up
``min(1 - 1 / (i + 1), ema_decay)``.

Why not mmengine's ``EMAHook``: it keeps its averaged model *outside* the model (an ``ExponentialMovingAverage``
copy saved as ``checkpoint['ema_state_dict']``) and swaps its weights in only for validation and testing. ESL
needs the teacher *during training*, inside ``ESLSegmentor.loss()``, and as part of the model's own state dict
(so that resume, ``predict_on='teacher'`` and ``tools/export_checkpoint.py`` see it); so the teacher is a
submodule of the model and this hook only updates it.
"""
import logging
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.dist import all_reduce_params, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS
from torch import nn

BUFFER_POLICIES = ('copy', 'ema', 'own')
_MAX_LISTED = 5  # how many mismatching names an error message lists


def _first(names: List[str]) -> str:
    """The first few names of a sorted list, for error messages."""
    names = sorted(names)
    more = f' (+{len(names) - _MAX_LISTED} more)' if len(names) > _MAX_LISTED else ''
    return ', '.join(names[:_MAX_LISTED]) + more


def _pair_by_name(kind: str, teacher: Dict[str, torch.Tensor],
                  student: Dict[str, torch.Tensor]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Pairs teacher and student tensors by name; raises ``ValueError`` on any name, shape or sharing mismatch.

    Args:
        kind: ``'parameters'`` or ``'buffers'``, for the error message.
        teacher: The teacher's tensors by name.
        student: The student's tensors by name.

    Returns:
        ``(teacher_tensor, student_tensor)`` pairs, in the teacher's order.
    """
    only_teacher = [n for n in teacher if n not in student]
    only_student = [n for n in student if n not in teacher]
    if only_teacher or only_student:
        raise ValueError(
            f'EMA teacher/student {kind} differ by name: only in student: [{_first(only_student)}]; '
            f'only in teacher: [{_first(only_teacher)}]. The teacher must be built from the same config as the '
            'student (same parameter and buffer names).')
    pairs = []
    bad_shapes = []
    for name, t in teacher.items():
        s = student[name]
        if t.shape != s.shape:
            bad_shapes.append(f'{name}: student {tuple(s.shape)} vs teacher {tuple(t.shape)}')
        elif t.numel() > 0 and t.data_ptr() == s.data_ptr():
            raise ValueError(f'EMA teacher and student share the storage of {kind[:-1]} {name!r}: the teacher must be '
                             'a separate copy (e.g. built twice from the config, or copy.deepcopy).')
        pairs.append((t, s))
    if bad_shapes:
        raise ValueError(f'EMA teacher/student {kind} differ in shape: {"; ".join(bad_shapes[:_MAX_LISTED])}')
    return pairs


def check_teacher_student(teacher: nn.Module, student: nn.Module) -> None:
    """Checks that ``teacher`` and ``student`` have the same parameter and buffer names and shapes.

    Tensors are matched by name, never by position.

    Args:
        teacher: The EMA model.
        student: The trained model.

    Raises:
        ValueError: naming the first mismatching parameters/buffers, or a tensor the two share.
    """
    _pair_by_name('parameters', dict(teacher.named_parameters()), dict(student.named_parameters()))
    _pair_by_name('buffers', dict(teacher.named_buffers()), dict(student.named_buffers()))


def _grouped(pairs: List[Tuple[torch.Tensor, torch.Tensor]]) -> Dict[tuple, Tuple[List[torch.Tensor],
                                                                              List[torch.Tensor]]]:
    """Groups pairs by the teacher tensor's (device, dtype), casting student tensors to it, for ``_foreach`` ops."""
    groups: Dict[tuple, Tuple[List[torch.Tensor], List[torch.Tensor]]] = {}
    for t, s in pairs:
        s = s.detach()
        if s.device != t.device or s.dtype != t.dtype:
            s = s.to(device=t.device, dtype=t.dtype)
        ts, ss = groups.setdefault((t.device, t.dtype), ([], []))
        ts.append(t)
        ss.append(s)
    return groups


def _copy_(pairs: List[Tuple[torch.Tensor, torch.Tensor]]) -> None:
    for ts, ss in _grouped(pairs).values():
        torch._foreach_copy_(ts, ss)


def _lerp_(pairs: List[Tuple[torch.Tensor, torch.Tensor]], decay: float) -> None:
    # t.lerp_(s, 1 - decay) == decay * t + (1 - decay) * s, in one fused pass per (device, dtype) group.
    for ts, ss in _grouped(pairs).values():
        torch._foreach_lerp_(ts, ss, 1.0 - decay)


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, decay: float, buffers: str = 'copy') -> None:
    """In place: ``teacher = decay * teacher + (1 - decay) * student``, parameters matched by name.

    ``decay=0`` copies the student exactly (parameters and all buffers, whatever ``buffers`` says), which is how
    the teacher is initialised. ``decay=1`` leaves the parameters unchanged. Student tensors of another dtype or
    device are cast to the teacher's (e.g. a fp32 teacher following a half-precision student).

    Args:
        teacher: The EMA model, updated in place.
        student: The trained model; only read.
        decay: Weight kept by the teacher, in [0, 1].
        buffers: Policy for buffers (BN ``running_mean``/``running_var``/``num_batches_tracked``): ``'copy'``
            sets teacher buffers to the student's; ``'ema'`` averages floating-point buffers with the same
            ``decay`` and copies the others (integer counters cannot be averaged); ``'own'`` leaves them
            alone (the teacher estimates its own statistics, see :class:`EMATeacherHook`).

    Raises:
        ValueError: on a ``decay`` outside [0, 1], an unknown ``buffers`` policy, or mismatching names/shapes.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f'decay must be in [0, 1], got decay={decay!r}')
    if buffers not in BUFFER_POLICIES:
        raise ValueError(f'buffers must be one of {BUFFER_POLICIES}, got buffers={buffers!r}')
    params = _pair_by_name('parameters', dict(teacher.named_parameters()), dict(student.named_parameters()))
    bufs = _pair_by_name('buffers', dict(teacher.named_buffers()), dict(student.named_buffers()))
    if decay == 0.0:  # exact copy; also avoids 0 * (uninitialised inf/nan) = nan
        _copy_(params + bufs)
        return
    _lerp_(params, decay)
    if buffers == 'copy':
        _copy_(bufs)
    elif buffers == 'ema':
        _lerp_([(t, s) for t, s in bufs if t.is_floating_point()], decay)
        _copy_([(t, s) for t, s in bufs if not t.is_floating_point()])


@torch.no_grad()
def average_buffers_(module: nn.Module) -> None:
    """In place: each floating-point buffer of ``module`` becomes its mean over all processes (no-op if one).

    Integer buffers (``num_batches_tracked``) are equal on all ranks and left alone.
    """
    if get_world_size() < 2:
        return
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if buffers:
        all_reduce_params(buffers, op='mean')


@HOOKS.register_module()
class EMATeacherHook(Hook):
    """Drives the mean teacher of ESL (§3.4): a supervised-only phase, then ``teacher = EMA(student)``.

    Schedule, with ``i = runner.iter`` in ``after_train_iter`` (0 after the first optimizer step),
    ``S = sup_only_iters`` and ``F = S + copy_iters``::

        i <  S:   supervised only: model.semi_supervised = False (no teacher pass, no unlabeled or
                  contrastive term); the teacher follows the student exactly (d_i = 0)
        i <  F:   semi-supervised; the teacher is still the student (d_i = 0)
        i >= F:   teacher = d_i * teacher + (1 - d_i) * student,  d_i = min(1 - 1 / (i - S + 1), decay)

    With ``S = F = 0`` this is the warm-up of U2PL and of earlier versions of this hook. ``d_i`` depends on
    ``runner.iter`` only, so a resume continues it exactly, across the phase boundary too.

    What U2PL (``train_semi.py``) does, and what differs here: in its first ``sup_only_epoch`` epochs (default 1)
    the student trains on labeled images only, the unlabeled and contrastive losses are ``0 * rep.sum()``, and
    its teacher is left at its initialisation (only a train-mode forward updates its BN statistics); U2PL
    validates the student then. During the next epoch it sets ``t.data = s.data`` for every parameter at every
    iteration, so the teacher *is* the student for that epoch; its EMA warm-up counter starts at the end of the
    supervised phase, so when the copying stops (an epoch of >= 100 iterations) the decay is already 0.99.
    ``sup_only_iters = copy_iters = <one epoch>`` reproduces that. Our differences: the teacher follows the
    student during the supervised phase too, so that validation and ``predict_on='teacher'`` score a trained
    model; ``copy_iters`` defaults to 0.

    Teacher BatchNorm statistics (``buffers``); the teacher stays in eval mode for everything else:

    * ``'own'``: the teacher estimates its own: during its weak pass in ``ESLSegmentor.loss()`` its BN layers run
      in train mode (the student's BN modes mirrored), normalising with the weak batch's statistics and updating
      their running statistics, without gradients; the hook averages parameters only (U2PL's teacher keeps its
      own statistics too, from a train-mode forward after the eval-mode pass that makes its pseudo labels).
    * ``'copy'``: the student's running statistics are copied at every update; they belong to other weights.
    * ``'ema'``: floating-point buffers averaged with ``d_i`` as the parameters (timm ``ModelEmaV3``).

    ``'ema'`` is the default: on the demo's dev split it gave the best final teacher (MT-hard, seed 0: 63.7 vs
    63.5 ``'copy'`` and 60.2 ``'own'``, docs/benchmarks.md); ``'ema'`` and ``'copy'`` tie within one seed's noise.
    Every ``d_i = 0`` update copies buffers as well, so the teacher starts each phase as an exact copy.

    Under DDP with plain BN (``sync_buffers=True``) the student's floating-point buffers (and with ``'own'`` the
    teacher's) are averaged over the processes before each update, so all ranks hold the same models. Priority
    ``'NORMAL'``: the update runs before ``CheckpointHook``, so a checkpoint holds models of one iteration.

    Args:
        decay: Weight kept by the teacher, in [0, 1]; 0.99 is U2PL's ``ema_decay`` (the paper gives none; its
            θ = 0.99 is the prototype momentum of Eq. 12, set in the contrastive loss).
        warmup: Use ``min(1 - 1 / (i - S + 1), decay)`` instead of ``decay``.
        buffers: ``'ema'``, ``'copy'`` or ``'own'``, see above.
        interval: After the copy phase, update every ``interval`` iterations (``(i + 1) % interval == 0``);
            set it to the optimizer wrapper's ``accumulative_counts`` with gradient accumulation.
        sync_buffers: Under DDP, average floating-point buffers over processes before each update.
        sup_only_iters: Iterations ``S`` of the supervised-only phase (U2PL: one epoch).
        copy_iters: Further iterations during which the teacher is the student (U2PL: one epoch).

    Raises:
        ValueError: on an out-of-range or ill-typed argument, naming it.
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
        self.decay = float(decay)
        self.warmup = warmup
        self.buffers = buffers
        self.interval = interval
        self.sync_buffers = sync_buffers
        self.sup_only_iters = sup_only_iters
        self.copy_iters = copy_iters

    def decay_at(self, iteration: int) -> float:
        """``d_i`` of the update after iteration ``iteration`` (``runner.iter`` in ``after_train_iter``)."""
        if iteration < 0:
            raise ValueError(f'iteration must be >= 0, got iteration={iteration!r}')
        if iteration < self.sup_only_iters + self.copy_iters:
            return 0.0
        if not self.warmup:
            return self.decay
        return min(1.0 - 1.0 / (iteration - self.sup_only_iters + 1), self.decay)

    @staticmethod
    def _model(runner) -> nn.Module:
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def _student_teacher(self, runner) -> Tuple[nn.Module, nn.Module]:
        """``(student, teacher)`` of the runner's model, unwrapped from a model wrapper (DDP) if needed."""
        model = self._model(runner)
        student: Optional[nn.Module] = getattr(model, 'student', None)
        teacher: Optional[nn.Module] = getattr(model, 'teacher', None)
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
            print_log(f'EMATeacherHook: teacher parameters require grad ({_first(trainable)}); the teacher should '
                      'be frozen and left out of the optimizer, it is updated by EMA only.',
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
