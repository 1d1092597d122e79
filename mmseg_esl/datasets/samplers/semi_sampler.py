"""A sampler that gives every iteration labeled + unlabeled images (+ CutMix partners) on every process.

ESL trains on "8 labeled and 8 unlabeled images" per mini-batch (§4.1). We read this as the total over
GPUs, as ``tools/dist_train.sh CONFIG 8`` with 1 + 1 per GPU implies; configs state their per-GPU numbers.

Epochs follow U2PL: one epoch is one pass over the unlabeled set; the labeled list is resampled (reshuffled
and repeated) to the same number of iterations. So
``iters_per_epoch = len(unlabeled) // (world_size * num_unlabeled)``.

CutMix needs a *different* image to paste from, also when a process holds a single unlabeled image (the
paper's 1 + 1 per GPU). With ``cutmix_partners=True`` every unlabeled index comes with a partner index drawn
like UniMatch's second unlabeled image: the partner sequence is the epoch's unlabeled permutation rolled by a
random non-zero offset, so a partner is never the image itself.

Each process yields batches laid out as ``[num_labeled labeled | num_unlabeled unlabeled | num_unlabeled
partners]``; set ``train_dataloader.batch_size`` to :attr:`SemiSupervisedSampler.batch_size`
(``num_labeled + num_unlabeled * (2 if cutmix_partners else 1)``). ``ESLSegmentor`` reads this layout.
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch
from mmengine.dataset import ConcatDataset
from mmengine.dist import get_dist_info, sync_random_seed
from mmseg.registry import DATA_SAMPLERS
from torch.utils.data import Sampler


@DATA_SAMPLERS.register_module()
class SemiSupervisedSampler(Sampler):
    """Infinite sampler of ``[labeled | unlabeled | partner]`` index groups, disjoint across processes.

    All processes draw the same per-epoch permutations (seeded with ``seed + epoch``) and take disjoint
    slices of them, so ranks see different samples, and a run is reproducible (and resumable by replaying
    the iterations, which mmengine's ``IterBasedTrainLoop`` does on resume).

    Args:
        dataset: ``ConcatDataset`` of exactly two datasets: ``[labeled, unlabeled]``.
        num_labeled: Labeled images per process and iteration (B_l).
        num_unlabeled: Unlabeled images per process and iteration (B_u).
        cutmix_partners: Add one partner image per unlabeled image (see the module docstring).
        shuffle: Shuffle each epoch (False keeps the file order, for debugging).
        seed: Random seed shared by all processes; None draws one and synchronises it across processes.

    Example:
        >>> train_dataloader = dict(
        ...     batch_size=3,  # 1 labeled + 1 unlabeled + 1 partner
        ...     sampler=dict(type='SemiSupervisedSampler', num_labeled=1, num_unlabeled=1),
        ...     dataset=dict(type='ConcatDataset', datasets=[labeled_dataset, unlabeled_dataset]))
    """

    def __init__(self, dataset: ConcatDataset, *, num_labeled: int = 1, num_unlabeled: int = 1,
                 cutmix_partners: bool = True, shuffle: bool = True, seed: Optional[int] = None) -> None:
        if not isinstance(dataset, ConcatDataset) or len(dataset.datasets) != 2:
            raise TypeError('SemiSupervisedSampler needs train_dataloader.dataset = '
                            "dict(type='ConcatDataset', datasets=[labeled, unlabeled]), "
                            f'got {type(dataset).__name__}.')
        if num_labeled < 1 or num_unlabeled < 1:
            raise ValueError(f'num_labeled and num_unlabeled must be >= 1, got {num_labeled} and {num_unlabeled}.')
        self.rank, self.world_size = get_dist_info()
        self.num_labeled_images = len(dataset.datasets[0])
        self.num_unlabeled_images = len(dataset.datasets[1])
        if self.num_labeled_images == 0:
            raise ValueError('The labeled dataset (train_dataloader.dataset.datasets[0]) is empty; '
                             'check its split file.')
        if cutmix_partners and self.num_unlabeled_images < 2:
            raise ValueError(f'CutMix partners need >= 2 unlabeled images, the unlabeled dataset has '
                             f'{self.num_unlabeled_images}.')
        self.num_labeled = num_labeled
        self.num_unlabeled = num_unlabeled
        self.cutmix_partners = cutmix_partners
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else seed
        self.iters_per_epoch = self.num_unlabeled_images // (self.world_size * num_unlabeled)
        if self.iters_per_epoch < 1:
            raise ValueError(
                f'{self.num_unlabeled_images} unlabeled images cannot fill one iteration of '
                f'{num_unlabeled} per process on {self.world_size} processes; lower num_unlabeled.')

    @property
    def batch_size(self) -> int:
        """Indices per process and iteration; ``train_dataloader.batch_size`` must equal it."""
        return self.num_labeled + self.num_unlabeled * (2 if self.cutmix_partners else 1)

    def _permutation(self, size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(size, generator=generator) if self.shuffle else torch.arange(size)

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """Index groups of this process for one epoch.

        Args:
            epoch: Epoch number (0-based); it seeds the epoch's permutations.

        Returns:
            Long tensor ``(iters_per_epoch, batch_size)`` of ConcatDataset indices, each row laid out as
            ``[labeled | unlabeled | partners]``.
        """
        generator = torch.Generator().manual_seed(self.seed + epoch)
        iters, world, n_l, n_u = self.iters_per_epoch, self.world_size, self.num_labeled_images, \
            self.num_unlabeled_images

        # Unlabeled: one pass; positions are laid out as (iteration, rank, slot).
        unlabeled_perm = self._permutation(n_u, generator)
        used = iters * world * self.num_unlabeled
        unlabeled = unlabeled_perm[:used].view(iters, world, self.num_unlabeled)[:, self.rank]

        # Labeled: reshuffled and repeated to fill the same iterations (U2PL's resampling).
        needed = iters * world * self.num_labeled
        repeats = -(-needed // n_l)
        labeled = torch.cat([self._permutation(n_l, generator) for _ in range(repeats)])[:needed]
        labeled = labeled.view(iters, world, self.num_labeled)[:, self.rank]

        groups = [labeled, unlabeled + n_l]
        if self.cutmix_partners:
            offset = int(torch.randint(1, n_u, (1,), generator=generator))
            partners = torch.roll(unlabeled_perm, shifts=-offset)[:used]  # partners[i] = perm[(i + offset) % n_u]
            groups.append(partners.view(iters, world, self.num_unlabeled)[:, self.rank] + n_l)
        return torch.cat(groups, dim=1)

    def __iter__(self) -> Iterator[int]:
        epoch = 0
        while True:
            yield from self.epoch_indices(epoch).flatten().tolist()
            epoch += 1

    def __len__(self) -> int:
        """Indices this process yields per epoch (the sampler itself never ends)."""
        return self.iters_per_epoch * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Not used: epochs advance inside the infinite iterator."""
