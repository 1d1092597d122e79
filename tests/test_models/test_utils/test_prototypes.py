"""Per-class pixel reservoir and K-means subclass prototypes (ESL §3.3, before the formal training)."""
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from conftest import clean_env, free_port
from sklearn.cluster import KMeans

from mmseg_esl.models.utils.prototypes import ClassPixelReservoir, kmeans_prototypes


def id_features(labels: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Features (N, 2, h, w) that name each pixel: channel 0 its id (offset + flat index), channel 1 its label."""
    n, h, w = labels.shape
    ids = torch.arange(offset, offset + n * h * w, dtype=torch.float32).view(n, h, w)
    return torch.stack([ids, labels.float()], dim=1)


# --------------------------------------------------------------------------- ClassPixelReservoir


def test_reservoir_keeps_at_most_m_pixels_per_class_and_counts_all():
    gen = torch.Generator().manual_seed(0)
    res = ClassPixelReservoir(num_classes=4, max_pixels_per_class=30, dim=2, seed=1)
    total = torch.zeros(4, dtype=torch.long)
    offset = 0
    for n in (1, 3, 2):
        labels = torch.randint(0, 5, (n, 6, 7), generator=gen)
        labels[labels == 4] = 255
        labels[labels == 3] = 255 if n != 2 else 3  # class 3 appears in one batch only: 2 * 42 / 4 ≈ 21 < M
        res.add(id_features(labels, offset), labels)
        offset += labels.numel()
        total += torch.bincount(labels[labels != 255].flatten(), minlength=4)
    assert torch.equal(res.counts(), total)
    assert torch.equal(res.num_samples(), total.clamp(max=30))
    for c in range(4):
        sample = res.samples(c)
        assert sample.shape == (min(int(total[c]), 30), 2) and sample.dtype == torch.float32
        assert (sample[:, 1] == c).all()  # only pixels of class c, never an ignored one
        assert sample[:, 0].unique().numel() == sample.shape[0]  # no pixel twice


def test_reservoir_ignores_255_and_keeps_everything_below_m():
    labels = torch.full((2, 4, 4), 255)
    labels[0, 0, :3] = 1
    res = ClassPixelReservoir(num_classes=2, max_pixels_per_class=10, dim=2)
    res.add(id_features(labels), labels)
    assert res.counts().tolist() == [0, 3]
    assert res.samples(0).shape == (0, 2)
    assert sorted(res.samples(1)[:, 0].tolist()) == [0.0, 1.0, 2.0]


@pytest.mark.parametrize('chunks', [1, 4])
def test_reservoir_sample_is_uniform(chunks):
    """Each of 1000 pixels of a class is kept with probability M / 1000, whatever batch it came in."""
    num_pixels, m, trials = 1000, 100, 300
    labels = torch.zeros(1, 1, num_pixels, dtype=torch.long)
    feats = id_features(labels)
    kept = torch.zeros(num_pixels)
    for seed in range(trials):
        res = ClassPixelReservoir(num_classes=1, max_pixels_per_class=m, dim=2, seed=seed)
        for lab, feat in zip(labels.chunk(chunks, dim=2), feats.chunk(chunks, dim=3)):
            res.add(feat, lab)
        kept[res.samples(0)[:, 0].long()] += 1
    freq = kept / trials
    assert kept.sum() == m * trials
    for part in freq.chunk(4):  # pixels of the first chunk are not favoured over those of the last
        assert abs(part.mean().item() - m / num_pixels) < 0.01
    # Per pixel, kept ~ Binomial(300, 0.1): mean 30, sd ≈ 5.2; the spread matches and no pixel is extreme.
    assert 3.5 < kept.std().item() < 7.0
    assert kept.min() >= 8 and kept.max() <= 55


def test_reservoir_sample_does_not_depend_on_how_pixels_are_batched():
    # Keys are drawn per valid pixel in order, so one add() of everything keeps exactly what many add()s keep:
    # this checks that merging a call's candidates with the old sample loses or duplicates nothing.
    labels = torch.randint(0, 4, (6, 5, 9), generator=torch.Generator().manual_seed(2))
    labels[labels == 3] = 255
    feats = id_features(labels)

    def kept(splits):
        res = ClassPixelReservoir(num_classes=3, max_pixels_per_class=25, dim=2, seed=4)
        for lab, feat in zip(labels.split(splits), feats.split(splits)):
            res.add(feat, lab)
        return [res.samples(c)[:, 0].sort().values for c in range(3)]

    whole = kept([6])
    assert all(torch.equal(a, b) for a, b in zip(whole, kept([1, 2, 3])))
    assert all(torch.equal(a, b) for a, b in zip(whole, kept([1] * 6)))


def test_reservoir_is_deterministic_with_its_seed():
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randint(0, 3, (2, 8, 8), generator=gen) for _ in range(3)]

    def fill(seed):
        res = ClassPixelReservoir(num_classes=3, max_pixels_per_class=10, dim=2, seed=seed)
        for k, labels in enumerate(batches):
            res.add(id_features(labels, 1000 * k), labels)
        return [res.samples(c)[:, 0].sort().values for c in range(3)]

    torch.manual_seed(0)
    first = fill(5)
    torch.manual_seed(1)  # the global RNG does not matter
    assert all(torch.equal(a, b) for a, b in zip(first, fill(5)))
    assert not all(torch.equal(a, b) for a, b in zip(first, fill(6)))


def test_reservoir_float16_storage_non_contiguous_features_and_memory():
    res = ClassPixelReservoir(num_classes=3, max_pixels_per_class=50, dim=8, dtype=torch.float16)
    assert res.nbytes == 3 * 50 * (8 * 2 + 8)
    feats = torch.randn(2, 5, 6, 8).permute(0, 3, 1, 2)  # (N, L', h, w), channels-last in memory
    labels = torch.randint(0, 3, (2, 5, 6))
    res.add(feats, labels)
    for c in range(3):
        expected = feats.permute(0, 2, 3, 1)[labels == c]  # all pixels of class c (fewer than M)
        got = res.samples(c)
        assert got.dtype == torch.float16 and got.shape == expected.shape
        assert torch.equal(got.float().sort(dim=0).values, expected.half().float().sort(dim=0).values)


def test_reservoir_errors_name_the_problem():
    with pytest.raises(ValueError, match='max_pixels_per_class must be a positive int'):
        ClassPixelReservoir(num_classes=3, max_pixels_per_class=0, dim=2)
    with pytest.raises(ValueError, match='ignore_index=2 is a class index'):
        ClassPixelReservoir(num_classes=3, max_pixels_per_class=4, dim=2, ignore_index=2)
    with pytest.raises(ValueError, match='floating dtype'):
        ClassPixelReservoir(num_classes=3, max_pixels_per_class=4, dim=2, dtype=torch.int32)
    res = ClassPixelReservoir(num_classes=3, max_pixels_per_class=4, dim=2)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r'feats must have shape \(N, 2, h, w\)'):
        res.add(torch.zeros(1, 3, 4, 4), labels)
    with pytest.raises(ValueError, match='resize the label map'):
        res.add(torch.zeros(1, 2, 8, 8), labels)
    with pytest.raises(TypeError, match='integer class map'):
        res.add(torch.zeros(1, 2, 4, 4), labels.float())
    with pytest.raises(ValueError, match=r'values \[7\] outside \[0, num_classes=3\)'):
        res.add(torch.zeros(1, 2, 4, 4), labels + 7)
    with pytest.raises(ValueError, match='class index'):
        res.samples(3)


# --------------------------------------------------------------------------- kmeans_prototypes


def synthetic_reservoir(dim=6, seed=0):
    """Class 0: 600 pixels around 3 directions (times random scales); class 1: 2 pixels; class 2: absent."""
    gen = torch.Generator().manual_seed(seed)
    directions = F.normalize(torch.randn(3, dim, generator=gen), dim=1)
    part = torch.randint(0, 3, (600,), generator=gen)
    scale = 1 + 4 * torch.rand(600, 1, generator=gen)
    pixels = scale * (directions[part] + 0.05 * torch.randn(600, dim, generator=gen))
    feats = torch.cat([pixels, torch.randn(2, dim, generator=gen)]).T.reshape(1, dim, 1, 602)
    labels = torch.cat([torch.zeros(600, dtype=torch.long), torch.ones(2, dtype=torch.long)]).view(1, 1, 602)
    res = ClassPixelReservoir(num_classes=3, max_pixels_per_class=400, dim=dim, seed=seed)
    res.add(feats, labels)
    return res, directions


def test_kmeans_prototypes_equal_sklearn_on_the_normalised_sample():
    res, directions = synthetic_reservoir()
    prototypes, report = kmeans_prototypes(res, 3, seed=7, n_init=2)
    assert prototypes.shape == (3, 3, 6) and prototypes.dtype == torch.float32

    x = F.normalize(res.samples(0).float(), dim=1).numpy()
    kmeans = KMeans(n_clusters=3, random_state=7, n_init=2).fit(x)
    expected = F.normalize(torch.from_numpy(kmeans.cluster_centers_).float(), dim=1)
    torch.testing.assert_close(prototypes[0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prototypes[0].norm(dim=1), torch.ones(3))
    # The three parts are found: each true direction has a prototype at cosine > 0.99.
    assert (directions @ prototypes[0].T).amax(dim=1).min() > 0.99

    assert report['per_class'][0] == dict(seen=600, sampled=400, status='ok', warnings=[])


def test_kmeans_prototypes_handle_small_and_absent_classes():
    res, _ = synthetic_reservoir()
    prototypes, report = kmeans_prototypes(res, 5)
    assert report['num_classes'] == 3 and report['num_parts'] == 5
    assert report['fewer_than_k'] == [1] and report['absent'] == [2]
    assert report['per_class'][1] == dict(seen=2, sampled=2, status='fewer_than_k', warnings=[])
    assert report['per_class'][2] == dict(seen=0, sampled=0, status='absent', warnings=[])
    pixels = F.normalize(res.samples(1).float(), dim=1)
    torch.testing.assert_close(prototypes[1], pixels[[0, 1, 0, 1, 0]])  # repeated to fill K rows
    assert torch.equal(prototypes[2], torch.zeros(5, 6))


def test_kmeans_prototypes_report_fewer_distinct_pixels_than_k():
    res = ClassPixelReservoir(num_classes=1, max_pixels_per_class=20, dim=3, dtype=torch.float16)
    feats = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1).expand(1, 3, 2, 5)  # 10 identical pixels
    res.add(feats, torch.zeros(1, 2, 5, dtype=torch.long))
    prototypes, report = kmeans_prototypes(res, 3, n_init=1)
    entry = report['per_class'][0]
    assert entry['status'] == 'ok' and entry['sampled'] == 10
    assert any('distinct clusters' in message for message in entry['warnings'])
    assert prototypes.dtype == torch.float32 and torch.isfinite(prototypes).all()


def test_kmeans_prototypes_reject_a_bad_number_of_parts():
    res, _ = synthetic_reservoir()
    with pytest.raises(ValueError, match='num_parts must be a positive int'):
        kmeans_prototypes(res, 0)


# --------------------------------------------------------------------------- merge_across_ranks


def test_merge_across_ranks_is_a_no_op_in_one_process():
    labels = torch.randint(0, 3, (2, 5, 5), generator=torch.Generator().manual_seed(0))
    res = ClassPixelReservoir(num_classes=3, max_pixels_per_class=10, dim=2, seed=1)
    res.add(id_features(labels), labels)
    before = [res.samples(c).clone() for c in range(3)], res.counts(), res._keys.clone()
    res.merge_across_ranks()
    res.merge_across_ranks()  # no DDP: nothing to merge, so calling it twice is harmless too
    assert all(torch.equal(a, res.samples(c)) for c, a in enumerate(before[0]))
    assert torch.equal(before[1], res.counts()) and torch.equal(before[2], res._keys)


MERGE_WORKER = textwrap.dedent('''
    import sys

    import torch
    import torch.distributed as dist

    from mmseg_esl.models.utils.prototypes import ClassPixelReservoir

    rank, world_size, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world_size)
    gen = torch.Generator().manual_seed(100 + rank)
    labels = torch.randint(0, 3, (2 + rank, 6, 7), generator=gen)  # rank 0: 84 pixels, rank 1: 126
    labels[(labels == 2) & (torch.rand(labels.shape, generator=gen) < 0.8)] = 255  # class 2 is rare: < M in all
    labels[0, 0, 0] = 2
    labels[labels == 2] = 255 if rank == 0 else 2  # ... and only rank 1 has it
    n, h, w = labels.shape
    ids = torch.arange(1000 * rank, 1000 * rank + n * h * w, dtype=torch.float32).view(n, h, w)
    feats = torch.stack([ids, labels.float()], dim=1)  # channel 0 names the pixel (exact in float16 below 2048)
    result = {'labels': labels, 'feats': feats}
    for dtype in (torch.float32, torch.float16):  # float16: summed in float32 on gloo, cast back
        res = ClassPixelReservoir(num_classes=3, max_pixels_per_class=20, dim=2, seed=7 + rank, dtype=dtype)
        res.add(feats, labels)
        before = {'keys': res._keys.clone(), 'feats': res._feats.clone(), 'seen': res.counts()}
        res.merge_across_ranks()
        try:
            res.merge_across_ranks()
            second = 'no error'
        except RuntimeError as error:
            second = str(error)
        result[str(dtype)] = {'before': before, 'keys': res._keys, 'feats': res._feats, 'seen': res.counts(),
                              'num_samples': res.num_samples(), 'samples': [res.samples(c) for c in range(3)],
                              'second': second}
    torch.save(result, out)
    dist.destroy_process_group()
''')


def run_workers(tmp_path, script_text: str, world_size: int = 2, timeout: float = 120) -> list:
    """Runs ``script_text`` as ``world_size`` gloo ranks and returns what each rank saved."""
    script = tmp_path / 'worker.py'
    script.write_text(script_text)
    port = str(free_port())
    env = clean_env({'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': port, 'OMP_NUM_THREADS': '1'})
    outs = [tmp_path / f'rank{rank}.pth' for rank in range(world_size)]
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), str(world_size), port, str(out)],
                              cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank, out in enumerate(outs)]
    try:
        logs = [proc.communicate(timeout=timeout)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f'rank {rank} exited with {proc.returncode}:\n{logs[rank][-4000:]}'
    return [torch.load(out, weights_only=False) for out in outs]


@pytest.mark.slow
def test_merge_across_ranks_gives_every_rank_the_top_m_keys_of_all_ranks(tmp_path):
    results = run_workers(tmp_path, MERGE_WORKER)
    m = 20
    total = sum(torch.bincount(r['labels'][r['labels'] != 255], minlength=3) for r in results)
    assert total[2] < m < total[0] and total[1] > m  # classes above and below M, and one only rank 1 has
    for dtype in ('torch.float32', 'torch.float16'):
        merged = [r[dtype] for r in results]
        for name in ('keys', 'feats', 'seen'):  # both ranks hold the same reservoir
            assert torch.equal(merged[0][name], merged[1][name]), (dtype, name)
        assert merged[0]['feats'].dtype == getattr(torch, dtype.split('.')[1])
        assert torch.equal(merged[0]['seen'], total)  # counts() is the total over ranks
        assert torch.equal(merged[0]['num_samples'], total.clamp(max=m))  # min(total, M) per class
        assert 'already called' in merged[0]['second']
        for c in range(3):
            # A subset of the union of the ranks' pixels of class c, no pixel twice.
            union = torch.cat([r['feats'].permute(0, 2, 3, 1)[r['labels'] == c] for r in results])
            sample = merged[0]['samples'][c].float()
            assert sample.shape == (int(total[c].clamp(max=m)), 2)
            assert (sample[:, 1] == c).all() and sample[:, 0].unique().numel() == sample.shape[0]
            assert torch.isin(sample[:, 0], union[:, 0]).all()
        # The merged sample is the top-M selection over the keys of both ranks, computed here from the
        # ranks' reservoirs before the merge: merged slot s holds the pixel of the s-th largest key.
        keys = torch.cat([r[dtype]['before']['keys'] for r in results], dim=1)  # (C, 2M)
        feats = torch.cat([r[dtype]['before']['feats'] for r in results], dim=1)  # (C, 2M, L')
        top_keys, top_idx = keys.topk(m, dim=1)
        expected_keys = torch.where(top_keys >= 0, top_keys, torch.full_like(top_keys, -1.0))
        expected_feats = torch.gather(feats, 1, top_idx[..., None].expand(-1, -1, 2)) * (top_keys >= 0)[..., None]
        assert torch.equal(merged[0]['keys'], expected_keys)
        assert torch.equal(merged[0]['feats'], expected_feats)
        # Rank 1's pixels of class 2 are all kept (fewer than M), rank 0 had none.
        assert merged[0]['samples'][2][:, 0].min() >= 1000
