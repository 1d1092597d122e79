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

__all__ = ['DEMO_METHODS', 'DEMO_SPLITS', 'RunResult', 'data_root_options', 'derive_config', 'last_val_metrics',
           'run_training', 'schedule_options', 'teacher_phase_options', 'val_history']

#: The demo's methods and their configs (relative to the repository root). All share the model, the labeled
#: batch and the schedule; they differ only in what they do with unlabeled images.
DEMO_METHODS: Dict[str, str] = {
    'Sup': 'configs/esl/supervised_effnet-lite0_demo.py',  # labeled images only
    'MT-hard': 'configs/esl/mt-hard_effnet-lite0_demo.py',  # mean teacher, CutMix, one-hot pseudo labels
    'MT-DSL': 'configs/esl/mt-dsl_effnet-lite0_demo.py',  # ... with dynamic soft labels (Eq. 3-6)
    'ESL': 'configs/esl/esl_effnet-lite0_demo.py',  # ... plus the pixel-to-part contrast (Eq. 7-12)
    'Full': 'configs/esl/full_effnet-lite0_demo.py',  # upper bound: every training image with its label
}
#: The split files the demo configs name (relative to the data root), by role.
DEMO_SPLITS: Dict[str, str] = {
    'labeled': 'ImageSets/Segmentation/labeled.txt',
    'unlabeled': 'ImageSets/Segmentation/unlabeled.txt',
    'train': 'ImageSets/Segmentation/train.txt',  # labeled + unlabeled: Full
    'val': 'ImageSets/Segmentation/val.txt',
    'dev': 'ImageSets/Segmentation/dev.txt',
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


def val_history(work_dir: str) -> List[Dict[str, float]]:
    """Every validation record (those with ``mIoU``) of the newest run in ``work_dir``, in order.

    Args:
        work_dir: An mmengine work directory.

    Returns:
        One dict of numeric entries per validation (``mIoU``, ``teacher/mIoU``, ``student/mIoU``, ``step``, ...).
    """
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        return []
    records = []
    with open(files[-1]) as f:
        for line in f:
            entry = json.loads(line)
            if 'mIoU' in entry:
                records.append({k: float(v) for k, v in entry.items() if isinstance(v, (int, float))})
    return records


def last_val_metrics(work_dir: str) -> Dict[str, float]:
    """The last validation record (the one with ``mIoU``) of the newest run in ``work_dir``.

    Args:
        work_dir: An mmengine work directory.

    Returns:
        The record's numeric entries (``mIoU``, ``aAcc``, ``mAcc``, ``step``, ...); empty if there is none.
    """
    history = val_history(work_dir)
    return history[-1] if history else {}


def schedule_options(iters: int, val_interval: Optional[int] = None) -> List[str]:
    """``--cfg-options`` that set a config's iterations (poly decay to the end, a checkpoint at the end) and its
    validation interval (default: only at the end)."""
    return [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={val_interval or iters}',
            f'default_hooks.checkpoint.interval={iters}', f'param_scheduler.0.end={iters}']


def _walk(node, visit) -> None:
    """Calls ``visit(dict_node)`` on every dict inside ``node`` (nested dicts and lists), parents first."""
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _walk(value, visit)


def teacher_phase_options(cfg, iters: int) -> List[str]:
    """``--cfg-options`` that keep each ``EMATeacherHook``'s ``sup_only_iters`` and ``copy_iters`` at their share
    of ``cfg``'s run when it is changed to ``iters`` iterations (rounded): a 40-iteration check of a config with a
    125-of-1000 supervised-only phase gets 5 such iterations, not a run without any unlabeled term."""
    factor = iters / int(cfg.train_cfg.max_iters)
    options = []
    for index, hook in enumerate(cfg.get('custom_hooks', [])):
        if hook.get('type') == 'EMATeacherHook':
            options += [f'custom_hooks.{index}.{key}={int(round(hook[key] * factor))}'
                        for key in ('sup_only_iters', 'copy_iters') if hook.get(key)]
    return options


def derive_config(config: str, *, data_root: str, splits: Dict[str, str], seed: int,
                  classes: Optional[Sequence[str]] = None, img_dir: Optional[str] = None,
                  ann_dir: Optional[str] = None, img_suffix: Optional[str] = None,
                  seg_map_suffix: Optional[str] = None, iters: Optional[int] = None,
                  val_interval: Optional[int] = None, validations: Optional[int] = None,
                  options: Sequence[str] = ()):
    """A demo config moved onto another VOC-layout dataset and schedule, as one self-contained ``Config``.

    Every ``data_root`` becomes ``data_root``; every ``ann_file``/``split_file`` that names a demo split
    (:data:`DEMO_SPLITS`) becomes ``splits[role]`` when given; with ``classes`` every ``metainfo`` gets them (and
    the VOC palette) and every ``num_classes`` their number; ``img_dir``/``ann_dir`` replace ``data_prefix``,
    the suffixes ``img_suffix``/``seg_map_suffix``. Then the seed, the schedule (:func:`schedule_options`; with
    ``validations`` and no ``val_interval``, that many evenly spaced validations) and ``options`` (mmengine
    ``--cfg-options`` syntax) are merged; the teacher's phases keep their share of the run
    (:func:`teacher_phase_options`) unless ``options`` set them.

    Args:
        config: The method's config file.
        data_root: Dataset root.
        splits: ``{role: split file relative to data_root}`` for roles of :data:`DEMO_SPLITS`.
        seed: ``randomness.seed``.
        classes: Class names in label order, or None to keep the config's.
        img_dir: Image folder under the root, or None.
        ann_dir: Label folder under the root, or None.
        img_suffix: Image suffix, or None.
        seg_map_suffix: Label suffix, or None.
        iters: Iterations, or None to keep the config's.
        val_interval: Validation interval, or None.
        validations: Number of validations when ``val_interval`` is None, or None for the config's interval.
        options: Further ``key=value`` overrides.

    Returns:
        The derived ``mmengine.config.Config`` (``pretty_text`` is a config file that trains it).
    """
    import argparse

    from mmengine.config import Config, DictAction

    from ..testing.tiny_voc import voc_palette

    cfg = Config.fromfile(config)
    tree = cfg.to_dict()
    by_path = {DEMO_SPLITS[role]: path for role, path in splits.items() if role in DEMO_SPLITS and path}

    def visit(node: dict) -> None:
        for key, value in list(node.items()):
            if key == 'data_root' and isinstance(value, str):
                node[key] = data_root
            elif key in ('ann_file', 'split_file') and value in by_path:
                node[key] = by_path[value]
            elif key == 'metainfo' and isinstance(value, dict) and classes:
                node[key] = dict(classes=tuple(classes), palette=voc_palette(len(classes)))
            elif key == 'num_classes' and isinstance(value, int) and classes:
                node[key] = len(classes)
            elif key == 'data_prefix' and isinstance(value, dict) and (img_dir or ann_dir):
                node[key] = dict(value, **({'img_path': img_dir} if img_dir else {}),
                                 **({'seg_map_path': ann_dir} if ann_dir else {}))
            elif key == 'img_suffix' and img_suffix:
                node[key] = img_suffix
            elif key == 'seg_map_suffix' and seg_map_suffix:
                node[key] = seg_map_suffix

    _walk(tree, visit)
    derived = Config(tree)
    total = iters or int(derived.train_cfg.max_iters)
    if val_interval is None and validations:
        val_interval = max(1, total // validations)
    merged = [f'randomness.seed={seed}', *schedule_options(total, val_interval),
              *teacher_phase_options(derived, total), *options]
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    derived.merge_from_dict(parser.parse_args(['--cfg-options', *merged]).cfg_options)
    return derived


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
