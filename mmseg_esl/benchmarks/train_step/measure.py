"""Measuring a method at an AMP mode: its iteration timed, the memory it needs, methods run in turn or round-robin."""
from __future__ import annotations

import argparse
import gc
import math
import time
import types
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config

from .batch import make_batch
from .components import component_pass
from .device import release, synchronize
from .optim import make_optim_wrapper
from .variants import build_model, calibrate_batchnorm, ema_hook_of, make_teacher_confident, prepare_steady_state

#: ``runner.iter`` seen by EMATeacherHook: far past its warm-up, so the decay is the configured one.
STEADY_STATE_ITER = 1_000_000


def anon_rss_bytes() -> Optional[int]:
    """Anonymous resident memory of this process (``RssAnon`` of ``/proc/self/status``), None where unknown.

    Tensors live in anonymous memory; shared-library pages do not (the peak RSS counts those too, and on a
    machine whose kernel reclaims cold pages their count moves by hundreds of MB from run to run).
    """
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('RssAnon:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class AnonPeakSampler:
    """Samples :func:`anon_rss_bytes` every ``interval`` seconds in a thread; ``peak`` is the largest value.

    torch releases the GIL inside its operators, so the thread samples during them; a tensor that lives for
    less than ``interval`` may be missed. Reading the file costs ~30 µs a sample (a few % of one core).
    """

    def __init__(self, interval: float = 5e-4) -> None:
        import threading
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, anon_rss_bytes() or 0)

    def __enter__(self) -> AnonPeakSampler:
        self.peak = anon_rss_bytes() or 0
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anon_rss_bytes() or 0)


class Run:
    """One method at one AMP mode: the model, its optimizer, the batch, and one training iteration."""

    def __init__(self, cfg: Config, method: str, amp: str, args: argparse.Namespace) -> None:
        self.method, self.amp, self.device = method, amp, args.device
        self.model = build_model(cfg, method, args.device, args.seed)
        self.esl = method != 'sup'
        num_classes = (self.model.student if self.esl else self.model).decode_head.num_classes
        # (a) gets the labeled images only; the others [labeled | unlabeled | partners] as the sampler lays it out.
        unlabeled = args.unlabeled if self.esl else 0
        partners = unlabeled if self.esl and self.model.semi_train_cfg.cutmix.partner == 'extra' else 0
        self.inputs, self.samples = make_batch(num_classes=num_classes, labeled=args.labeled, unlabeled=unlabeled,
                                               partners=partners, crop=args.crop, device=args.device,
                                               seed=args.seed)
        self.num_labeled = args.labeled
        self.hook = ema_hook_of(cfg) if self.esl else None
        self.confidence: Dict[str, float] = {}
        student = self.model.student if self.esl else self.model
        calibrate_batchnorm(student, self.inputs[:args.labeled + unlabeled])  # what the student sees
        if self.esl:
            from mmseg_esl.engine.hooks.ema_teacher_hook import ema_update_
            ema_update_(self.model.teacher, student, 0.0)  # the teacher starts as a copy, as in training
            prepare_steady_state(self.model, args.seed)
            if args.confident_teacher:
                contrast_cfg = cfg.model.get('semi_train_cfg', {}).get('loss_contrast') or {}
                zeta = (self.model.contrast_loss.conf_thresh if self.model.contrast_loss is not None
                        else contrast_cfg.get('conf_thresh', 0.95))  # (b), (c): ζ of the config's (e)
                # EMA steps this run takes: warm-up, timed, component (+ backward probe) and CPU memory iterations.
                steps = args.warmup + args.iters + (args.component_iters if args.components else 0) + 4
                self.confidence = make_teacher_confident(
                    self.model, self.inputs[self.num_labeled:], zeta=zeta, fraction=args.confident_fraction,
                    margin_steps=steps, decay=self.hook.decay)
        self.optim_wrapper = make_optim_wrapper(cfg, self.model, method, amp, args.device)
        self.iteration = 0

    def step(self) -> Dict[str, float]:
        """One training iteration as mmengine runs it (after the data preprocessor); returns the logged values."""
        model = self.model
        if self.hook is not None:
            runner = types.SimpleNamespace(model=model, iter=STEADY_STATE_ITER + self.iteration)
            self.hook.before_train_iter(runner, batch_idx=self.iteration)
        with self.optim_wrapper.optim_context(model):
            if self.esl:
                losses = model.loss(self.inputs, self.samples)
            else:
                losses = model.loss(self.inputs[:self.num_labeled], self.samples[:self.num_labeled])
        parsed, log_vars = model.parse_losses(losses)
        self.optim_wrapper.update_params(parsed)
        if self.hook is not None:
            self.hook.after_train_iter(runner, batch_idx=self.iteration)
        self.iteration += 1
        return {key: float(value.item()) for key, value in log_vars.items()}  # as RuntimeInfoHook logs them


