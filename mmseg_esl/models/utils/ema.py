"""The EMA maths of the mean teacher (ESL §3.4), as plain functions on a (teacher, student) pair.

Convention: ``decay`` is the weight kept by the *teacher*, ``teacher = decay * teacher + (1 - decay) * student``
(timm's; mmdet's ``momentum`` is ``1 - decay``). Tensors are matched by name, never by position.
``EMATeacherHook`` decides when and with which ``decay`` (:func:`ema_decay`); these functions do the update.
"""
from typing import Dict, List, Tuple

import torch
from mmengine.dist import all_reduce_params, get_world_size
from torch import nn

BUFFER_POLICIES = ('copy', 'ema', 'own')
_MAX_LISTED = 5  # how many mismatching names an error message lists


def first_names(names: List[str]) -> str:
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
            f'EMA teacher/student {kind} differ by name: only in student: [{first_names(only_student)}]; '
            f'only in teacher: [{first_names(only_teacher)}]. The teacher must be built from the same config as the '
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


def ema_decay(iteration: int, *, decay: float, warmup: bool = True, sup_only_iters: int = 0,
              copy_iters: int = 0) -> float:
    """``d_i`` of the update after iteration ``i`` (0-based): 0 while ``i < S + copy_iters`` (the teacher is the
    student), then ``min(1 - 1 / (i - S + 1), decay)`` with ``warmup`` (U2PL's warm-up, restarted at the end of
    the supervised-only phase ``S = sup_only_iters``), else ``decay``."""
    if iteration < 0:
        raise ValueError(f'iteration must be >= 0, got iteration={iteration!r}')
    if iteration < sup_only_iters + copy_iters:
        return 0.0
    if not warmup:
        return decay
    return min(1.0 - 1.0 / (iteration - sup_only_iters + 1), decay)
