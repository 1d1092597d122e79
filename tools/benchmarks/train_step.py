"""Speed and peak memory of one ESL training iteration, against the baselines it builds on (issue 8).

From one ESL config (``model.type='ESLSegmentor'``), with the same model, crop and batch, this script times
full training iterations of five methods that differ only in ``semi_train_cfg``:

* ``sup`` (a): the wrapped segmentor alone (``model.segmentor`` built as a plain mmseg segmentor), its own
  ``loss()`` on the labeled images, plus the optimizer step. No teacher.
* ``mt-hard`` (b): ``ESLSegmentor`` with ``loss_unsup.mode='hard'`` and ``loss_contrast=None``: the teacher
  on the weak unlabeled views (and CutMix partners), one student pass over labeled + mixed images, EMA.
* ``mt-dsl`` (c): (b) with ``loss_unsup.mode='dsl'`` (Eq. 3-6).
* ``floor`` (d): what the method needs before any ESL-specific term: (b) plus the contrastive *inputs*, i.e.
  the projectors of student and teacher (both in the graph) and the teacher's pass over the labeled images.
  It is the config's own model with ``mode='hard'`` whose contrastive steps are replaced, in this script only
  (:func:`use_floor_contrast`, bound to the instance): no targets (Eq. 7, 9), a loss of ``0 * sum(z_s)``
  connected to the student's embedding, so that the projector runs forward and backward, and no bank or
  prototype update (Eq. 8, 12). Everything else is the real ``ESLSegmentor.loss()``.
* ``esl`` (e): the config as it is (DSL + pixel-to-part contrast, Eq. 11).

Each timed iteration is what mmengine runs for one ``train_step``, minus the data preprocessor (the random
batch already lies on the device): ``model.loss()`` inside ``optim_wrapper.optim_context`` (autocast under
AMP), ``model.parse_losses``, ``optim_wrapper.update_params`` (the config's optimizer, built by the config's
constructor, i.e. ``StudentOptimWrapperConstructor``), ``EMATeacherHook.after_train_iter`` (the config's hook,
with a stand-in runner at a steady-state iteration, so the decay is the configured one and not the warm-up's),
and the ``.item()`` of every logged value (as mmengine's ``RuntimeInfoHook`` does). Iterations are
synchronised (``torch.cuda.synchronize``) before and after; the table gives the median and the inter-quartile
range of ``--iters`` iterations after ``--warmup``. By default the methods run one after another;
``--interleave`` runs them round-robin in one process instead (one iteration of each in turn), so that a
shared machine's changing load hits all of them alike, and adds per-round differences to (d) with their
standard error.

**Steady state.** Before (d) and (e) run, the prototypes are random unit vectors with ``prototypes_ready`` set
and every queue of the memory bank is *pre-filled* (``fill = q``, random entries): a full bank is both the
state of a long run and the worst case (negatives are drawn over all filled slots; the InfoNCE matmul is
against all ``C·K·q`` slots in any case).

**A confident teacher.** A randomly initialised teacher is not confident (max probability ≈ 1/C), so the
unlabeled pixels would never pass ζ and the contrastive term would see labeled anchors only. Every model first
gets BatchNorm statistics of the batch (:func:`calibrate_batchnorm`, as after a long training; with the initial
(0, 1) statistics an eval-mode random network outputs nearly the same logits everywhere), and the teacher starts
as a copy of the student. With ``--confident-teacher`` (default on) the teacher's classifier ``conv_seg`` is then
re-centred (each class's mean logit over the batch is 0, so the arg-max varies from pixel to pixel) and scaled
by the smallest factor that lifts ``--confident-fraction`` (default 0.9) of the weak-view pixels above ζ, times
``1 / decay**n`` so that the ``n`` EMA steps of the run do not erode it (:func:`make_teacher_confident`). The
inputs are N(0, 1) images, the labels piecewise constant (a coarse grid of 3 classes per image, 5 % ignored
pixels). The JSON reports the anchors per iteration (``contrast.anchors``), the teacher's mean confidence and
the fraction that passed ζ: the benchmark measures ESL doing its full work (10 % of about 95 % of the pixels
as anchors; every part present in every image), not a case where it has nothing to contrast.

**Memory.** On CUDA, ``torch.cuda.max_memory_allocated`` over the timed iterations (reset after warm-up),
absolute, so it includes parameters, gradients, optimizer state, teacher, bank and prototypes. On CPU, each
(method, AMP mode) runs in a fresh subprocess of this script (``--isolate auto``, the CPU default): after its
timed iterations it runs 3 more while a thread samples the process's anonymous resident memory (``RssAnon``,
every 0.5 ms) and reports the peak minus the value before them, i.e. what a step needs on top of model,
teacher, optimizer state, bank and batch: activations, gradients, temporaries. (The peak RSS, ``ru_maxrss``,
never decreases in a process and also counts shared-library pages, whose number here varied by 0.3 GiB
between identical runs.) With ``--interleave`` the memory comes from short extra subprocesses whose glibc
returns every freed block of 64 KiB or more to the system at once (``MALLOC_MMAP_THRESHOLD_``).

**AMP.** ``--amp fp16,bf16`` uses mmengine's ``AmpOptimWrapper(dtype=...)`` on CUDA (dynamic loss scaling).
``AmpOptimWrapper`` asserts CUDA, so on CPU only ``bf16`` is offered, through :class:`CPUAutocastOptimWrapper`
(``torch.autocast('cpu', dtype=torch.bfloat16)`` around the forward, no loss scaling); ``fp16`` on CPU is
refused.

**Components** (``--components``): a separate pass of (e) iterations in which the functions of the real
path are wrapped by synchronised timers (so the pass is slower than the timed (e) iterations, and it runs
after them): DSL (``pseudo_label`` + the soft-CE forward), part grouping (Eq. 7, ``assign``), MAP (the two
mask-average-pools of ``update``, z^t for the bank and the L2-normalised E^t for Eq. 12), bank update
(``enqueue``), prototype update (the rest of ``update``: batch means and the momentum step of Eq. 12), anchor
sampling (Eq. 9 sampling, positive/negative draws, gathering the anchors), InfoNCE forward (Eq. 10) and,
measured right after on the captured tensors, InfoNCE backward, and the rest of the contrastive steps
(``contrast_targets``, ``loss_contrast``, ``update_bank_and_prototypes``: label downsampling, CutMix of the maps,
masks, class mean, and since 2026-12-06 the student projector's forward, which ``loss_contrast`` runs).
Percentages are of the median (e) step of the timed pass.

Examples::

    # CPU, small scale (docs/benchmarks.md): timing round-robin, memory in separate processes
    python tools/benchmarks/train_step.py --config configs/esl/esl_effnet-lite0_demo.py --crop 128 \\
        --labeled 4 --unlabeled 4 --iters 20 --warmup 3 --device cpu --threads 1 --interleave --components \\
        --json bench.json --md bench.md
    # GPU, paper scale (what tools/benchmarks/gpu_all.sh runs):
    python tools/benchmarks/train_step.py --config configs/esl/esl_r101_voc_1-8.py --crop 513 --labeled 8 \\
        --unlabeled 8 --device cuda --amp none,fp16,bf16 --amp-methods floor,esl --components
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

#: The environment this script was started with, for its child processes: importing mmengine imports OpenCV,
#: which prepends its own library folder to LD_LIBRARY_PATH; children started with that see other shared
#: libraries (their peak RSS grew by 0.3 GiB).
LAUNCH_ENV: Dict[str, str] = dict(os.environ)

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:  # run as a script from anywhere: the package of this checkout
    sys.path.insert(0, REPO_ROOT)

# The parts live in mmseg_esl.benchmarks.train_step, one module per concept; the names below are also what
# tools/benchmarks/prototype_init.py and the tests use from this script.
from mmseg_esl.benchmarks.train_step import (  # noqa: E402
    AMP_MODES,
    BUILTIN_R101,
    COMPONENTS,
    METHOD_LABELS,
    METHODS,
    AnonPeakSampler,
    Run,
    anon_rss_bytes,
    blob_labels,
    build_model,
    esl_imports,
    load_config,
    machine_name,
    markdown_tables,
    meta_info,
    record,
    release,
    run_interleaved,
    run_isolated,
    run_method,
    semi_cfg_for,
    strip_options,
    synchronize,
    write_report,
)

__all__ = ['AMP_MODES', 'AnonPeakSampler', 'BUILTIN_R101', 'COMPONENTS', 'LAUNCH_ENV', 'METHODS', 'METHOD_LABELS',
           'Run', 'anon_rss_bytes', 'blob_labels', 'build_model', 'esl_imports', 'load_config', 'machine_name',
           'main', 'parse_args', 'semi_cfg_for', 'strip_options', 'synchronize']


def _csv(choices: Sequence[str]) -> Callable[[str], List[str]]:
    def parse(text: str) -> List[str]:
        items = [t.strip() for t in text.split(',') if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f'expected a comma-separated subset of {",".join(choices)}, got {text!r}')
        return items
    return parse


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', required=True,
                        help=f'an ESLSegmentor config, or {BUILTIN_R101!r} (DeepLabv3+ R101, 21 classes, paper '
                             'settings, random init) when no paper config is at hand')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='override config keys, as in tools/train.py')
    parser.add_argument('--crop', type=int, default=513, help='square crop size (paper: 513)')
    parser.add_argument('--labeled', type=int, default=8, help='labeled images per iteration (paper: 8)')
    parser.add_argument('--unlabeled', type=int, default=8,
                        help="unlabeled images per iteration (paper: 8); cutmix.partner='extra' adds as many partners")
    parser.add_argument('--iters', type=int, default=20, help='timed iterations per run (>= 20 for the docs)')
    parser.add_argument('--warmup', type=int, default=5, help='untimed iterations before them')
    parser.add_argument('--device', default='auto', choices=('auto', 'cuda', 'cpu'))
    parser.add_argument('--methods', type=_csv(METHODS), default=list(METHODS),
                        help='comma-separated subset of ' + ','.join(METHODS))
    parser.add_argument('--amp', type=_csv(AMP_MODES), default=['none'],
                        help='comma-separated AMP modes: none (fp32), fp16, bf16')
    parser.add_argument('--amp-methods', type=_csv(METHODS), default=None,
                        help='methods run under the AMP modes other than none (default: all of --methods)')
    parser.add_argument('--components', action='store_true',
                        help='also time each ESL component (a separate instrumented pass of (e))')
    parser.add_argument('--component-iters', type=int, default=5, help='instrumented (e) iterations')
    parser.add_argument('--confident-teacher', dest='confident_teacher', action='store_true', default=True,
                        help='(default) scale the teacher classifier so that most pixels pass the confidence threshold')
    parser.add_argument('--no-confident-teacher', dest='confident_teacher', action='store_false',
                        help='keep the randomly initialised teacher (few or no unlabeled anchors)')
    parser.add_argument('--confident-fraction', type=float, default=0.9,
                        help='fraction of weak-view pixels the confident teacher puts above conf_thresh')
    parser.add_argument('--isolate', default='auto', choices=('auto', 'always', 'never'),
                        help='run every (method, amp) in a fresh subprocess (auto: on CPU, for the peak RSS)')
    parser.add_argument('--interleave', action='store_true',
                        help='time the methods of an AMP mode round-robin in one process (fair on a shared CPU); '
                             'with --isolate, memory comes from short separate runs')
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--time-budget', type=float, default=None,
                        help='seconds; runs that would start after it are skipped (recorded as skipped)')
    parser.add_argument('--json', default=None, help='write the results here (rewritten after every run)')
    parser.add_argument('--md', default=None, help='write the markdown tables here')
    # Internal: one (method, amp) run whose result goes to --single-out as JSON (used by --isolate).
    parser.add_argument('--single', default=None, choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument('--single-amp', default='none', choices=AMP_MODES, help=argparse.SUPPRESS)
    parser.add_argument('--single-out', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ('crop', 'labeled', 'unlabeled', 'iters', 'component_iters'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if args.warmup < 0:
        parser.error(f'--warmup must be >= 0, got {args.warmup}')
    if not 0.0 < args.confident_fraction < 1.0:
        parser.error(f'--confident-fraction must be in (0, 1), got {args.confident_fraction}')
    if args.device == 'auto':
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available (this torch build or machine has no GPU); use --device cpu')
    if args.device == 'cpu' and 'fp16' in args.amp:
        parser.error('--amp fp16 needs CUDA (mmengine AmpOptimWrapper); on CPU use --amp none,bf16 '
                     '(bf16 runs under torch.autocast("cpu"))')
    if args.amp_methods is None:
        args.amp_methods = list(args.methods)
    return args


def failure(exc: BaseException) -> Dict[str, str]:
    """The result entry of a run that raised: the error, and a hint for running out of GPU memory."""
    import traceback
    traceback.print_exc()
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        release('cuda')
        return dict(error=f'out of GPU memory ({str(exc).splitlines()[0][:160]}); reduce --labeled/--unlabeled '
                          'or --crop')
    return dict(error=f'{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ""}')


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    esl_imports()
    cfg = load_config(args.config, args.cfg_options)
    if args.device == 'cuda':
        torch.backends.cudnn.benchmark = bool(cfg.get('env_cfg', {}).get('cudnn_benchmark', False))

    if args.single is not None:  # child of --isolate: one run, result to --single-out
        result = run_method(cfg, args.single, args.single_amp, args)
        with open(args.single_out, 'w') as f:
            json.dump(result, f)
        return 0

    isolate = args.isolate == 'always' or (args.isolate == 'auto' and args.device == 'cpu')
    report: Dict = dict(meta=meta_info(args, argv), results={})
    report['meta'].update(isolated=isolate, interleaved=args.interleave, amp_methods=args.amp_methods,
                          component_iters=args.component_iters if args.components else None)
    start = time.perf_counter()
    for amp in args.amp:
        methods = [m for m in args.methods if amp == 'none' or m in args.amp_methods]
        if args.interleave:
            if args.time_budget is not None and time.perf_counter() - start > args.time_budget:
                for method in methods:
                    record(report, method, amp, dict(skipped=f'skipped: time budget of {args.time_budget:.0f} s '
                                                             'spent'), args)
                continue
            try:
                results = run_interleaved(cfg, methods, amp, args)
            except Exception as exc:  # noqa: BLE001  (recorded; the other AMP modes still run)
                results = {method: failure(exc) for method in methods}
            for method in methods:
                if isolate and 'error' not in results[method]:
                    try:
                        memory = run_isolated(argv, method, amp, script=osp.abspath(__file__), env=LAUNCH_ENV,
                                              memory_only=True)
                        for key in ('peak_rss_gib', 'peak_mem_gib', 'static_mem_gib', 'peak_reserved_gib'):
                            if key in memory:
                                results[method][key] = memory[key]
                    except Exception as exc:  # noqa: BLE001
                        results[method]['memory_error'] = failure(exc)['error']
                record(report, method, amp, results[method], args)
            continue
        for method in methods:
            if args.time_budget is not None and time.perf_counter() - start > args.time_budget:
                record(report, method, amp, dict(skipped=f'skipped: time budget of {args.time_budget:.0f} s spent'),
                       args)
                continue
            try:
                result = (run_isolated(argv, method, amp, script=osp.abspath(__file__), env=LAUNCH_ENV) if isolate
                          else run_method(cfg, method, amp, args))
            except Exception as exc:  # noqa: BLE001  (recorded; the other runs still run)
                result = failure(exc)
            record(report, method, amp, result, args)
    if report.get('components_by_amp'):
        first = next(iter(report['components_by_amp']))
        report['components'] = report['components_by_amp'][first]
        report['meta']['components_amp'] = first
    report['meta']['wall_s'] = time.perf_counter() - start
    write_report(report, args)
    print('\n' + markdown_tables(report))
    if args.json:
        print(f'\nJSON: {args.json}')
    failed = [f'{m}/{a}' for m, by_amp in report['results'].items() for a, r in by_amp.items() if 'error' in r]
    if failed:
        print(f'\nFAILED runs: {", ".join(failed)} (see the errors above and in the JSON)', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
