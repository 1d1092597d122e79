"""EMATeacherHook: arguments, warm-up, phases and switches, with mock runners and a real mmengine run.

The EMA maths it calls (ema_update_, buffer policies) are tested in tests/test_models/test_utils/test_ema.py.
"""
import copy
import os.path as osp
from types import SimpleNamespace
from typing import Dict, List

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import DataLoader, Dataset

import mmseg_esl  # noqa: F401  (registers EMATeacherHook into mmseg's HOOKS)
from mmseg_esl.engine.hooks import EMATeacherHook


@pytest.mark.parametrize('kwargs, key', [
    (dict(decay=1.5), 'decay=1.5'), (dict(decay=-0.1), 'decay=-0.1'), (dict(decay=True), 'decay=True'),
    (dict(buffers='skip'), "buffers='skip'"), (dict(interval=0), 'interval=0'), (dict(interval=1.5), 'interval=1.5'),
    (dict(warmup='yes'), "warmup='yes'"), (dict(sync_buffers=1), 'sync_buffers=1'),
])
def test_invalid_hook_args(kwargs, key):
    with pytest.raises(ValueError, match=key.replace('.', r'\.')):
        EMATeacherHook(**kwargs)


def test_hook_args_are_keyword_only():
    with pytest.raises(TypeError):
        EMATeacherHook(0.9)  # type: ignore[misc]


def test_warmup_values():
    hook = EMATeacherHook(decay=0.99)
    assert hook.decay_at(0) == 0.0
    assert hook.decay_at(1) == pytest.approx(0.5)
    assert hook.decay_at(9) == pytest.approx(0.9)
    assert hook.decay_at(1000) == 0.99
    no_warmup = EMATeacherHook(decay=0.99, warmup=False)
    assert no_warmup.decay_at(0) == 0.99 and no_warmup.decay_at(1000) == 0.99


# ---------------------------------------------------------------------------------------------------------------
# Hook with mock runners
# ---------------------------------------------------------------------------------------------------------------
class ToyPair(BaseModel):
    """A student and a frozen teacher of the same small Conv+BN architecture; loss = MSE to a fixed target."""

    def __init__(self) -> None:
        super().__init__()
        self.student = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1))
        self.teacher = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1))
        self.teacher.requires_grad_(False)
        self.teacher_training: List[bool] = []  # teacher.training seen by each forward

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'loss') -> Dict[str, torch.Tensor]:
        self.teacher_training.append(self.teacher.training)
        with torch.no_grad():
            pseudo = self.teacher(inputs)
        out = self.student(inputs)
        return dict(loss=(out - inputs.mean(1, keepdim=True)).pow(2).mean() + 0.0 * pseudo.mean())


def test_before_train_initialises_teacher_on_fresh_run():
    model = ToyPair()
    with torch.no_grad():
        model.student[1].running_mean.fill_(4.0)
    EMATeacherHook(buffers='copy').before_train(SimpleNamespace(model=model, iter=0))
    for (name, t), s in zip(model.teacher.state_dict().items(), model.student.state_dict().values()):
        assert torch.equal(t, s), name


def test_before_train_keeps_teacher_on_resume():
    model = ToyPair()
    teacher_before = copy.deepcopy(model.teacher.state_dict())
    EMATeacherHook(buffers='copy').before_train(SimpleNamespace(model=model, iter=5))
    for name, t in model.teacher.state_dict().items():
        assert torch.equal(t, teacher_before[name]), name
    assert not torch.equal(model.teacher[0].weight, model.student[0].weight)


def test_before_train_rejects_mismatched_pair():
    model = ToyPair()
    model.teacher = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1),
                                  nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match=r'only in teacher: \[4\.bias, 4\.weight\]'):
        EMATeacherHook(buffers='copy').before_train(SimpleNamespace(model=model, iter=0))
    del model.teacher
    with pytest.raises(TypeError, match='`student` and `teacher`'):
        EMATeacherHook(buffers='copy').before_train(SimpleNamespace(model=model, iter=0))


def test_after_train_iter_uses_runner_iter_and_interval():
    model = ToyPair()
    hook = EMATeacherHook(decay=0.9, interval=2, buffers='copy')
    hook.before_train(SimpleNamespace(model=model, iter=0))
    with torch.no_grad():
        model.student[0].bias.fill_(1.0)
        model.teacher[0].bias.fill_(0.0)
    hook.after_train_iter(SimpleNamespace(model=model, iter=2), batch_idx=2)  # (2 + 1) % 2 != 0: no update
    assert torch.equal(model.teacher[0].bias, torch.zeros(4))
    hook.after_train_iter(SimpleNamespace(model=model, iter=3), batch_idx=3)  # d_3 = min(1 - 1/4, 0.9) = 0.75
    torch.testing.assert_close(model.teacher[0].bias, torch.full((4,), 0.25))


