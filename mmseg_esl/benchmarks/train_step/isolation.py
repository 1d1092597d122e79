"""One (method, AMP) run in a fresh process of the script, so that its memory is its own."""
from __future__ import annotations

import json
import os.path as osp
import subprocess
import sys
import tempfile
from typing import Dict, List, Sequence


def run_isolated(argv: Sequence[str], method: str, amp: str, *, script: str, env: Dict[str, str],
                 memory_only: bool = False) -> Dict:
    """Runs one (method, amp) in a fresh process of ``script`` (with ``argv``) and returns its result.

    ``env`` is the child's environment: the script's own at launch, before importing mmengine (whose OpenCV
    import prepends its library folder to ``LD_LIBRARY_PATH``). With ``memory_only`` the child runs 1 warm-up and
    1 timed iteration, then the 3 sampled iterations of :func:`~.measure.cpu_step_memory`, and no component
    pass; its timing is not reported.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = osp.join(tmp, 'result.json')
        drop = ['--json', '--md', '--methods', '--amp', '--amp-methods', '--isolate', '--time-budget', '--interleave']
        keep = strip_options(argv, drop + (['--components', '--iters', '--warmup'] if memory_only else []))
        cmd = [sys.executable, script, *keep, '--methods', method, '--amp', amp, '--isolate', 'never',
               '--single', method, '--single-amp', amp, '--single-out', out]
        env = dict(env)
        if memory_only:
            cmd += ['--iters', '1', '--warmup', '1']
            # glibc: a fixed mmap threshold returns every freed block of >= 64 KiB to the OS at once, so the peak
            # RSS follows the live tensors instead of heap blocks kept by the default dynamic threshold (which
            # saves page faults, hence only here, where no time is reported).
            env.update(MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='0')
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        if proc.returncode != 0 or not osp.isfile(out):
            tail = '\n'.join(proc.stdout.splitlines()[-30:])
            raise RuntimeError(f'{method} / {amp} failed in its subprocess (exit {proc.returncode}):\n{tail}')
        with open(out) as f:
            return json.load(f)


def strip_options(argv: Sequence[str], names: Sequence[str]) -> List[str]:
    """``argv`` without the given options and their values (``--opt v`` and ``--opt=v`` forms)."""
    out, skip = [], False
    argv = list(argv)
    for i, token in enumerate(argv):
        if skip:
            if token.startswith('--'):
                skip = False
            else:
                continue
        name = token.split('=', 1)[0]
        if name in names:
            skip = '=' not in token and i + 1 < len(argv)
            continue
        out.append(token)
    return out
