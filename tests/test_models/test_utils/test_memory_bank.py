"""PartMemoryBank: FIFO queues in buffers, vectorised enqueue, positive/negative sampling, and a real 2-rank DDP run."""
import subprocess
import sys
import textwrap
from collections import deque

import pytest
import torch
from conftest import clean_env, free_port

from mmseg_esl.models.utils import PartMemoryBank


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_bank(c=2, k=2, dim=3, q=3) -> PartMemoryBank:
    return PartMemoryBank(num_classes=c, num_parts=k, dim=dim, queue_size=q)


def push(bank: PartMemoryBank, queue: int, values) -> None:
    """Enqueues one image per value, each with only part ``queue`` present and a mean filled with the value."""
    n = len(values)
    means = torch.zeros(n, bank.num_queues, bank.dim)
    means[torch.arange(n), queue] = torch.tensor(values, dtype=torch.float32)[:, None]
    counts = torch.zeros(n, bank.num_queues)
    counts[:, queue] = 7
    shape = (n, bank.num_classes, bank.num_parts)
    bank.enqueue(means.reshape(*shape, bank.dim), counts.reshape(shape))


def slot_values(bank: PartMemoryBank, queue: int):
    return bank.queues[queue, :, 0].tolist()


# --------------------------------------------------------------------------- construction


def test_buffers_shapes_and_defaults():
    bank = PartMemoryBank(num_classes=21, num_parts=5, dim=8)
    assert bank.queue_size == 256 and bank.num_queues == 105
    assert bank.queues.shape == (105, 256, 8) and bank.queues.dtype == torch.float32
    assert bank.pointers.shape == bank.fill.shape == (105,)
    assert bank.pointers.dtype == bank.fill.dtype == torch.long
    assert not bank.slot_valid().any() and float(bank.fill_fraction()) == 0.0
    assert 'queue_size=256' in repr(bank)


@pytest.mark.parametrize('name', ['num_classes', 'num_parts', 'dim', 'queue_size'])
@pytest.mark.parametrize('value', [0, -1, 2.0])
def test_constructor_rejects_non_positive_integers(name, value):
    kwargs = dict(num_classes=2, num_parts=2, dim=3, queue_size=4)
    kwargs[name] = value
    with pytest.raises(ValueError, match=f'{name} must be a positive integer'):
        PartMemoryBank(**kwargs)


def test_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        PartMemoryBank(2, 2, 3)


# --------------------------------------------------------------------------- enqueue


def test_fifo_order_and_wrap_around():
    bank = make_bank(q=3)
    for i, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0]):
        push(bank, 2, [value])
        assert int(bank.pointers[2]) == (i + 1) % 3 and int(bank.fill[2]) == min(i + 1, 3)
        if i == 2:
            assert slot_values(bank, 2) == [1.0, 2.0, 3.0]
    # 4 and 5 overwrote the two oldest entries (1 and 2); the pointer sits on the oldest one left (3).
    assert slot_values(bank, 2) == [4.0, 5.0, 3.0]
    assert int(bank.pointers[2]) == 2 and int(bank.fill[2]) == 3
    others = [0, 1, 3]
    assert bank.fill[others].eq(0).all() and bank.pointers[others].eq(0).all() and bank.queues[others].eq(0).all()
    assert bank.queues[2].abs().sum(1).ne(0).all()  # every component of the mean is stored, not just one


def test_several_entries_of_one_queue_in_one_call_keep_their_order():
    bank = make_bank(q=3)
    push(bank, 1, [1.0, 2.0])
    assert slot_values(bank, 1) == [1.0, 2.0, 0.0] and int(bank.pointers[1]) == 2 and int(bank.fill[1]) == 2
    push(bank, 1, [3.0, 4.0])  # 3 fills slot 2, 4 wraps to slot 0
    assert slot_values(bank, 1) == [4.0, 2.0, 3.0] and int(bank.pointers[1]) == 1 and int(bank.fill[1]) == 3


