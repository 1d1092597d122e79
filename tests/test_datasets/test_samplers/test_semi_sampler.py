"""SemiSupervisedSampler: batch layout, disjoint ranks, never-self partners, U2PL epochs, determinism."""
import itertools

import pytest
import torch
from mmengine.dataset import BaseDataset, ConcatDataset

from mmseg_esl.datasets.samplers import SemiSupervisedSampler
from mmseg_esl.datasets.samplers import semi_sampler as semi_sampler_module


class _Toy(BaseDataset):
    def __init__(self, size: int):
        self._size = size
        super().__init__(serialize_data=False)

    def load_data_list(self):
        return [dict(i=i) for i in range(self._size)]


def make_dataset(n_labeled: int, n_unlabeled: int) -> ConcatDataset:
    return ConcatDataset([_Toy(n_labeled), _Toy(n_unlabeled)])


def sampler_on_rank(monkeypatch, dataset, rank, world, **kwargs) -> SemiSupervisedSampler:
    monkeypatch.setattr(semi_sampler_module, 'get_dist_info', lambda: (rank, world))
    return SemiSupervisedSampler(dataset, seed=7, **kwargs)


def test_layout_and_partners(monkeypatch):
    dataset = make_dataset(5, 12)
    sampler = sampler_on_rank(monkeypatch, dataset, 0, 1, num_labeled=2, num_unlabeled=3)
    assert sampler.batch_size == 2 + 3 + 3 and sampler.iters_per_epoch == 12 // 3
    epoch = sampler.epoch_indices(0)
    assert epoch.shape == (4, 8)
    labeled, unlabeled, partners = epoch[:, :2], epoch[:, 2:5], epoch[:, 5:]
    assert bool((labeled < 5).all()) and bool((unlabeled >= 5).all()) and bool((partners >= 5).all())
    assert bool((partners != unlabeled).all()), 'a partner must never be the image itself'
    # One epoch is one pass over the unlabeled set: every unlabeled image exactly once.
    assert sorted(unlabeled.flatten().tolist()) == list(range(5, 17))
    # The labeled list is resampled to the epoch's length: 4 iterations x 2 = 8 draws of 5 images.
    assert set(labeled.flatten().tolist()) == set(range(5))


def test_ranks_see_disjoint_unlabeled_samples(monkeypatch):
    dataset = make_dataset(4, 20)
    per_rank = [sampler_on_rank(monkeypatch, dataset, r, 2, num_labeled=1, num_unlabeled=2).epoch_indices(0)
                for r in range(2)]
    assert per_rank[0].shape == per_rank[1].shape == (5, 5)
    u0, u1 = set(per_rank[0][:, 1:3].flatten().tolist()), set(per_rank[1][:, 1:3].flatten().tolist())
    assert not u0 & u1 and len(u0 | u1) == 20
    assert not torch.equal(per_rank[0][:, :1], per_rank[1][:, :1])


def test_single_unlabeled_per_process_still_gets_a_different_partner(monkeypatch):
    dataset = make_dataset(3, 2)
    sampler = sampler_on_rank(monkeypatch, dataset, 0, 1, num_labeled=1, num_unlabeled=1)
    for epoch in range(20):
        batch = sampler.epoch_indices(epoch)
        assert bool((batch[:, 1] != batch[:, 2]).all())


def test_deterministic_and_infinite(monkeypatch):
    dataset = make_dataset(3, 6)
    a = sampler_on_rank(monkeypatch, dataset, 0, 1, num_labeled=1, num_unlabeled=2)
    b = sampler_on_rank(monkeypatch, dataset, 0, 1, num_labeled=1, num_unlabeled=2)
    first = list(itertools.islice(iter(a), 100))
    assert first == list(itertools.islice(iter(b), 100))
    assert len(first) == 100  # keeps going past one epoch (3 iterations x 5 indices)
    assert not torch.equal(a.epoch_indices(0), a.epoch_indices(1))
    assert len(a) == a.iters_per_epoch * a.batch_size


def test_without_partners_and_without_shuffle(monkeypatch):
    sampler = sampler_on_rank(monkeypatch, make_dataset(2, 4), 0, 1, num_labeled=1, num_unlabeled=2,
                              cutmix_partners=False, shuffle=False)
    assert sampler.batch_size == 3
    assert sampler.epoch_indices(0).tolist() == [[0, 2, 3], [1, 4, 5]]


@pytest.mark.parametrize('kwargs, dataset, message', [
    (dict(), _Toy(4), 'needs train_dataloader.dataset'),
    (dict(num_labeled=0), make_dataset(2, 4), 'num_labeled and num_unlabeled must be >= 1'),
    (dict(), make_dataset(2, 1), 'CutMix partners need >= 2 unlabeled images'),
    (dict(num_unlabeled=5), make_dataset(2, 4), 'cannot fill one iteration'),
    (dict(), make_dataset(0, 4), 'labeled dataset .* is empty'),
])
def test_bad_configuration_is_explained(kwargs, dataset, message):
    with pytest.raises((TypeError, ValueError), match=message):
        SemiSupervisedSampler(dataset, seed=0, **kwargs)
