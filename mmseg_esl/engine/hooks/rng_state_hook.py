"""Saves the random-number-generator states in checkpoints and restores them on resume.

Why: mmengine's resume restores model, optimizer, schedulers and message hub, and replays the data loader up to
the resumed iteration, but it re-seeds the RNGs instead of restoring them. ESL draws random numbers *inside the
model* every iteration (CutMix boxes, the 10 % anchor sample, the 255 negatives per anchor, dropout), all from
torch's global generators (CPU and, on GPU, the current CUDA device's). Without this hook a resumed run draws
different boxes, anchors and negatives than the uninterrupted run would have, so its losses diverge from the
first resumed iteration on (still a valid run, but not the same one).

What is restored, per process (``checkpoint['rng_states']``, a list indexed by rank, gathered from all):

* The torch CPU generator and the current CUDA device's generator, as they were at the end of the iteration
  after which the checkpoint was written (gathered from all ranks in ``after_train_iter``); restored at the
  first ``before_train_iter`` after the resume, i.e. after mmengine's ``IterBasedTrainLoop`` replayed the
  data loader and fetched the first batch, so nothing between the checkpoint load and the first iteration
  (other hooks' ``before_train``, the replay) can disturb them.
* numpy and Python ``random``, which the data pipeline's transforms draw from, as they were when the run
  *started* its first epoch (captured in ``before_train_epoch`` of the fresh run); restored in
  ``before_train_epoch`` of the resumed run, just before mmengine replays the data loader. The replay then
  re-runs the pipeline on the same batches with the same draws and ends in exactly the state the
  uninterrupted run had at the stop. Restoring the numpy state *of the stop* instead would apply the
  replay's draws twice. Not restoring them works as long as nothing draws from numpy/random before the first
  batch differently in a fresh and in a resumed run; the restore guards against hooks that do (e.g. one that
  builds a sampler without a seed only in a fresh run: mmengine's ``sync_random_seed`` draws from numpy). With
  the hooks of this repository the exact-resume test also passes without it (checked once by hand).
  In worker processes (``num_workers > 0``) mmengine seeds numpy/random per rank and worker from
  ``randomness.seed``, and the replay reproduces them as well.
  The maintained fork's loop (onedl-mmengine >= 0.10.12, ``MMSEG_STACK=onedl``) does *not* replay the pipeline
  with ``num_workers=0``: its ``skip_iter`` only advances the sampler. There the hook also keeps the numpy and
  Python ``random`` states of the stop (gathered after every iteration, in that case only) and restores those
  instead, in the same ``before_train_epoch``, which ends in the same state. With ``num_workers > 0`` the fork
  loads the skipped batches in the workers, as upstream does.

* Validation during training is made RNG-neutral: the hook saves all RNG states in ``before_val`` and puts them
  back in ``after_val`` (creating the validation loader's iterator draws a seed from torch's generator). So a
  run validates or not, at any interval, without changing its training, and a run that stopped right after a
  validation resumes onto the same random stream.

Not covered: numpy/random draws in the main process outside the data pipeline between the start and the stop
(e.g. a custom hook drawing from ``np.random`` during training), and torch draws inside the data pipeline with
``num_workers=0``; both would make the resumed run differ (validly) from an uninterrupted one.

Conditions for an exact resume: a fixed ``randomness.seed`` (mmengine re-seeds from the checkpoint's seed only
after the data loaders were built), the same number of processes (a different one is reported and the torch
states are left as seeded) and the same hardware / library versions. ``docs/reliability.md`` lists what the
test suite checks.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather, all_gather_object, get_dist_info
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

#: Key of the per-rank states in the checkpoint dict.
CHECKPOINT_KEY = 'rng_states'


def get_torch_rng_state() -> Dict[str, torch.Tensor]:
    """This process's torch generator states: ``cpu`` and, with CUDA, ``cuda`` (current device)."""
    state = dict(cpu=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def set_torch_rng_state(state: Dict[str, torch.Tensor]) -> None:
    """Restores what :func:`get_torch_rng_state` returned (the CUDA state only where CUDA is available)."""
    torch.set_rng_state(state['cpu'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'].cpu())


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Puts every process's RNG states into checkpoints and restores them when the run resumes (see above).

    Add it to ``custom_hooks`` (all ESL configs of this repository do)::

        custom_hooks = [..., dict(type='RNGStateHook')]

    A checkpoint written without the hook resumes as before (seeded RNG), with a warning.
    """

    # after_train_iter must run after every hook that may draw random numbers in it (EMATeacherHook is 'NORMAL',
    # LoggerHook 'BELOW_NORMAL') and before CheckpointHook ('VERY_LOW'), which writes the states gathered here.
    priority = 'LOW'

    def __init__(self) -> None:
        self._pending: Optional[Dict[str, Any]] = None
        self._pending_iter: Optional[int] = None
        self._data_start: Optional[Dict[str, Any]] = None  # numpy/random states at the start of the first epoch
        self._data_starts: Optional[List[Optional[Dict[str, Any]]]] = None  # of every rank
        self._latest: Optional[Dict[str, List[torch.Tensor]]] = None  # every rank's torch states, last iteration
        self._around_val: Optional[Dict[str, Any]] = None
        self._skips_pipeline = False  # the loop resumes without re-running the pipeline in this process
        self._data_now: Optional[List[Dict[str, Any]]] = None  # every rank's numpy/random states, last iteration

    def before_val(self, runner) -> None:
        """Saves every RNG state, so that validation does not change the training run's random stream."""
        self._around_val = dict(get_torch_rng_state(), numpy=np.random.get_state(), python=random.getstate())

    def after_val(self, runner) -> None:
        """Restores the states saved in :meth:`before_val`."""
        state, self._around_val = self._around_val, None
        if state is not None:
            set_torch_rng_state(state)
            np.random.set_state(state['numpy'])
            random.setstate(state['python'])

    @staticmethod
    def loop_skips_pipeline(runner) -> bool:
        """Whether a resume advances the data without running the pipeline in this process: the fork's
        ``skip_iter`` with ``num_workers=0`` (upstream's loop replays by loading every skipped batch)."""
        iterator = getattr(getattr(runner, 'train_loop', None), 'dataloader_iterator', None)
        return hasattr(iterator, 'skip_iter') and not getattr(runner.train_dataloader, 'num_workers', 0)

    def before_train_epoch(self, runner) -> None:
        """Fresh run: remembers the data pipeline's RNG states. Resumed run: restores them before the replay
        (or, where the loop does not replay the pipeline, the states of the stop)."""
        self._skips_pipeline = self.loop_skips_pipeline(runner)
        if runner.iter == 0:
            self._data_start = dict(numpy=np.random.get_state(), python=random.getstate())
        elif self._pending is not None and self._pending.get('data_start') is not None:
            self._data_start = self._pending['data_start']
            restore = self._pending.get('data_now') if self._skips_pipeline else self._data_start
            if restore is not None:
                np.random.set_state(restore['numpy'])
                random.setstate(restore['python'])
        self._data_starts = all_gather_object(self._data_start)  # once per run; every rank calls it

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Gathers every rank's torch states (a few kB): checkpoints are written by rank 0 only.

        Every rank calls this hook, unlike ``before_save_checkpoint`` (mmengine's ``Runner.save_checkpoint`` runs
        on rank 0 only), so this is where the collective can happen.
        """
        self._latest = {name: all_gather(value) for name, value in get_torch_rng_state().items()}
        if self._skips_pipeline:
            self._data_now = all_gather_object(dict(numpy=np.random.get_state(), python=random.getstate()))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Adds ``checkpoint['rng_states']``: one state dict per rank, as gathered after the last iteration."""
        latest = self._latest
        if latest is None:  # a checkpoint before the first iteration (one process's view)
            latest = {name: [value] for name, value in get_torch_rng_state().items()}
        world_size = len(latest['cpu'])
        data_starts = self._data_starts or [self._data_start] * world_size
        data_now = self._data_now or [None] * world_size
        checkpoint[CHECKPOINT_KEY] = [
            dict({name: values[rank].cpu() for name, values in latest.items()}, data_start=data_starts[rank],
                 **({'data_now': data_now[rank]} if data_now[rank] is not None else {}))
            for rank in range(world_size)]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keeps this rank's saved state until the first training iteration of the resumed run."""
        self._pending = None
        states = checkpoint.get(CHECKPOINT_KEY)
        iteration = checkpoint.get('meta', {}).get('iter')
        if not iteration:
            return  # a load_from for fine-tuning (or an iteration-0 checkpoint): nothing to continue
        rank, world_size = get_dist_info()
        if states is None:
            print_log('RNGStateHook: the checkpoint has no RNG states (saved without this hook); the resumed run '
                      'draws different CutMix boxes, anchors and negatives than an uninterrupted one would.',
                      logger='current', level=logging.WARNING)
            return
        if len(states) != world_size:
            print_log(f'RNGStateHook: the checkpoint holds the RNG states of {len(states)} processes, this run has '
                      f'{world_size}; keeping the seeded states (the resumed run is valid but not identical to an '
                      'uninterrupted one).', logger='current', level=logging.WARNING)
            return
        self._pending = states[rank]
        self._pending_iter = iteration

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Restores the pending state at the first iteration after the resume (after the data replay)."""
        if self._pending is None:
            return
        if runner.iter == self._pending_iter:
            set_torch_rng_state(self._pending)
            data = ('restored the numpy/random states of the stop (the loop skipped the data without the pipeline)'
                    if self._skips_pipeline else
                    'replayed the data pipeline from the numpy/random states of the run\'s start')
            print_log(f'RNGStateHook: restored the torch RNG states of iteration {runner.iter} and {data}.',
                      logger='current')
        self._pending = None
