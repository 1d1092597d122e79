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

BUFFER_POLICIES = ('copy', 'ema')
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
            ``decay`` and copies the others (integer counters cannot be averaged).

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
    else:
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
    """Keeps ``model.teacher`` an exponential moving average of ``model.student`` (mean teacher, ESL §3.4).

    After every ``interval``-th optimizer step (``after_train_iter``)::

        teacher = d_i * teacher + (1 - d_i) * student
        d_i = min(1 - 1 / (i + 1), decay)   if warmup else   decay

    where ``i`` is ``runner.iter`` as seen in ``after_train_iter``: the 0-based index of the iteration that just
    finished, i.e. the number of optimizer steps completed *before* it (0 after the first step, so the first
    update copies the student; 1 → 0.5; 9 → 0.9; the warm-up ends when ``1 - 1 / (i + 1) >= decay``, at
    i = 99 for 0.99). This is U2PL's schedule. ``d_i`` depends on ``runner.iter`` only, not on a counter kept
    in the hook, so it continues correctly after a resume. With ``interval > 1`` the decay is applied once per
    update, so the teacher's horizon is about ``interval / (1 - decay)`` iterations; with gradient
    accumulation set ``interval`` to the optimizer wrapper's ``accumulative_counts``.

    Buffer policy: U2PL averages parameters only and its teacher runs its forward in train mode, so the
    teacher's BatchNorm statistics come from its own batches. Our teacher is kept in eval mode (its predictions
    are the pseudo-labels), so its BN buffers would never change and would stay at their initial values unless
    the hook sets them (mmdet's ``MeanTeacherHook`` with its default ``skip_buffer=True`` has that problem).
    The default ``'copy'`` gives the teacher the student's running statistics each step: they are already a
    running average (BN momentum) of recent batches, the closest thing to what U2PL's train-mode teacher
    computed, and they do not lag twice. ``'ema'`` averages floating buffers with ``d_i`` too (timm
    ``ModelEmaV3``-style); integer buffers such as ``num_batches_tracked`` are always copied.

    Start: in ``before_train`` the student/teacher pair is checked (same names and shapes, matched by name, no
    shared tensors). If ``runner.iter == 0`` (a fresh run, also after ``load_from``) the teacher is set to the
    student, parameters and buffers. If ``runner.iter > 0`` the run was resumed and the teacher, part of the
    model's ``state_dict``, was restored from the checkpoint, so it is left alone.

    Eval mode: mmengine's train loops call ``model.train()`` every iteration, which would put the teacher back
    in train mode (dropout on, BN using batch statistics). ``before_train_iter`` therefore calls
    ``teacher.eval()``; this is a safety net, the segmentor is expected to keep its teacher in eval mode itself.

    Several processes (DDP): parameters are identical on every rank (DDP averages the gradients), buffers are
    not: with plain BatchNorm each rank's running statistics come from its own images (mmengine wraps models
    with ``broadcast_buffers=False``), so each rank's teacher would copy a different student and the ranks'
    pseudo-labels would drift apart. With ``sync_buffers=True`` (default) the hook first averages the student's
    floating-point buffers over the processes (one ``all_reduce`` of the BN statistics, as mmengine's
    ``SyncBuffersHook`` does before validation) and writes the average back into the student, so that every
    rank holds the same student and teacher. The paper's configs use SyncBN, whose running statistics are
    already equal on all ranks: there the average changes nothing and costs one small all-reduce. (Our choice;
    U2PL relies on SyncBN and does nothing here.)

    Priority ``'NORMAL'`` runs ``after_train_iter`` before the ``CheckpointHook`` (``'VERY_LOW'``), so a saved
    checkpoint holds a teacher and a student of the same iteration.

    Args:
        decay: Weight kept by the teacher at each update, in [0, 1]. Defaults to 0.99, U2PL's ``ema_decay``; the
            ESL paper gives no value for it (its θ = 0.99 is the prototype momentum of Eq. 12, set elsewhere).
        warmup: Use ``min(1 - 1 / (i + 1), decay)`` instead of ``decay``. Defaults to True.
        buffers: ``'copy'`` or ``'ema'``, see above. Defaults to ``'copy'``.
        interval: Update every ``interval`` iterations (when ``(runner.iter + 1) % interval == 0``). Defaults to 1.
        sync_buffers: Under DDP, average the student's floating-point buffers over the processes before each
            update (see above). Defaults to True.

    Raises:
        ValueError: on an out-of-range or ill-typed argument, naming it.
    """

    priority = 'NORMAL'

    def __init__(self, *, decay: float = 0.99, warmup: bool = True, buffers: str = 'copy', interval: int = 1,
                 sync_buffers: bool = True) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay <= 1.0:
            raise ValueError(f'EMATeacherHook: decay must be a number in [0, 1], got decay={decay!r}')
        if not isinstance(warmup, bool):
            raise ValueError(f'EMATeacherHook: warmup must be a bool, got warmup={warmup!r}')
        if buffers not in BUFFER_POLICIES:
            raise ValueError(f'EMATeacherHook: buffers must be one of {BUFFER_POLICIES}, got buffers={buffers!r}')
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f'EMATeacherHook: interval must be an int >= 1, got interval={interval!r}')
        if not isinstance(sync_buffers, bool):
            raise ValueError(f'EMATeacherHook: sync_buffers must be a bool, got sync_buffers={sync_buffers!r}')
        self.decay = float(decay)
        self.sync_buffers = sync_buffers
        self.warmup = warmup
        self.buffers = buffers
        self.interval = interval

    def decay_at(self, iteration: int) -> float:
        """The decay used by the update after iteration ``iteration`` (``runner.iter`` in ``after_train_iter``).

        Args:
            iteration: 0-based index of the iteration that just finished.

        Returns:
            ``min(1 - 1 / (iteration + 1), decay)`` with warm-up, else ``decay``.
        """
        if iteration < 0:
            raise ValueError(f'iteration must be >= 0, got iteration={iteration!r}')
        if not self.warmup:
            return self.decay
        return min(1.0 - 1.0 / (iteration + 1), self.decay)

    @staticmethod
    def _student_teacher(runner) -> Tuple[nn.Module, nn.Module]:
        """``(student, teacher)`` of the runner's model, unwrapped from a model wrapper (DDP) if needed."""
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        student: Optional[nn.Module] = getattr(model, 'student', None)
        teacher: Optional[nn.Module] = getattr(model, 'teacher', None)
        if not isinstance(student, nn.Module) or not isinstance(teacher, nn.Module):
            raise TypeError(f'EMATeacherHook needs a model with `student` and `teacher` nn.Module attributes; '
                            f'{type(model).__name__} has student={type(student).__name__}, '
                            f'teacher={type(teacher).__name__}.')
        return student, teacher

    def before_train(self, runner) -> None:
        """Checks the student/teacher pair; on a fresh run (``runner.iter == 0``) sets teacher := student."""
        student, teacher = self._student_teacher(runner)
        check_teacher_student(teacher, student)
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
        """Puts the teacher back in eval mode after the loop's ``model.train()`` (safety net)."""
        _, teacher = self._student_teacher(runner)
        teacher.eval()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Every ``interval`` iterations: ``teacher = d_i * teacher + (1 - d_i) * student``, ``i = runner.iter``."""
        if not self.every_n_train_iters(runner, self.interval):
            return
        student, teacher = self._student_teacher(runner)
        if self.sync_buffers:
            average_buffers_(student)
        ema_update_(teacher, student, self.decay_at(runner.iter), self.buffers)