# ---------------------------------------------------------------------------------------------------------------
# A real mmengine Runner
# ---------------------------------------------------------------------------------------------------------------
class RandomImages(Dataset):
    def __init__(self, n: int = 6) -> None:
        self.images = torch.randn(n, 2, 8, 8, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return dict(inputs=self.images[i])


class RecordHook(Hook):
    """Records student and teacher after every iteration; runs after EMATeacherHook (priority NORMAL)."""

    priority = 'LOW'

    def __init__(self) -> None:
        self.students: List[Dict[str, torch.Tensor]] = []
        self.teachers: List[Dict[str, torch.Tensor]] = []

    def before_train(self, runner) -> None:
        self.students.append(copy.deepcopy(runner.model.student.state_dict()))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.students.append(copy.deepcopy(runner.model.student.state_dict()))
        self.teachers.append(copy.deepcopy(runner.model.teacher.state_dict()))


def make_runner(tmp_path, model: ToyPair, record: RecordHook, max_iters: int, hook_cfg: dict, **kwargs) -> Runner:
    # The optimizer is built here over THIS model's student, and the test checks it is the runner's.
    optim_wrapper = OptimWrapper(optimizer=torch.optim.SGD(model.student.parameters(), lr=0.1, momentum=0.9))
    return Runner(
        model=model,
        work_dir=str(tmp_path),
        train_dataloader=DataLoader(RandomImages(), batch_size=2, shuffle=False),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters),
        optim_wrapper=optim_wrapper,
        custom_hooks=[hook_cfg, record],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        default_scope='mmseg',
        log_level='WARNING',
        experiment_name=f'ema_{tmp_path.name}',
        **kwargs)


def test_runner_teacher_is_ema_of_student(tmp_path):
    model, record = ToyPair(), RecordHook()
    hook_cfg = dict(type='EMATeacherHook', decay=0.5, warmup=False, buffers='copy')
    runner = make_runner(tmp_path, model, record, 3, hook_cfg)
    assert any(isinstance(h, EMATeacherHook) for h in runner.hooks)
    student_params = {id(p) for p in runner.model.student.parameters()}
    optimizer_params = {id(p) for g in runner.optim_wrapper.optimizer.param_groups for p in g['params']}
    assert optimizer_params == student_params
    runner.train()

    s0, s1, s2, s3 = record.students  # before training, then after iterations 1, 2, 3
    for name in s0:  # the optimizer really moved the student at every step
        if name.endswith('weight') and 'num_batches' not in name:
            assert not torch.equal(s0[name], s1[name]) and not torch.equal(s2[name], s3[name]), name
    teacher = runner.model.teacher.state_dict()
    for name, _ in runner.model.student.named_parameters():
        # T0 = S0, T_k = 0.5 T_{k-1} + 0.5 S_k  =>  T3 = S0/8 + S1/8 + S2/4 + S3/2
        expected = 0.125 * s0[name] + 0.125 * s1[name] + 0.25 * s2[name] + 0.5 * s3[name]
        torch.testing.assert_close(teacher[name], expected, msg=name)
    for name, b in runner.model.student.named_buffers():  # buffers='copy'
        assert torch.equal(teacher[name], b), name
    assert teacher['1.num_batches_tracked'].item() == 3
    assert all(p.grad is None for p in runner.model.teacher.parameters())
    assert model.teacher_training == [False, False, False]


def test_runner_resume_keeps_teacher(tmp_path):
    hook_cfg = dict(type='EMATeacherHook', decay=0.9, warmup=True, buffers='copy')
    first, record_first = ToyPair(), RecordHook()
    make_runner(tmp_path / 'a', first, record_first, 3, hook_cfg).train()
    assert osp.isfile(tmp_path / 'a' / 'iter_2.pth')

    # A different random init, resumed from iteration 2: iteration 3 must give the same teacher as the first run.
    second, record_second = ToyPair(), RecordHook()
    runner = make_runner(tmp_path / 'b', second, record_second, 3, hook_cfg, resume=True,
                         load_from=str(tmp_path / 'a' / 'iter_2.pth'))
    runner.train()
    assert runner.iter == 3 and len(record_second.teachers) == 1
    for name, t in record_first.teachers[-1].items():
        torch.testing.assert_close(second.teacher.state_dict()[name], t, msg=name)


