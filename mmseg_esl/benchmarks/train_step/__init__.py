"""The parts of ``tools/benchmarks/train_step.py``: one ESL training iteration's time and memory against (a)-(d).

One module per concept: :mod:`.config` (the ESL config), :mod:`.variants` (the five methods' models and their
steady state), :mod:`.batch` (synthetic images and labels), :mod:`.optim` (the optimizer wrapper under AMP),
:mod:`.device` (synchronise, release), :mod:`.measure` (one iteration, timed; memory; sequential and interleaved
runs), :mod:`.components` (ESL's parts timed by wrapping them), :mod:`.isolation` (a run in a fresh process),
:mod:`.report` (JSON, markdown, console). The method itself is described in the script's docstring (its
``--help``) and in ``docs/benchmarks.md``.
"""
from .batch import blob_labels, make_batch
from .components import COMPONENT_LABELS, COMPONENTS, component_pass, infonce_backward_seconds, instrumented
from .config import BUILTIN_R101, builtin_r101_config, esl_imports, load_config, maybe_convert_sync_bn
from .device import release, synchronize
from .isolation import run_isolated, strip_options
from .measure import (
    STEADY_STATE_ITER,
    AnonPeakSampler,
    Run,
    anon_rss_bytes,
    cpu_step_memory,
    iqr,
    run_interleaved,
    run_method,
    summarize,
    timed_step,
)
from .optim import AMP_MODES, CPUAutocastOptimWrapper, make_optim_wrapper
from .report import (
    add_ratios,
    components_table,
    machine_name,
    markdown_tables,
    meta_info,
    print_run,
    record,
    write_report,
)
from .variants import (
    METHOD_LABELS,
    METHODS,
    build_model,
    calibrate_batchnorm,
    ema_hook_of,
    make_teacher_confident,
    prepare_steady_state,
    semi_cfg_for,
    use_floor_contrast,
)

__all__ = [
    'AMP_MODES', 'AnonPeakSampler', 'BUILTIN_R101', 'COMPONENTS', 'COMPONENT_LABELS', 'CPUAutocastOptimWrapper',
    'METHODS', 'METHOD_LABELS', 'Run', 'STEADY_STATE_ITER', 'add_ratios', 'anon_rss_bytes', 'blob_labels',
    'build_model', 'builtin_r101_config', 'calibrate_batchnorm', 'component_pass', 'components_table',
    'cpu_step_memory', 'ema_hook_of', 'esl_imports', 'infonce_backward_seconds', 'instrumented', 'iqr',
    'load_config', 'machine_name', 'make_batch', 'make_optim_wrapper', 'make_teacher_confident', 'markdown_tables',
    'maybe_convert_sync_bn', 'meta_info', 'prepare_steady_state', 'print_run', 'record', 'release', 'run_interleaved',
    'run_isolated', 'run_method', 'semi_cfg_for', 'strip_options', 'summarize', 'synchronize', 'timed_step',
    'use_floor_contrast', 'write_report'
]