def test_more_than_q_entries_in_one_call_keep_the_last_q():
    bank = make_bank(q=3)
    push(bank, 0, [1.0])
    push(bank, 0, [2.0, 3.0, 4.0, 5.0, 6.0])
    assert int(bank.pointers[0]) == (1 + 5) % 3 == 0 and int(bank.fill[0]) == 3
    assert slot_values(bank, 0) == [4.0, 5.0, 6.0]  # 4, the oldest kept, sits at the pointer


def test_absent_parts_are_not_enqueued():
    bank = make_bank(c=2, k=2, dim=2, q=4)
    means = torch.randn(3, 2, 2, 2) + 10  # never zero
    counts = torch.tensor([[[5, 0], [0, 1]],
                           [[0, 0], [0, 2]],
                           [[3, 0], [0, 0]]])
    bank.enqueue(means, counts)
    assert bank.fill.tolist() == [2, 0, 0, 2] and bank.pointers.tolist() == [2, 0, 0, 2]
    torch.testing.assert_close(bank.queues[0, :2], means[[0, 2], 0, 0])
    torch.testing.assert_close(bank.queues[3, :2], means[[0, 1], 1, 1])
    assert bank.queues[[1, 2]].eq(0).all() and bank.queues[[0, 3], 2:].eq(0).all()
    assert bank.slot_valid().tolist() == [[True, True, False, False], [False] * 4, [False] * 4,
                                          [True, True, False, False]]
    assert float(bank.fill_fraction()) == pytest.approx(4 / 16)


def test_enqueue_matches_a_per_queue_deque_reference():
    c, k, dim, q = 3, 2, 2, 4
    bank = make_bank(c=c, k=k, dim=dim, q=q)
    ref = [deque(maxlen=q) for _ in range(c * k)]
    gen = seeded(0)
    for _ in range(6):
        n = int(torch.randint(0, 7, (1,), generator=gen))
        means = torch.randn(n, c, k, dim, generator=gen)
        counts = torch.randint(0, 3, (n, c, k), generator=gen) * (torch.rand(n, c, k, generator=gen) < 0.6)
        bank.enqueue(means, counts)
        for i in range(n):  # the obvious loop: image by image, queue by queue
            for j in range(c * k):
                if counts.view(n, -1)[i, j] > 0:
                    ref[j].append(means.view(n, -1, dim)[i, j])
        for j in range(c * k):
            fill, ptr = int(bank.fill[j]), int(bank.pointers[j])
            assert fill == len(ref[j])
            oldest_first = bank.queues[j].roll(-ptr, 0) if fill == q else bank.queues[j, :fill]
            expected = torch.stack(list(ref[j])) if ref[j] else torch.zeros(0, dim)
            torch.testing.assert_close(oldest_first, expected)