# ---------------------------------------------------------------------------------------------------------------
# Phases: supervised only, copy, EMA with the warm-up restarted; the teacher's own BN statistics
# ---------------------------------------------------------------------------------------------------------------
def test_decay_schedule_with_phases():
    hook = EMATeacherHook(decay=0.9, sup_only_iters=3, copy_iters=2)
    assert [hook.decay_at(i) for i in range(5)] == [0.0] * 5  # supervised only (0-2), then the teacher copies (3-4)
    # The warm-up counts from the end of the supervised phase (U2PL): i - 3 + 1.
    assert hook.decay_at(5) == pytest.approx(1 - 1 / 3)
    assert hook.decay_at(6) == pytest.approx(0.75)
    assert hook.decay_at(100) == 0.9
    assert EMATeacherHook(decay=0.9, sup_only_iters=3, warmup=False).decay_at(3) == 0.9


@pytest.mark.parametrize('kwargs, key', [
    (dict(sup_only_iters=-1), 'sup_only_iters=-1'), (dict(sup_only_iters=2.0), 'sup_only_iters=2.0'),
    (dict(copy_iters=True), 'copy_iters=True'),
])
def test_invalid_phase_args(kwargs, key):
    with pytest.raises(ValueError, match=key.replace('.', r'\.')):
        EMATeacherHook(**kwargs)


class SwitchedPair(ToyPair):
    """ToyPair with ESLSegmentor's switches: records them at each forward; with own BN statistics the teacher's
    BN runs in train mode on the batch (as ESLSegmentor's weak pass does)."""

    def __init__(self) -> None:
        super().__init__()
        self.semi_supervised = True
        self.teacher_own_bn_stats = False
        self.switches: List[tuple] = []

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'loss') -> Dict[str, torch.Tensor]:
        self.switches.append((self.semi_supervised, self.teacher_own_bn_stats))
        if self.teacher_own_bn_stats and self.semi_supervised:
            self.teacher[1].train()
            with torch.no_grad():
                self.teacher(inputs)
            self.teacher[1].eval()
        out = self.student(inputs)
        return dict(loss=(out - inputs.mean(1, keepdim=True)).pow(2).mean())


def test_runner_phases_copy_then_restart_the_warmup(tmp_path):
    model, record = SwitchedPair(), RecordHook()
    hook_cfg = dict(type='EMATeacherHook', decay=0.9, sup_only_iters=2, copy_iters=1, buffers='copy')
    make_runner(tmp_path, model, record, 5, hook_cfg).train()
    assert model.switches == [(False, False), (False, False), (True, False), (True, False), (True, False)]
    s = record.students  # s[k] = the student after k optimizer steps
    for k in (1, 2, 3):  # iterations 0-1 supervised only, 2 copying: the teacher IS the student
        for name, t in record.teachers[k - 1].items():
            assert torch.equal(t, s[k][name]), (k, name)
    # Iteration 3: d = 1 - 1 / (3 - 2 + 1) = 0.5 (the warm-up restarted at 2; without it 1 - 1/4 = 0.75);
    # iteration 4: d = 1 - 1/3.
    for name, _ in model.student.named_parameters():
        t3 = 0.5 * s[3][name] + 0.5 * s[4][name]
        torch.testing.assert_close(record.teachers[3][name], t3, msg=name)
        torch.testing.assert_close(record.teachers[4][name], (2 / 3) * t3 + (1 / 3) * s[5][name], msg=name)


def test_runner_own_bn_statistics_are_left_to_the_teacher(tmp_path):
    model, record = SwitchedPair(), RecordHook()
    hook_cfg = dict(type='EMATeacherHook', decay=0.5, warmup=False, sup_only_iters=1, buffers='own')
    make_runner(tmp_path, model, record, 3, hook_cfg).train()
    assert model.switches == [(False, True), (True, True), (True, True)]
    # After the supervised iteration the teacher copied everything, buffers included ...
    assert torch.equal(record.teachers[0]['1.running_mean'], record.students[1]['1.running_mean'])
    # ... then its BN statistics are its own: one momentum step per teacher forward, not the student's.
    assert record.teachers[2]['1.num_batches_tracked'].item() == record.students[1]['1.num_batches_tracked'].item() + 2
    assert not torch.equal(record.teachers[2]['1.running_mean'], record.students[3]['1.running_mean'])
    assert not model.teacher.training


def test_switches_are_required_only_when_used():
    hook = EMATeacherHook(buffers='own', sup_only_iters=5)
    with pytest.raises(TypeError, match=r"EMATeacherHook\(sup_only_iters=5, buffers='own'\) needs a model with "
                                        r"the switch\(es\) 'semi_supervised', 'teacher_own_bn_stats'"):
        hook.before_train(SimpleNamespace(model=ToyPair(), iter=0))
    EMATeacherHook(buffers='copy').before_train(SimpleNamespace(model=ToyPair(), iter=0))
