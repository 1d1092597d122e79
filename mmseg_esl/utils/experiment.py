"""Run a training config as a user would (``tools/train.py`` in a subprocess) and read back its result.

Shared by ``tools/demo.py`` (the README's main command) and ``tools/benchmarks/ssl_gain.py``: each run is a
separate process, so every run starts from a clean mmengine state (loggers, message hub, registries), its
log streams to the terminal as it trains (mmengine's logger shows progress) and is kept in a file, and its
result is read from the files mmengine writes (``<work_dir>/<timestamp>/vis_data/scalars.json``).
"""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

__all__ = ['DEMO_METHODS', 'RunResult', 'data_root_options', 'last_val_metrics', 'run_training']

#: The demo's methods and their configs (relative to the repository root). All share the model, the labeled
#: batch and the schedule; they differ only in what they do with unlabeled images.
DEMO_METHODS: Dict[str, str] = {
    'Sup': 'configs/esl/supervised_effnet-lite0_demo.py',  # labeled images only
    'MT-hard': 'configs/esl/mt-hard_effnet-lite0_demo.py',  # mean teacher, CutMix, one-hot pseudo labels
    'MT-DSL': 'configs/esl/mt-dsl_effnet-lite0_demo.py',  # ... with dynamic soft labels (Eq. 3-6)
    'ESL': 'configs/esl/esl_effnet-lite0_demo.py',  # ... plus the pixel-to-part contrast (Eq. 7-12)
}


@dataclass
class RunResult:
    """What one training run produced.

    Attributes:
        name: Label of the run (e.g. ``'ESL'``).
        config: Config file that was trained.
        work_dir: Its work directory.
        seconds: Wall time of the whole ``tools/train.py`` process (setup, training, final validation).
        metrics: The last validation metrics logged (``mIoU``, ``aAcc``, ``mAcc``), empty if none.
        returncode: Exit code of the training process.
        log_file: Where its output was written.
        cfg_options: The ``--cfg-options`` given.
    """

    name: str
    config: str
    work_dir: str
    seconds: float
    metrics: Dict[str, float]
    returncode: int
    log_file: str
    cfg_options: List[str] = field(default_factory=list)

    @property
    def miou(self) -> Optional[float]:
        """Validation mIoU in percent, or None if the run logged none."""
        return self.metrics.get('mIoU')

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``, else ``platform``), for the machine line of benchmarks."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            names = re.findall(r'model name\s*:\s*(.+)', f.read())
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return cpu


def last_val_metrics(work_dir: str) -> Dict[str, float]:
    """The last validation record (the one with ``mIoU``) of the newest run in ``work_dir``.

    Args:
        work_dir: An mmengine work directory.

    Returns:
        The record's numeric entries (``mIoU``, ``aAcc``, ``mAcc``, ``step``, ...); empty if there is none.
    """
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        return {}
    record: Dict[str, float] = {}
    with open(files[-1]) as f:
        for line in f:
            entry = json.loads(line)
            if 'mIoU' in entry:
                record = {k: float(v) for k, v in entry.items() if isinstance(v, (int, float))}
    return record


def data_root_options(config: str, data_root: str) -> List[str]:
    """``--cfg-options`` that set every ``data_root`` of a config (datasets, concat members, hook loaders).

    Args:
        config: Config file.
        data_root: The new root.

    Returns:
        ``['train_dataloader.dataset.datasets.0.data_root=...', ...]``, one per ``data_root`` key found
        (list entries addressed by index, as mmengine's ``--cfg-options`` accepts).
    """
    from mmengine.config import Config

    options: List[str] = []

    def walk(node, path: List[str]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == 'data_root' and isinstance(value, str):
                    options.append('.'.join(path + [key]) + f'={data_root}')
                else:
                    walk(value, path + [str(key)])
        elif isinstance(node, (list, tuple)):
            for index, value in enumerate(node):
                walk(value, path + [str(index)])

    cfg = Config.fromfile(config)
    walk(cfg.to_dict(), [])
    return options


def run_training(name: str, config: str, work_dir: str, *, train_script: str, cfg_options: Sequence[str] = (),
                 python: str = sys.executable, echo: bool = True, env: Optional[Dict[str, str]] = None) -> RunResult:
    """Trains ``config`` with ``python train_script config --work-dir work_dir --cfg-options ...``.

    Output goes to ``<work_dir>/train_output.log`` and, with ``echo``, to this process's stdout as it comes.

    Args:
        name: Label of the run.
        config: Config file.
        work_dir: Work directory (created).
        train_script: Path of ``tools/train.py``.
        cfg_options: ``key=value`` overrides.
        python: Interpreter.
        echo: Stream the output to stdout.
        env: Environment of the subprocess (default: this one).

    Returns:
        The :class:`RunResult`; ``returncode != 0`` means the run failed (see ``log_file``).
    """
    os.makedirs(work_dir, exist_ok=True)
    log_file = osp.join(work_dir, 'train_output.log')
    cmd = [python, train_script, config, '--work-dir', work_dir]
    if cfg_options:
        cmd += ['--cfg-options', *cfg_options]
    start = time.perf_counter()
    with open(log_file, 'w') as log, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                      text=True, bufsize=1, env=env) as proc:
        log.write(' '.join(cmd) + '\n')
        for line in proc.stdout:
            log.write(line)
            if echo:
                sys.stdout.write(line)
                sys.stdout.flush()
        returncode = proc.wait()
    seconds = time.perf_counter() - start
    return RunResult(name=name, config=config, work_dir=work_dir, seconds=seconds,
                     metrics=last_val_metrics(work_dir), returncode=returncode, log_file=log_file,
                     cfg_options=list(cfg_options))