def test_enqueue_detaches_and_stores_float32():
    bank = make_bank(dim=2)
    means = torch.randn(2, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    bank.enqueue(means * 2, torch.ones(2, 2, 2))
    assert bank.queues.dtype == torch.float32 and not bank.queues.requires_grad
    torch.testing.assert_close(bank.queues[:, :2].transpose(0, 1), (means * 2).detach().float().reshape(2, 4, 2))
    bank.enqueue(torch.zeros(0, 2, 2, 2), torch.zeros(0, 2, 2))  # an empty batch is a no-op
    assert bank.fill.tolist() == [2, 2, 2, 2]


def test_enqueue_rejects_wrong_shapes():
    bank = make_bank(c=2, k=2, dim=3)
    with pytest.raises(ValueError, match=r'means must have shape \(N, 2, 2, 3\)'):
        bank.enqueue(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match='counts must have shape'):
        bank.enqueue(torch.zeros(1, 2, 2, 3), torch.zeros(2, 2, 2))


def test_state_survives_a_checkpoint_round_trip():
    bank = make_bank(c=2, k=3, dim=4, q=5)
    gen = seeded(1)
    for _ in range(4):
        bank.enqueue(torch.randn(3, 2, 3, 4, generator=gen), torch.randint(0, 2, (3, 2, 3), generator=gen))
    state = bank.state_dict()
    assert set(state) == {'queues', 'pointers', 'fill'}
    restored = make_bank(c=2, k=3, dim=4, q=5)
    restored.load_state_dict(state)
    for name in ('queues', 'pointers', 'fill'):
        assert torch.equal(getattr(restored, name), getattr(bank, name)), name
    # Both continue identically, and sample identically.
    means, counts = torch.randn(2, 2, 3, 4, generator=gen), torch.ones(2, 2, 3)
    bank.enqueue(means, counts)
    restored.enqueue(means, counts)
    assert torch.equal(restored.queues, bank.queues) and torch.equal(restored.pointers, bank.pointers)
    anchors = torch.arange(6)
    assert torch.equal(bank.sample_negative_idx(anchors, 9, generator=seeded(2)),
                       restored.sample_negative_idx(anchors, 9, generator=seeded(2)))
    with pytest.raises(RuntimeError, match='size mismatch'):
        make_bank(c=2, k=3, dim=4, q=6).load_state_dict(state)


# --------------------------------------------------------------------------- sampling

C, K, Q = 3, 2, 4
FILLS = [4, 2, 0, 3, 1, 4]  # per queue c * K + k; queue 2 (class 1, part 0) is empty


@pytest.fixture
def filled_bank() -> PartMemoryBank:
    """A bank in which every filled slot holds a distinct value ``100 * (queue + 1) + slot``."""
    bank = make_bank(c=C, k=K, dim=1, q=Q)
    for queue, fill in enumerate(FILLS):
        push(bank, queue, [100.0 * (queue + 1) + slot for slot in range(fill)])
    assert bank.fill.tolist() == FILLS
    return bank


def owner(bank: PartMemoryBank, idx: torch.Tensor):
    """(queue, slot) of flat indices, checked against the stored values (so the flat layout is right too)."""
    queue, slot = idx // bank.queue_size, idx % bank.queue_size
    assert torch.equal(bank.flat_entries()[idx, 0], 100.0 * (queue + 1) + slot)
    return queue, slot


def chi_square(counts: torch.Tensor) -> float:
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum())


def test_flat_entries_is_a_view_of_the_queues(filled_bank):
    flat = filled_bank.flat_entries()
    assert flat.shape == (C * K * Q, 1) and flat.data_ptr() == filled_bank.queues.data_ptr()
    assert float(flat[3 * Q + 2, 0]) == 402.0  # queue 3, slot 2
    assert filled_bank.slot_valid().sum(1).tolist() == FILLS
    assert float(filled_bank.fill_fraction()) == pytest.approx(sum(FILLS) / (C * K * Q))


def test_positives_come_from_filled_slots_of_the_anchor_queue(filled_bank):
    anchors = torch.arange(C * K).repeat(500)
    pos = filled_bank.sample_positive_idx(anchors, generator=seeded(0))
    assert pos.dtype == torch.long and pos.shape == anchors.shape
    empty = anchors == 2
    assert (pos[empty] == -1).all()
    queue, slot = owner(filled_bank, pos[~empty])
    assert torch.equal(queue, anchors[~empty])
    assert (slot < torch.tensor(FILLS)[queue]).all()
    # Uniform over the filled slots of queue 5 (4 slots, 500 draws): chi-square, 3 dof, p ~ 1e-3 at 16.3.
    hits = torch.bincount(slot[queue == 5], minlength=Q).float()
    assert (hits > 0).all() and chi_square(hits) < 16.3


def test_negatives_follow_the_part_rule(filled_bank):
    anchors = torch.tensor([0, 1, 3, 4, 5, 2]).repeat_interleave(200)
    neg = filled_bank.sample_negative_idx(anchors, 255, generator=seeded(1))
    assert neg.dtype == torch.long and neg.shape == (anchors.numel(), 255)
    assert (neg >= 0).all()  # every anchor has eligible entries, even the one of the empty queue
    queue, slot = owner(filled_bank, neg)
    assert (queue != anchors[:, None]).all()  # never the anchor's own queue
    assert (slot < torch.tensor(FILLS)[queue]).all()  # never an unfilled slot
    # The other part of the same class is a negative: anchors of queue 0 (class 0, part 0) get queue 1.
    assert (queue[anchors == 0] == 1).any() and (queue[anchors == 1] == 0).any()
    # Uniform over the 10 eligible filled entries of an anchor of queue 0: 200 * 255 draws.
    flat = neg[anchors == 0]
    counts = torch.bincount(flat.flatten(), minlength=C * K * Q).float()
    eligible = filled_bank.slot_valid().flatten().clone()
    eligible[:Q] = False  # queue 0
    assert int(eligible.sum()) == sum(FILLS) - FILLS[0] == 10
    assert (counts[~eligible] == 0).all() and (counts[eligible] > 0).all()
    assert chi_square(counts[eligible]) < 27.9  # 9 dof, p ~ 1e-3


