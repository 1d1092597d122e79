"""RNGStateHook on a stand-in runner (one process): what it saves, when it restores, what it leaves alone.

The end-to-end proof (8 iterations == 4 + resume + 4, bit for bit) is tests/test_tools/test_exact_resume.py.
"""
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mmseg_esl.engine.hooks import RNGStateHook, rng_state_hook


def saved_checkpoint(hook, iteration):
    """What the training loop does at the end of iteration ``iteration`` when a checkpoint is due."""
    runner = SimpleNamespace(iter=iteration - 1)
    hook.after_train_iter(runner, batch_idx=iteration - 1)
    checkpoint = dict(meta=dict(iter=iteration))
    hook.before_save_checkpoint(runner, checkpoint)
    return checkpoint


def test_checkpoint_holds_this_process_torch_state_and_the_data_start_states():
    hook = RNGStateHook()
    torch.manual_seed(3)
    np.random.seed(3)
    hook.before_train_epoch(SimpleNamespace(iter=0))  # fresh run: remembers numpy/random at the start
    expected_numpy = np.random.get_state()[1].copy()
    torch.rand(5)
    checkpoint = saved_checkpoint(hook, 4)
    (state,) = checkpoint['rng_states']  # one entry per rank
    assert torch.equal(state['cpu'], torch.get_rng_state())
    assert np.array_equal(state['data_start']['numpy'][1], expected_numpy)


def test_resume_restores_torch_state_at_the_first_iteration_and_numpy_before_the_replay():
    hook = RNGStateHook()
    np.random.seed(11)
    random.seed(11)
    hook.before_train_epoch(SimpleNamespace(iter=0))
    numpy_at_start, python_at_start = np.random.rand(3), random.random()
    torch.manual_seed(0)
    checkpoint = saved_checkpoint(hook, 4)
    torch_after_stop = torch.rand(4)

    resumed = RNGStateHook()  # a new process: seeded differently
    torch.manual_seed(123)
    np.random.seed(123)
    resumed.after_load_checkpoint(SimpleNamespace(iter=0), checkpoint)
    resumed.before_train_epoch(SimpleNamespace(iter=4))  # just before mmengine replays the data loader
    assert np.array_equal(np.random.rand(3), numpy_at_start) and random.random() == python_at_start
    torch.rand(7)  # the replay and the first batch may draw from torch; the restore comes after them
    resumed.before_train_iter(SimpleNamespace(iter=4), batch_idx=4)
    assert torch.equal(torch.rand(4), torch_after_stop)
    state = torch.get_rng_state()
    resumed.before_train_iter(SimpleNamespace(iter=5), batch_idx=5)  # only once
    assert torch.equal(torch.get_rng_state(), state)


def skipping_runner(iteration):
    """A runner whose loop resumes like the OneDL fork's with num_workers=0: skip_iter, no pipeline replay."""
    loop = SimpleNamespace(dataloader_iterator=SimpleNamespace(skip_iter=lambda n: None))
    return SimpleNamespace(iter=iteration, train_loop=loop, train_dataloader=SimpleNamespace(num_workers=0))


def test_a_loop_that_skips_the_pipeline_gets_the_numpy_and_random_states_of_the_stop():
    hook = RNGStateHook()
    np.random.seed(11)
    random.seed(11)
    hook.before_train_epoch(skipping_runner(0))
    np.random.rand(5), random.random()  # the pipeline's draws of iterations 1-4
    runner = skipping_runner(3)
    hook.after_train_iter(runner, batch_idx=3)
    checkpoint = dict(meta=dict(iter=4))
    hook.before_save_checkpoint(runner, checkpoint)
    numpy_after_stop, python_after_stop = np.random.rand(3), random.random()  # iteration 5's draws

    resumed = RNGStateHook()
    np.random.seed(123)
    random.seed(123)
    resumed.after_load_checkpoint(SimpleNamespace(iter=0), checkpoint)
    resumed.before_train_epoch(skipping_runner(4))  # the fork's loop then skips without running the pipeline
    assert np.array_equal(np.random.rand(3), numpy_after_stop) and random.random() == python_after_stop
    assert RNGStateHook.loop_skips_pipeline(skipping_runner(4))
    upstream = SimpleNamespace(iter=4, train_loop=SimpleNamespace(dataloader_iterator=object()))
    assert not RNGStateHook.loop_skips_pipeline(upstream)


def test_load_from_an_iteration_zero_checkpoint_restores_nothing():
    hook = RNGStateHook()
    checkpoint = dict(meta=dict(iter=0), rng_states=[dict(cpu=torch.get_rng_state(), data_start=None)])
    hook.after_load_checkpoint(SimpleNamespace(iter=0), checkpoint)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    hook.before_train_iter(SimpleNamespace(iter=0), batch_idx=0)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize('states, message', [
    (None, 'the checkpoint has no RNG states'),
    ([dict(cpu=torch.get_rng_state())] * 2, 'holds the RNG states of 2 processes, this run has 1'),
])
def test_missing_or_foreign_states_are_reported_and_left_alone(states, message, monkeypatch):
    logged = []
    monkeypatch.setattr(rng_state_hook, 'print_log', lambda msg, **kwargs: logged.append(msg))
    hook = RNGStateHook()
    checkpoint = dict(meta=dict(iter=4))
    if states is not None:
        checkpoint['rng_states'] = states
    hook.after_load_checkpoint(SimpleNamespace(iter=0), checkpoint)
    torch.manual_seed(9)
    state = torch.get_rng_state()
    hook.before_train_iter(SimpleNamespace(iter=4), batch_idx=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert len(logged) == 1 and message in logged[0]


def test_validation_leaves_the_training_random_stream_unchanged():
    hook = RNGStateHook()
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    hook.before_val(SimpleNamespace(iter=4))
    torch.rand(10), np.random.rand(10), random.random()  # what a validation run may draw
    hook.after_val(SimpleNamespace(iter=4))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
