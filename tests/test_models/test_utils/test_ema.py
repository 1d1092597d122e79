"""The EMA maths of the mean teacher (mmseg_esl.models.utils.ema): hand-computed values, buffer policies, name
matching, dtype casting and argument errors, without a runner."""
import copy

import pytest
import torch
from torch import nn

from mmseg_esl.models.utils.ema import ema_decay, ema_update_


class Scalar(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([value]))


def bn_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))


def test_two_steps_hand_computed():
    teacher, student = Scalar(0.0), Scalar(1.0)
    teacher.w.requires_grad_(False)
    ema_update_(teacher, student, 0.9)
    assert teacher.w.item() == pytest.approx(0.1)  # 0.9 * 0 + 0.1 * 1
    with torch.no_grad():
        student.w.fill_(3.0)
    ema_update_(teacher, student, 0.9)
    assert teacher.w.item() == pytest.approx(0.39)  # 0.9 * 0.1 + 0.1 * 3
    assert student.w.item() == 3.0  # the student is only read
    assert teacher.w.grad is None and student.w.grad is None


def test_decay_zero_copies_and_decay_one_keeps():
    teacher, student = Scalar(float('nan')), Scalar(2.0)
    ema_update_(teacher, student, 0.0)
    assert teacher.w.item() == 2.0  # an exact copy, even over nan
    with torch.no_grad():
        student.w.fill_(5.0)
    ema_update_(teacher, student, 1.0)
    assert teacher.w.item() == 2.0


def test_teacher_gets_no_gradient():
    teacher, student = Scalar(0.0), Scalar(1.0)
    teacher.requires_grad_(False)
    ema_update_(teacher, student, 0.5)
    assert not teacher.w.requires_grad and teacher.w.grad_fn is None
    (student.w * teacher.w).sum().backward()
    assert teacher.w.grad is None
    assert student.w.grad is not None


def _bn_pair():
    torch.manual_seed(0)
    student = bn_net()
    teacher = copy.deepcopy(student).requires_grad_(False)
    bn_s, bn_t = student[1], teacher[1]
    with torch.no_grad():
        bn_s.running_mean.fill_(1.0)
        bn_s.running_var.fill_(3.0)
        bn_s.num_batches_tracked.fill_(7)
        bn_t.running_mean.fill_(0.0)
        bn_t.running_var.fill_(1.0)
        bn_t.num_batches_tracked.fill_(2)
    return teacher, student


def test_buffer_policy_copy():
    teacher, student = _bn_pair()
    ema_update_(teacher, student, 0.9, buffers='copy')
    bn = teacher[1]
    assert torch.equal(bn.running_mean, torch.full((3,), 1.0))
    assert torch.equal(bn.running_var, torch.full((3,), 3.0))
    assert bn.num_batches_tracked.item() == 7
    assert bn.num_batches_tracked.dtype == torch.long


def test_buffer_policy_ema():
    teacher, student = _bn_pair()
    ema_update_(teacher, student, 0.9, buffers='ema')
    bn = teacher[1]
    torch.testing.assert_close(bn.running_mean, torch.full((3,), 0.1))  # 0.9 * 0 + 0.1 * 1
    torch.testing.assert_close(bn.running_var, torch.full((3,), 1.2))  # 0.9 * 1 + 0.1 * 3
    assert bn.num_batches_tracked.item() == 7  # integers are copied, not averaged
    assert bn.num_batches_tracked.dtype == torch.long
    assert student[1].running_mean[0].item() == 1.0  # student untouched


def test_parameters_matched_by_name_not_position():
    class AB(nn.Module):
        def __init__(self, first: str) -> None:
            super().__init__()
            # same names, registered in a different order
            for name in (first, 'b' if first == 'a' else 'a'):
                self.register_parameter(name, nn.Parameter(torch.zeros(1)))

    teacher, student = AB('a'), AB('b')
    with torch.no_grad():
        student.a.fill_(1.0)
        student.b.fill_(2.0)
    ema_update_(teacher, student, 0.5)
    assert teacher.a.item() == 0.5 and teacher.b.item() == 1.0


def test_mixed_dtype_student_cast_to_teacher():
    teacher, student = Scalar(0.0), Scalar(1.0).to(torch.bfloat16)
    ema_update_(teacher, student, 0.75)
    assert teacher.w.dtype == torch.float32
    assert teacher.w.item() == pytest.approx(0.25)


def test_mismatched_names_and_shapes_raise():
    names = r'only in student: \[1\.bias, 1\.weight\]; only in teacher: \[2\.bias, 2\.weight\]'
    with pytest.raises(ValueError, match=names):
        ema_update_(nn.Sequential(nn.Linear(2, 2), nn.Identity(), nn.Linear(2, 2)),
                    nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), 0.5)
    with pytest.raises(ValueError, match=r'differ in shape: 0\.weight: student \(3, 2\) vs teacher \(2, 2\)'):
        ema_update_(nn.Sequential(nn.Linear(2, 2)), nn.Sequential(nn.Linear(2, 3)), 0.5)
    shared = nn.Linear(2, 2)
    with pytest.raises(ValueError, match='share the storage'):
        ema_update_(shared, shared, 0.5)


def test_invalid_function_args():
    with pytest.raises(ValueError, match='decay=2'):
        ema_update_(Scalar(0.0), Scalar(1.0), 2)
    with pytest.raises(ValueError, match="buffers='none'"):
        ema_update_(Scalar(0.0), Scalar(1.0), 0.5, buffers='none')


def test_ema_decay_is_the_hooks_schedule():
    assert ema_decay(0, decay=0.99) == 0.0 and ema_decay(9, decay=0.99) == pytest.approx(0.9)
    assert ema_decay(4, decay=0.99, sup_only_iters=3, copy_iters=2) == 0.0
    assert ema_decay(5, decay=0.99, sup_only_iters=3, copy_iters=2) == pytest.approx(1 - 1 / 3)
    assert ema_decay(5, decay=0.9, warmup=False) == 0.9
    with pytest.raises(ValueError, match='iteration=-1'):
        ema_decay(-1, decay=0.99)