def iqr(values: Sequence[float]) -> float:
    return float(np.percentile(values, 75) - np.percentile(values, 25))


def timed_step(run: Run) -> Tuple[float, Dict[str, float]]:
    """One synchronised, timed iteration: ``(seconds, logged values)``."""
    synchronize(run.device)
    start = time.perf_counter()
    log = run.step()
    synchronize(run.device)
    return time.perf_counter() - start, log


def summarize(run: Run, times: List[float], logs: List[Dict[str, float]]) -> Dict:
    """Median and IQR of the step times, and the means of the logged anchors, confidence and loss."""
    result = dict(step_ms_median=1e3 * float(np.median(times)), step_ms_iqr=1e3 * iqr(times),
                  step_ms=[round(1e3 * t, 3) for t in times])
    for key, name in (('contrast.anchors', 'anchors_mean'), ('unsup.teacher_conf', 'teacher_conf_mean'),
                      ('loss', 'loss_mean')):
        values = [log[key] for log in logs if key in log]
        result[name] = float(np.mean(values)) if values else (0.0 if name == 'anchors_mean' else None)
    result['finite_losses'] = all(math.isfinite(v) for log in logs for k, v in log.items() if 'loss' in k)
    if run.confidence:
        result['teacher_scale'] = run.confidence['scale']
        result['confident_fraction'] = run.confidence['fraction']
    return result


def run_method(cfg: Config, method: str, amp: str, args: argparse.Namespace) -> Dict:
    """Builds, warms up and times one (method, amp); with ``--components`` also the component pass of (e).

    The peak memory covers the timed iterations: on CUDA ``max_memory_allocated`` (reset after the warm-up); on
    CPU, in a child of ``--isolate`` only, the peak RSS minus the RSS after building model, optimizer and batch.
    """
    device = args.device
    release(device)
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    run = Run(cfg, method, amp, args)
    for _ in range(args.warmup):
        run.step()
    synchronize(device)
    if device == 'cuda':
        static = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times, logs = zip(*[timed_step(run) for _ in range(args.iters)])
    result = summarize(run, list(times), list(logs))
    if device == 'cuda':
        result.update(peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30, static_mem_gib=static / 2**30,
                      peak_reserved_gib=torch.cuda.max_memory_reserved() / 2**30)
    else:
        result['peak_rss_gib'] = cpu_step_memory(run) if args.single is not None else None
    if args.components and method == 'esl':
        result['components_raw'] = component_pass(run, args.component_iters)
    del run
    release(device)
    return result


def cpu_step_memory(run: Run, steps: int = 3) -> Optional[float]:
    """GiB of anonymous memory that ``steps`` more iterations need above the state before them (CPU).

    Measured after the timed iterations (the sampler would perturb them): the baseline holds the model, the
    teacher, optimizer state, bank and batch; the peak adds activations, gradients and every temporary.
    """
    gc.collect()
    base = anon_rss_bytes()
    if base is None:
        return None
    with AnonPeakSampler() as sampler:
        for _ in range(steps):
            run.step()
    return max(sampler.peak - base, 0) / 2**30


def run_interleaved(cfg: Config, methods: Sequence[str], amp: str, args: argparse.Namespace) -> Dict[str, Dict]:
    """Times ``methods`` round-robin, one iteration of each in turn (rotating the order), in one process.

    A slow drift of the machine's load (a shared CPU) then hits every method alike, so ratios are fair. All
    models are held at once, so no memory is reported here (``--isolate`` measures it in separate processes).
    """
    runs = {method: Run(cfg, method, amp, args) for method in methods}
    for run in runs.values():
        for _ in range(args.warmup):
            run.step()
    times: Dict[str, List[float]] = {m: [] for m in methods}
    logs: Dict[str, List[Dict[str, float]]] = {m: [] for m in methods}
    for i in range(args.iters):
        for method in methods[i % len(methods):] + methods[:i % len(methods)]:
            seconds, log = timed_step(runs[method])
            times[method].append(seconds)
            logs[method].append(log)
    results = {}
    for method, run in runs.items():
        results[method] = summarize(run, times[method], logs[method])
        results[method]['peak_mem_gib' if args.device == 'cuda' else 'peak_rss_gib'] = None
        if 'floor' in runs:  # same rounds: per-round differences cancel the load shared by both
            diff = 1e3 * (np.array(times[method]) - np.array(times['floor']))
            results[method]['paired_vs_floor'] = dict(
                diff_ms_mean=float(diff.mean()), diff_ms_sem=float(diff.std(ddof=1) / math.sqrt(len(diff)))
                if len(diff) > 1 else None,
                ratio_median=float(np.median(np.array(times[method]) / np.array(times['floor']))))
    if args.components and 'esl' in runs:
        results['esl']['components_raw'] = component_pass(runs['esl'], args.component_iters)
    del runs
    release(args.device)
    return results
