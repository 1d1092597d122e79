"""The InfoNCE path of ESL (Eq. 10) never allocates an anchors x negatives x dim tensor: a peak-memory test.

Method. Each measurement runs in a fresh Python process (peak RSS never decreases within a process): it builds
the inputs, runs the path once at a tiny size (lazy initialisations), then records its resident set size
(``/proc/self/statm``), runs the forward and backward of the path, and reports ``VmHWM`` of
``/proc/self/status`` (the peak RSS of the process's own address space). Not ``ru_maxrss``: Linux carries the
parent's high-water mark across fork/exec into it, so a child of a 2 GB pytest process reports >= 2 GB (seen in
the full suite after the config sweep). The growth ``peak - before`` bounds from above the memory the call held
at its peak: torch's CPU allocator does not cache, large tensors are their own ``mmap``\\ s and RSS counts their
touched pages, so a materialised (A, N_s, L) tensor would show up in full. (``tracemalloc`` does not see torch's
allocations, and the profiler reports per-operator allocations, not the peak of a sequence of them.)

Sizes are chosen so that the two candidate formulas differ by more than 50x: the naive one,
``A x N_s x L x 4`` bytes (the gathered negatives, 4.3 GB here), and the one of
:func:`part_infonce_from_bank`, ``A x Q x 4`` (the whole anchor x bank similarity matrix, 34 MB here; chunked
into ``chunk_size`` anchors at a time it is 8 MB) plus ``A x (1 + N_s)`` logits and indices. The tests assert
the growth is far below the naive formula and of the order of the bank formula.
"""
import json
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO_ROOT, clean_env

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc/self/statm (Linux)')

ANCHORS, BANK, DIM, NEGATIVES, CHUNK = 8192, 1024, 512, 255, 2048
NAIVE_BYTES = ANCHORS * NEGATIVES * DIM * 4  # 4.3 GB
BANK_BYTES = ANCHORS * BANK * 4  # 34 MB: A x Q similarities (all chunks at once)
LOGIT_BYTES = ANCHORS * (1 + NEGATIVES) * (4 + 8)  # fp32 logits and int64 column indices, 25 MB
MiB = 2**20

_PRELUDE = '''
import gc, json, os, sys
import torch
torch.set_num_threads(1)

def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')

def measure(run):
    run(tiny=True)  # lazy initialisations of the path, not counted
    gc.collect()
    before = rss()
    run(tiny=False)
    with open('/proc/self/status') as f:  # VmHWM: peak RSS of this address space (kB), reset by exec
        peak = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:')) * 1024
    print(json.dumps(dict(before=before, peak=peak)))
'''

_INFONCE = '''
from mmseg_esl.models.losses.part_contrast import part_infonce_from_bank
A, Q, L, NS, CHUNK = {sizes}
g = torch.Generator().manual_seed(0)
anchors = torch.randn(A, L, generator=g, requires_grad=True)
bank = torch.randn(Q, L, generator=g)
pos = torch.randint(0, Q, (A,), generator=g)
neg = torch.randint(0, Q, (A, NS), generator=g)

def run(tiny):
    n = 4 if tiny else A
    part_infonce_from_bank(anchors[:n], bank, pos[:n], neg[:n], 0.5, chunk_size=CHUNK).sum().backward()

measure(run)
'''

_MODULE = '''
from mmseg_esl.models.losses import PixelPartContrastLoss
A, Q, L, NS, CHUNK = {sizes}
C, K = 8, 8
loss_fn = PixelPartContrastLoss(num_classes=C, feat_channels=4, embed_channels=L, num_parts=K, queue_size=Q // (C * K),
                                num_negatives=NS, anchor_ratio=1.0, chunk_size=CHUNK)
loss_fn.set_prototypes_(torch.randn(C, K, 4))
loss_fn.bank.queues.normal_()
loss_fn.bank.fill.fill_(loss_fn.bank.queue_size)  # a full bank: every queue offers negatives
g = torch.Generator().manual_seed(0)
side = int((A // 2) ** 0.5)  # 2 images of side x side pixels, all anchors (ratio 1)
embed = torch.randn(2, L, side, side, generator=g, requires_grad=True)
classes = torch.randint(0, C, (2, side, side), generator=g)
parts = torch.randint(0, K, (2, side, side), generator=g)

def run(tiny):
    s = 2 if tiny else side
    loss, _ = loss_fn(embed[:, :, :s, :s], classes[:, :s, :s], parts[:, :s, :s], classes[:, :s, :s] >= 0)
    loss.backward()

measure(run)
'''


def peak_growth(body: str) -> int:
    sizes = (ANCHORS, BANK, DIM, NEGATIVES, CHUNK)
    code = textwrap.dedent(_PRELUDE) + textwrap.dedent(body).format(sizes=sizes)
    # A fixed glibc mmap threshold: every block of 64 KiB or more is its own mapping, returned to the OS when
    # freed, so the peak RSS follows the live tensors (with the default dynamic threshold, freed blocks may stay
    # in the heap and inflate the peak by ~100 MB, depending on allocation history).
    env = clean_env(dict(MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='0'))
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result['peak'] - result['before']


def test_sizes_separate_the_two_formulas_by_more_than_50x():
    assert NAIVE_BYTES >= 50 * BANK_BYTES


def test_part_infonce_from_bank_peak_memory_is_bank_sized_not_naive():
    growth = peak_growth(_INFONCE)
    assert growth < NAIVE_BYTES / 20, f'{growth / MiB:.0f} MiB: an (A, N_s, L) tensor was built'
    # Of the order of the bank formula: similarities, logits, indices, the anchors' gradient and copies.
    assert growth < 4 * (BANK_BYTES + LOGIT_BYTES), f'{growth / MiB:.0f} MiB'


def test_pixel_part_contrast_forward_peak_memory_is_bank_sized_not_naive():
    """The whole Eq. 9-10 path of the loss module (anchor sampling, draws from a full bank, InfoNCE, backward)."""
    growth = peak_growth(_MODULE)
    assert growth < NAIVE_BYTES / 20, f'{growth / MiB:.0f} MiB: an (A, N_s, L) tensor was built'
    # Sampling adds float64 uniforms and int64 indices of (A, N_s) to the bank formula.
    assert growth < 4 * (BANK_BYTES + LOGIT_BYTES) + 4 * ANCHORS * NEGATIVES * 8, f'{growth / MiB:.0f} MiB'
