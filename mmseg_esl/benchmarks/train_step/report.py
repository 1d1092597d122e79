"""The report of a benchmark: run metadata, step-time ratios, the component table, JSON, markdown and console lines."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import os.path as osp
import platform
from typing import Dict, Optional, Sequence

import torch

from .components import COMPONENT_LABELS, COMPONENTS
from .optim import AMP_MODES
from .variants import METHOD_LABELS, METHODS


def machine_name(device: str) -> str:
    from mmseg_esl.utils.experiment import cpu_name
    cpu = cpu_name()
    text = f'{cpu}, {os.cpu_count()} CPU(s) visible, torch threads {torch.get_num_threads()}'
    if device == 'cuda':
        props = torch.cuda.get_device_properties(0)
        text = f'{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}; ' + text
    return text


def meta_info(args: argparse.Namespace, argv: Sequence[str]) -> Dict:
    import mmcv
    import mmengine
    import mmseg
    return dict(
        command='python tools/benchmarks/train_step.py ' + ' '.join(argv),
        device=args.device, device_name=machine_name(args.device), torch=torch.__version__, mmseg=mmseg.__version__,
        mmcv=mmcv.__version__, mmengine=mmengine.__version__, python=platform.python_version(), config=args.config,
        cfg_options=args.cfg_options, crop=args.crop, labeled=args.labeled, unlabeled=args.unlabeled,
        iters=args.iters, warmup=args.warmup, confident_teacher=args.confident_teacher,
        confident_fraction=args.confident_fraction, date=datetime.datetime.now().isoformat(timespec='seconds'))


def add_ratios(results: Dict[str, Dict[str, Dict]]) -> None:
    """``ratio_vs_sup`` and ``ratio_vs_floor``: step-time ratios at the same AMP mode (None when missing)."""
    for by_amp in results.values():
        for amp, res in by_amp.items():
            for key, ref in (('ratio_vs_sup', 'sup'), ('ratio_vs_floor', 'floor')):
                base = results.get(ref, {}).get(amp, {}).get('step_ms_median')
                own = res.get('step_ms_median')
                res[key] = own / base if own is not None and base else None


def components_table(raw: Dict[str, float], step_ms: Optional[float]) -> Dict[str, Dict[str, Optional[float]]]:
    reference = step_ms or raw.get('instrumented_step')
    return {name: dict(ms=raw[name], pct_of_step=100.0 * raw[name] / reference if reference else None)
            for name in COMPONENTS if name in raw}


def _fmt(value: Optional[float], spec: str, suffix: str = '') -> str:
    return '–' if value is None else f'{value:{spec}}{suffix}'


def markdown_tables(report: Dict) -> str:
    meta = report['meta']
    mem_key = 'peak_mem_gib' if meta['device'] == 'cuda' else 'peak_rss_gib'
    mem_name = 'peak mem (GiB, max allocated)' if meta['device'] == 'cuda' else 'step memory (GiB, anon. RSS)'
    lines = [f'| method | AMP | step ms (median) | IQR ms | ×(a) | ×(d) | {mem_name} | anchors / iter |',
             '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |']
    for method in METHODS:
        for amp in AMP_MODES:
            res = report['results'].get(method, {}).get(amp)
            if res is None:
                continue
            if 'error' in res or 'skipped' in res:
                lines.append(f'| {METHOD_LABELS[method]} | {amp} | {res.get("error") or res.get("skipped")} '
                             '| | | | | |')
                continue
            lines.append(
                f'| {METHOD_LABELS[method]} | {amp} | {res["step_ms_median"]:.1f} | {res["step_ms_iqr"]:.1f} | '
                f'{_fmt(res.get("ratio_vs_sup"), ".3f")} | {_fmt(res.get("ratio_vs_floor"), ".3f")} | '
                f'{_fmt(res.get(mem_key), ".3f")} | {res.get("anchors_mean", 0):.0f} |')
    paired = [(method, amp, res['paired_vs_floor']) for method in METHODS for amp in AMP_MODES
              for res in [report['results'].get(method, {}).get(amp)] if res and 'paired_vs_floor' in res
              and method != 'floor']
    if paired:
        lines += ['', 'Interleaved rounds, each method against (d) in the same round: mean ± standard error of the '
                  'per-round step-time difference, and the median per-round ratio:', '',
                  '| method | AMP | Δ vs (d) ms | median ratio vs (d) |', '| --- | --- | ---: | ---: |']
        for method, amp, entry in paired:
            sem = _fmt(entry['diff_ms_sem'], '.1f')
            lines.append(f'| {METHOD_LABELS[method]} | {amp} | {entry["diff_ms_mean"]:+.1f} ± {sem} | '
                         f'{entry["ratio_median"]:.3f} |')
    for amp, comps in report.get('components_by_amp', {}).items():
        step = report['results'].get('esl', {}).get(amp, {}).get('step_ms_median')
        lines += ['', f'ESL components, AMP {amp} (medians of {meta.get("component_iters")} instrumented (e) '
                  f'iterations; % of the median (e) step, {_fmt(step, ".1f")} ms):', '',
                  '| component | ms | % of (e) step |', '| --- | ---: | ---: |']
        total = 0.0
        for name, entry in comps.items():
            total += entry['ms']
            lines.append(f'| {COMPONENT_LABELS[name]} | {entry["ms"]:.2f} | {_fmt(entry["pct_of_step"], ".2f")} |')
        lines.append(f'| sum | {total:.2f} | {_fmt(100 * total / step if step else None, ".2f")} |')
    return '\n'.join(lines)


def write_report(report: Dict, args: argparse.Namespace) -> None:
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
    if args.md:
        os.makedirs(osp.dirname(osp.abspath(args.md)), exist_ok=True)
        with open(args.md, 'w') as f:
            f.write(markdown_tables(report) + '\n')


def print_run(method: str, amp: str, res: Dict) -> None:
    if 'error' in res or 'skipped' in res:
        print(f'== {METHOD_LABELS[method]} / {amp}: {res.get("error") or res.get("skipped")}', flush=True)
        return
    mem = res.get('peak_mem_gib', res.get('peak_rss_gib'))
    print(f'== {METHOD_LABELS[method]} / {amp}: {res["step_ms_median"]:.1f} ms (IQR {res["step_ms_iqr"]:.1f}), '
          f'peak {_fmt(mem, ".3f")} GiB, anchors {res.get("anchors_mean", 0):.0f}', flush=True)



def record(report: Dict, method: str, amp: str, result: Dict, args: argparse.Namespace) -> None:
    """Stores one run's result (its component table apart), updates the ratios and rewrites the outputs."""
    raw = result.pop('components_raw', None)
    report['results'].setdefault(method, {})[amp] = result
    if raw is not None:
        report.setdefault('components_by_amp', {})[amp] = components_table(raw, result.get('step_ms_median'))
        report.setdefault('components_instrumented_step_ms', {})[amp] = raw.get('instrumented_step')
    add_ratios(report['results'])
    print_run(method, amp, result)
    write_report(report, args)