def test_negatives_follow_the_class_rule(filled_bank):
    anchors = torch.arange(C * K).repeat_interleave(200)
    neg = filled_bank.sample_negative_idx(anchors, 64, exclude='class', generator=seeded(2))
    assert (neg >= 0).all()
    queue, _ = owner(filled_bank, neg)
    assert (queue // K != anchors[:, None] // K).all()  # no part of the anchor's class
    # Anchors of class 2 (queues 4, 5) draw uniformly over the 2 + 0 + 4 + 3 = 9 entries of classes 0 and 1.
    counts = torch.bincount(neg[anchors >= 4].flatten(), minlength=C * K * Q).float()
    eligible = filled_bank.slot_valid().flatten().clone()
    eligible[4 * Q:] = False
    assert int(eligible.sum()) == 9 and (counts[~eligible] == 0).all()
    assert chi_square(counts[eligible]) < 26.1  # 8 dof, p ~ 1e-3


def test_negatives_with_a_custom_class_of_queue(filled_bank):
    # Group queues {0, 5}, {1, 2} and {3, 4}: the excluded queues are not contiguous.
    class_of_queue = torch.tensor([0, 1, 1, 2, 2, 0])
    anchors = torch.arange(C * K).repeat_interleave(100)
    neg = filled_bank.sample_negative_idx(anchors, 32, exclude='class', class_of_queue=class_of_queue,
                                          generator=seeded(3))
    assert (neg >= 0).all()
    queue, slot = owner(filled_bank, neg)
    assert (class_of_queue[queue] != class_of_queue[anchors][:, None]).all()
    assert (slot < torch.tensor(FILLS)[queue]).all()
    for anchor in range(C * K):  # every eligible filled entry is drawn
        drawn = set(neg[anchors == anchor].flatten().tolist())
        expected = {j * Q + s for j in range(C * K) if class_of_queue[j] != class_of_queue[anchor]
                    for s in range(FILLS[j])}
        assert drawn == expected, anchor
    # With the default grouping, class_of_queue = queue // K gives the same draws as no class_of_queue.
    default = filled_bank.sample_negative_idx(anchors, 32, exclude='class', generator=seeded(4))
    explicit = filled_bank.sample_negative_idx(anchors, 32, exclude='class',
                                               class_of_queue=torch.arange(C * K) // K, generator=seeded(4))
    assert torch.equal(default, explicit)


def test_empty_cases_give_minus_one():
    bank = make_bank(c=2, k=2, dim=1, q=3)
    anchors = torch.tensor([0, 1, 2, 3])
    assert (bank.sample_positive_idx(anchors) == -1).all()
    assert (bank.sample_negative_idx(anchors, 5) == -1).all()
    push(bank, 1, [101.0, 102.0])  # only queue 1 (class 0, part 1) has entries
    pos = bank.sample_positive_idx(anchors, generator=seeded(0))
    assert pos[[0, 2, 3]].eq(-1).all() and pos[1] in (3, 4)
    neg = bank.sample_negative_idx(anchors, 5, generator=seeded(0))
    assert neg[1].eq(-1).all()  # its own queue is the only filled one
    assert torch.isin(neg[[0, 2, 3]], torch.tensor([3, 4])).all()
    neg_class = bank.sample_negative_idx(anchors, 5, exclude='class', generator=seeded(0))
    assert neg_class[:2].eq(-1).all() and torch.isin(neg_class[2:], torch.tensor([3, 4])).all()



def searchsorted_negatives(bank: PartMemoryBank, queue_idx, num_negatives, exclude, class_of_queue, generator):
    """The sampler as first written (a binary search per draw), kept as the reference of its faster form."""
    num_queues = bank.num_queues
    order = None
    if exclude == 'part':
        lo, hi = queue_idx, queue_idx + 1
    elif class_of_queue is None:
        lo = queue_idx - queue_idx % bank.num_parts
        hi = lo + bank.num_parts
    else:
        sorted_class, order = torch.sort(class_of_queue, stable=True)
        anchor_class = class_of_queue[queue_idx]
        lo = torch.searchsorted(sorted_class, anchor_class, right=False)
        hi = torch.searchsorted(sorted_class, anchor_class, right=True)
    fill = bank.fill if order is None else bank.fill[order]
    cum = fill.cumsum(0)
    start = torch.nn.functional.pad(cum, (1, 0))
    total = start[-1]
    skip_from, width = start[lo], start[hi] - start[lo]
    eligible = total - width
    u = torch.rand((queue_idx.shape[0], num_negatives), generator=generator, dtype=torch.float64)
    r = (u * eligible[:, None]).long()
    r = torch.minimum(r, (eligible[:, None] - 1).clamp(min=0))
    r = r + (r >= skip_from[:, None]) * width[:, None]
    pos = torch.searchsorted(cum, r, right=True).clamp(max=num_queues - 1)
    queue = pos if order is None else order[pos]
    flat = queue * bank.queue_size + r - start[pos]
    return torch.where(eligible[:, None] > 0, flat, torch.full_like(flat, -1))


@pytest.mark.parametrize('seed', range(12))
def test_negative_sampler_draws_exactly_what_the_binary_search_drew(seed):
    """The lookup-table sampler (3x faster on a CPU) gives the very same indices, for any fill pattern."""
    g = seeded(seed)
    c, k, q = (int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(1, 4, (1,), generator=g)),
               int(torch.randint(1, 9, (1,), generator=g)))
    bank = make_bank(c=c, k=k, q=q)
    fills = [torch.full((c * k,), q), torch.randint(0, q + 1, (c * k,), generator=g), torch.zeros(c * k)]
    queue_idx = torch.randint(0, c * k, (40,), generator=g)
    for fill in fills:
        bank.fill.copy_(fill.long())
        for exclude, class_of_queue in (('part', None), ('class', None), ('class', torch.randint(0, 3, (c * k,)))):
            got = bank.sample_negative_idx(queue_idx, 17, exclude=exclude, class_of_queue=class_of_queue,
                                           generator=seeded(seed + 100))
            expected = searchsorted_negatives(bank, queue_idx, 17, exclude, class_of_queue, seeded(seed + 100))
            assert torch.equal(got, expected), (fill.tolist(), exclude)

def test_sampling_shapes_and_reproducibility(filled_bank):
    anchors = torch.tensor([0, 3, 5], dtype=torch.int32)
    assert filled_bank.sample_negative_idx(anchors, 0).shape == (3, 0)
    assert filled_bank.sample_negative_idx(torch.zeros(0, dtype=torch.long), 7).shape == (0, 7)
    assert filled_bank.sample_positive_idx(torch.zeros(0, dtype=torch.long)).shape == (0,)
    for sample in (lambda g: filled_bank.sample_positive_idx(anchors, generator=g),
                   lambda g: filled_bank.sample_negative_idx(anchors, 50, generator=g)):
        assert torch.equal(sample(seeded(5)), sample(seeded(5)))
        assert not torch.equal(sample(seeded(5)), sample(seeded(6)))


@pytest.mark.parametrize('kwargs, match', [
    (dict(exclude='queue'), 'exclude must be one of'),
    (dict(num_negatives=-1), 'num_negatives must be a non-negative integer'),
    (dict(num_negatives=2.5), 'num_negatives must be a non-negative integer'),
    (dict(exclude='class', class_of_queue=torch.zeros(5, dtype=torch.long)), r'class_of_queue must be .*\(6,\)'),
    (dict(exclude='class', class_of_queue=torch.zeros(6)), 'class_of_queue must be an integer tensor'),
])
def test_negative_sampling_rejects_bad_arguments(filled_bank, kwargs, match):
    with pytest.raises(ValueError, match=match):
        filled_bank.sample_negative_idx(torch.tensor([0]), **kwargs)


@pytest.mark.parametrize('queue_idx, match', [
    (torch.tensor([0, 6]), r'queue_idx must lie in \[0, C·K\) = \[0, 6\)'),
    (torch.tensor([-1]), 'queue_idx must lie in'),
    (torch.tensor([0.0]), 'queue_idx must be a 1-D integer tensor'),
    (torch.tensor([[0]]), 'queue_idx must be a 1-D integer tensor'),
])
def test_sampling_rejects_bad_queue_indices(filled_bank, queue_idx, match):
    with pytest.raises(ValueError, match=match):
        filled_bank.sample_positive_idx(queue_idx)
    with pytest.raises(ValueError, match=match):
        filled_bank.sample_negative_idx(queue_idx)


# --------------------------------------------------------------------------- DDP

WORKER = textwrap.dedent('''
    import sys

    import torch
    import torch.distributed as dist

    from mmseg_esl.models.utils import PartMemoryBank

    rank, world_size, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world_size)
    bank = PartMemoryBank(num_classes=3, num_parts=2, dim=4, queue_size=16)
    gen = torch.Generator().manual_seed(100 + rank)  # different means on every rank
    inputs = []
    for step in range(3):
        n = 2 + rank  # and different batch sizes: rank 0 has 2 images, rank 1 has 3
        means = torch.randn(n, 3, 2, 4, generator=gen) + 10 * rank
        counts = torch.randint(0, 4, (n, 3, 2), generator=gen)
        counts[:, 0, 0] = 0
        counts[0, 0, 0] = 1  # queue 0 gets exactly one entry per rank and step
        bank.enqueue(means, counts)
        inputs.append((means, counts))
    torch.save({'state': bank.state_dict(), 'inputs': inputs}, out)
    dist.destroy_process_group()
''')


@pytest.mark.slow
def test_ddp_ranks_hold_identical_banks(tmp_path):
    world_size, script = 2, tmp_path / 'worker.py'
    script.write_text(WORKER)
    port = str(free_port())
    env = clean_env({'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': port, 'OMP_NUM_THREADS': '1'})
    outs = [tmp_path / f'rank{rank}.pth' for rank in range(world_size)]
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), str(world_size), port, str(out)],
                              cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank, out in enumerate(outs)]
    try:
        logs = [proc.communicate(timeout=60)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f'rank {rank} exited with {proc.returncode}:\n{logs[rank][-4000:]}'

    results = [torch.load(out, weights_only=False) for out in outs]
    states = [result['state'] for result in results]
    for name in ('queues', 'pointers', 'fill'):
        assert torch.equal(states[0][name], states[1][name]), name

    # Every rank enqueued the entries of both ranks, step by step, rank 0's before rank 1's: the same bank
    # as one process enqueueing the concatenated batches.
    reference = PartMemoryBank(num_classes=3, num_parts=2, dim=4, queue_size=16)
    for step in range(3):
        batches = [result['inputs'][step] for result in results]
        reference.enqueue(torch.cat([means for means, _ in batches]), torch.cat([counts for _, counts in batches]))
    for name in ('queues', 'pointers', 'fill'):
        assert torch.equal(states[0][name], getattr(reference, name)), name

    # The bank grew by the entries of all ranks (no queue overflowed: at most 3 * 5 = 15 < 16 entries).
    per_rank = [sum((counts > 0).reshape(counts.shape[0], -1).sum(0) for _, counts in result['inputs'])
                for result in results]
    assert torch.equal(states[0]['fill'], per_rank[0] + per_rank[1])
    assert int(states[0]['fill'][0]) == world_size * 3  # queue 0: one entry per rank and step
    assert (states[0]['fill'] > per_rank[0]).all() and (states[0]['fill'] > per_rank[1]).all()
    assert (states[0]['queues'][0, :6, 0] >= 5).tolist() == [False, True] * 3  # rank 0 (~0), then rank 1 (~10)
