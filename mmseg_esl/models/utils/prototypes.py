"""Initial subclass prototypes P ∈ R^{C×K×L'} of ESL's object-part grouping (paper §3.3), by K-means.

"Before the formal training", ESL collects the ImageNet-initialised encoder features E^t(x^l) of every
labeled image, splits their pixels by ground-truth class into E_1 ... E_C, and runs K-means with K clusters
on each E_c; the K cluster means of class c are its subclass (object-part) prototypes. During training a
pixel of class c* belongs to part ``k* = argmax_k cos(E^t(x)_j, P^{c*}_k)`` (Eq. 7), and P follows an EMA
of per-batch part means (Eq. 12).

All pixels of a labeled set do not fit in memory (even at stride 8, VOC 1/16's 92 crops of 513² hold
92 × 65² ≈ 0.39 M pixels × 2048 channels × 4 B ≈ 3.2 GB, and the other splits scale linearly), so this
module keeps a bounded, uniform sample per class and clusters that:

* :class:`ClassPixelReservoir` keeps, for each class, a uniform random sample of at most M pixel feature
  vectors over everything added (reservoir sampling, vectorised: one random key per pixel, keep the M
  largest keys per class). Memory: C × M × L' × bytes-per-element, allocated up front.
* :func:`kmeans_prototypes` L2-normalises each class's sample and runs ``sklearn.cluster.KMeans``.

Under DDP each rank samples its shard of the labeled set and :meth:`ClassPixelReservoir.merge_across_ranks`
turns the per-rank samples into the one sample of the whole set. ``PrototypeInitHook`` drives them (feed
``add`` with encoder features and labels resized to the features, merge, call ``kmeans_prototypes`` and copy
the result into the model's prototype buffer); nothing here touches a model.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ...checks import positive_int

__all__ = ['ClassPixelReservoir', 'kmeans_prototypes']

Device = Union[str, torch.device]

# Keys of sampled pixels are uniform in [0, 1); these sentinels are strictly below any of them.
_EMPTY_SLOT = -1.0  # a slot of the reservoir that holds no pixel yet
_NO_CANDIDATE = -2.0  # padding of the per-call candidates; below _EMPTY_SLOT so it is never selected


class ClassPixelReservoir:
    """A uniform random sample of at most ``max_pixels_per_class`` pixel features per class.

    Every valid pixel passed to :meth:`add` gets an independent key uniform in [0, 1); the reservoir keeps,
    per class, the pixels with the M largest keys among all pixels of that class ever added. As the keys are
    i.i.d., every M-subset is equally likely: the kept set is a uniform sample without replacement of the
    class's pixels (all of them while fewer than M were seen), whatever the order and batching of ``add``.
    Each call is vectorised (one sort of the call's pixels, one ``topk`` over C × 2M keys, no Python loop
    over pixels or classes); only the pixels that enter the reservoir are gathered and copied.

    Memory: the features are stored in one (C, M, L') tensor of ``dtype`` allocated at construction, plus
    C × M float64 keys. Budget it: VOC's 21 classes × M = 20000 × L' = 2048 (ResNet-101 ``layer4``) is
    21 · 20000 · 2048 · 4 B ≈ 3.4 GB in float32 — too much. M = 5000 with ``dtype=torch.float16`` takes
    21 · 5000 · 2048 · 2 B ≈ 0.43 GB and is ample for K ≈ 5-10 clusters per class; see :attr:`nbytes`.
    float16 storage is safe for post-ReLU backbone features (|x| < 65504); K-means runs in float32.

    Args:
        num_classes: Number of classes C; labels are in ``[0, C)`` or ``ignore_index``.
        max_pixels_per_class: Sample size M per class (>= 1).
        dim: Feature dimension L'.
        seed: Seed of the reservoir's own CPU generator: the same seed and the same calls give the same
            sample on any device.
        dtype: Storage dtype of the features (``torch.float32`` or ``torch.float16`` to halve memory).
        device: Where the features are stored (default CPU; the added features may live anywhere).
        ignore_index: Label value of pixels to skip.

    Raises:
        ValueError: If an argument is out of range.
    """

    def __init__(self, *, num_classes: int, max_pixels_per_class: int, dim: int, seed: int = 0,
                 dtype: torch.dtype = torch.float32, device: Device = 'cpu', ignore_index: int = 255) -> None:
        num_classes, max_pixels_per_class, dim = (
            positive_int(key, value, owner='ClassPixelReservoir') for key, value in
            (('num_classes', num_classes), ('max_pixels_per_class', max_pixels_per_class), ('dim', dim)))
        if not dtype.is_floating_point:
            raise ValueError(f'ClassPixelReservoir: dtype must be a floating dtype (e.g. torch.float16), got {dtype}.')
        if 0 <= ignore_index < num_classes:
            raise ValueError(f'ClassPixelReservoir: ignore_index={ignore_index} is a class index (num_classes='
                             f'{num_classes}); use a value outside [0, num_classes), e.g. 255.')
        self.num_classes = num_classes
        self.max_pixels_per_class = max_pixels_per_class
        self.dim = dim
        self.dtype = dtype
        self.device = torch.device(device)
        self.ignore_index = ignore_index
        self._generator = torch.Generator().manual_seed(seed)
        self._feats = torch.zeros(num_classes, max_pixels_per_class, dim, dtype=dtype, device=self.device)
        self._keys = torch.full((num_classes, max_pixels_per_class), _EMPTY_SLOT, dtype=torch.float64)
        self._seen = torch.zeros(num_classes, dtype=torch.long)
        self._merged = False  # set by merge_across_ranks()

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored features and keys (C × M × (L' × element size + 8))."""
        return self._feats.numel() * self._feats.element_size() + self._keys.numel() * self._keys.element_size()

    @torch.no_grad()
    def add(self, feats: Tensor, labels: Tensor) -> None:
        """Offers every labeled pixel of a batch to the reservoir.

        Args:
            feats: Features of shape (N, L', h, w), on any device (detached; gradients are not kept).
            labels: Integer class map of shape (N, h, w) at the features' resolution (resize the ground
                truth with nearest interpolation first), with ``ignore_index`` for pixels to skip.

        Raises:
            TypeError: If ``labels`` is not an integer tensor.
            ValueError: If the shapes do not match, or a label is neither a class nor ``ignore_index``.
        """
        if feats.ndim != 4 or feats.shape[1] != self.dim:
            raise ValueError(f'feats must have shape (N, {self.dim}, h, w) (dim={self.dim}), got {tuple(feats.shape)}.')
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise TypeError(f'labels must be an integer class map, got {labels.dtype}.')
        n, _, height, width = feats.shape
        if tuple(labels.shape) != (n, height, width):
            raise ValueError(
                f'labels must have shape (N, h, w) = {(n, height, width)} like feats, got {tuple(labels.shape)}; '
                f'resize the label map to the feature size with nearest interpolation before add().')
        lab = labels.reshape(-1).to('cpu', torch.long)
        valid = lab != self.ignore_index
        bad = valid & ((lab < 0) | (lab >= self.num_classes))
        if bad.any():
            raise ValueError(
                f'labels hold values {lab[bad].unique().tolist()[:10]} outside [0, num_classes={self.num_classes}) '
                f'that are not ignore_index={self.ignore_index}; check num_classes and ignore_index.')

        m = self.max_pixels_per_class
        pix = valid.nonzero().squeeze(1)  # flat index n * h * w + y * w + x of each valid pixel
        cls = lab[pix]
        key = torch.rand(pix.numel(), generator=self._generator, dtype=torch.float64)
        counts = torch.bincount(cls, minlength=self.num_classes)
        self._seen += counts

        # This call's candidates: per class, its pixels with the M largest keys, ranked 0..M-1.
        order = torch.argsort(cls.double() * 2.0 - key)  # by class, then by key descending (keys are < 1)
        cls, key, pix = cls[order], key[order], pix[order]
        rank = torch.arange(cls.numel()) - (torch.cumsum(counts, 0) - counts)[cls]
        top = rank < m
        cls, key, pix, rank = cls[top], key[top], pix[top], rank[top]
        new_keys = torch.full((self.num_classes, m), _NO_CANDIDATE, dtype=torch.float64)
        new_keys[cls, rank] = key
        new_pix = torch.full((self.num_classes, m), -1, dtype=torch.long)
        new_pix[cls, rank] = pix

        # Keep the M largest keys among old slots and new candidates. As the M old slots all rank above
        # every padding candidate, exactly as many old slots drop out as new candidates enter, per class.
        cand = torch.cat([self._keys, new_keys], dim=1)  # (C, 2M)
        keep = torch.zeros_like(cand, dtype=torch.bool).scatter_(1, cand.topk(m, dim=1).indices, True)
        out_c, out_s = (~keep[:, :m]).nonzero(as_tuple=True)  # slots that receive a new pixel
        in_c, in_s = keep[:, m:].nonzero(as_tuple=True)  # candidates that enter, in the same class order
        assert torch.equal(out_c, in_c), 'reservoir invariant: per class, as many slots leave as enter'
        if out_c.numel() == 0:
            return
        src = new_pix[in_c, in_s]
        img, rest = src // (height * width), src % (height * width)
        idx = [t.to(feats.device) for t in (img, rest // width, rest % width)]
        vectors = feats[idx[0], :, idx[1], idx[2]]  # (P, L'): gathers only the entering pixels
        self._feats[out_c.to(self.device), out_s.to(self.device)] = vectors.to(self.device, self.dtype)
        self._keys[out_c, out_s] = new_keys[in_c, in_s]

    @torch.no_grad()
    def merge_across_ranks(self) -> None:
        """Under DDP, replaces every rank's reservoir by the one sample a single process would have kept.

        Each rank fills its own reservoir from its shard of the labeled set. As every kept pixel carries its
        uniform key, the M largest keys of a class over *all* ranks' reservoirs are the M largest keys over
        all its pixels: a uniform sample of at most M pixels of the class over the whole set, exactly what
        one process seeing every pixel with these keys would keep. Steps:

        1. ``all_gather`` the keys (C, M) of every rank and, per class, take the top M of the (C, world × M)
           concatenation; the merged slot ``s`` of class ``c`` comes from rank ``r`` and slot ``s'``.
        2. Per class (to bound memory to one (M, L') buffer), every rank writes the feature rows it owns into
           their merged slots of a zero buffer, and an ``all_reduce(sum)`` gives every rank all the rows
           (each slot has exactly one non-zero contribution, so the sum is exact).
        3. The merged keys are the top-M keys (slots whose key is negative stay empty, -1); the pixel counts
           of :meth:`counts` are summed over ranks.

        Afterwards every rank holds identical features, keys and counts, so :func:`kmeans_prototypes` gives
        the same result on every rank. A no-op when the world size is 1 (or ``torch.distributed`` is not
        initialised). Communication goes through the backend's device (CUDA for NCCL, CPU for gloo); sums are
        done in float32 on gloo, which may not sum float16, and cast back to the storage dtype.

        Seeds: the ranks' keys must be independent, so **build each rank's reservoir with a different seed**
        (e.g. ``seed + rank``, as ``PrototypeInitHook`` does). With equal seeds and shards of equal pixel
        counts every rank draws the same keys, ties between ranks then decide which pixels are kept, and the
        sample is no longer uniform. Ties of independent float64 keys have probability 0.

        Call it once, after the last :meth:`add` of every rank: after a merge each kept pixel is held by all
        ranks, so a second merge would count it once per rank.

        Raises:
            ValueError: If the ranks' reservoirs differ in ``num_classes``, ``max_pixels_per_class`` or ``dim``.
            RuntimeError: If the reservoir was already merged.
        """
        from mmengine import dist  # deferred: a reservoir without DDP needs no mmengine

        world_size = dist.get_world_size()
        if world_size == 1:
            return
        if self._merged:
            raise RuntimeError('merge_across_ranks() was already called on this reservoir: its pixels are held by '
                               'every rank now, a second merge would count each of them once per rank. Merge once, '
                               'after the last add().')
        device = dist.get_comm_device()
        comm_dtype = torch.float32 if dist.get_backend() == 'gloo' else self.dtype
        m, rank = self.max_pixels_per_class, dist.get_rank()

        shape = torch.tensor([self.num_classes, m, self.dim], dtype=torch.long, device=device)
        shapes = [s.cpu() for s in dist.all_gather(shape)]
        if any(not torch.equal(s, shapes[0]) for s in shapes):
            raise ValueError('merge_across_ranks(): the ranks\' reservoirs differ in (num_classes, '
                             f'max_pixels_per_class, dim): {[tuple(s.tolist()) for s in shapes]}; build them from the '
                             'same settings on every rank.')

        all_keys = torch.cat([k.cpu() for k in dist.all_gather(self._keys.to(device))], dim=1)  # (C, world * M)
        top_keys, top_idx = all_keys.topk(m, dim=1)  # (C, M), descending: merged slot s of class c
        src_rank, src_slot = top_idx // m, top_idx % m
        mine = (top_keys >= 0) & (src_rank == rank)  # merged slots whose pixel this rank holds
        for c in range(self.num_classes):
            dst = mine[c].nonzero().squeeze(1)
            buffer = torch.zeros(m, self.dim, dtype=comm_dtype, device=device)
            buffer[dst.to(device)] = self._feats[c, src_slot[c, dst].to(self.device)].to(device, comm_dtype)
            dist.all_reduce(buffer, op='sum')
            self._feats[c] = buffer.to(self.device, self.dtype)
        self._keys = torch.where(top_keys >= 0, top_keys, torch.full_like(top_keys, _EMPTY_SLOT))
        seen = self._seen.to(device)
        dist.all_reduce(seen, op='sum')
        self._seen = seen.cpu()
        self._merged = True

    def counts(self) -> Tensor:
        """Pixels seen per class so far (before sampling).

        Returns:
            LongTensor of shape (C,) on the CPU.
        """
        return self._seen.clone()

    def num_samples(self) -> Tensor:
        """Pixels held per class, ``min(counts(), M)``.

        Returns:
            LongTensor of shape (C,) on the CPU.
        """
        return (self._keys >= 0).sum(dim=1)

    def samples(self, c: int) -> Tensor:
        """The sampled pixel features of class ``c`` (a copy, in no particular order).

        Args:
            c: Class index in ``[0, C)``.

        Returns:
            Tensor of shape (m_c, L') with ``m_c = min(counts()[c], M)``, of the storage dtype and device.

        Raises:
            ValueError: If ``c`` is not a class index.
        """
        if not 0 <= c < self.num_classes:
            raise ValueError(f'c must be a class index in [0, {self.num_classes}), got {c}.')
        return self._feats[c][(self._keys[c] >= 0).to(self.device)]

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_classes={self.num_classes}, max_pixels_per_class='
                f'{self.max_pixels_per_class}, dim={self.dim}, dtype={self.dtype}, nbytes={self.nbytes})')


def kmeans_prototypes(reservoir: ClassPixelReservoir, num_parts: int, *, seed: int = 0, n_init: int = 10,
                      max_iter: int = 300) -> Tuple[Tensor, Dict]:
    """Subclass prototypes by K-means on each class's L2-normalised pixel sample (paper §3.3).

    For each class c: ``x = F.normalize(reservoir.samples(c).float(), dim=1)``, then
    ``sklearn.cluster.KMeans(n_clusters=K, random_state=seed, n_init=n_init, max_iter=max_iter).fit(x)``, and
    the prototypes are the cluster centres, L2-normalised.

    Why normalise: Eq. 7 assigns a pixel to its part by cosine similarity, while K-means uses Euclidean
    distance. On unit vectors ``|a - b|² = 2 - 2 cos(a, b)``, so clustering normalised pixels groups them by
    direction, as Eq. 7 will (close to spherical K-means, though Lloyd's centres are not renormalised between
    iterations). The centres of unit vectors have norm <= 1; we return them normalised, which does not
    change Eq. 7 (cosine ignores scale) but fixes the scale of P: an Eq. 12 update should then mix in
    normalised part means P' too, or the larger-norm raw features would dominate the average.

    Classes that K-means cannot serve never raise; they are reported:

    * ``'fewer_than_k'``: 0 < m_c < K sampled pixels. The prototypes are those normalised pixels, repeated
      cyclically to fill K rows (``x[k % m_c]``); duplicate prototypes tie in Eq. 7 and argmax picks the
      first, so the class simply has m_c distinct parts.
    * ``'absent'``: no pixel of the class in the labeled set. Its K prototypes are zeros: every cosine with
      them is 0, so Eq. 7 puts all its pixels in part 0 until Eq. 12 moves the prototypes.

    Args:
        reservoir: The filled reservoir.
        num_parts: Number of parts K per class (>= 1).
        seed: ``random_state`` of every KMeans run (the same for all classes).
        n_init: K-means++ restarts per class; the run with the lowest inertia is kept.
        max_iter: Maximum Lloyd iterations per run.

    Returns:
        A tuple ``(prototypes, report)``: ``prototypes`` is a float32 CPU tensor of shape (C, K, L');
        ``report`` is a dict with ``num_classes``, ``num_parts``, ``absent`` and ``fewer_than_k`` (lists of
        class indices) and ``per_class``, a list of C dicts with ``seen`` (pixels added), ``sampled``
        (pixels clustered), ``status`` (``'ok' | 'fewer_than_k' | 'absent'``) and ``warnings`` (messages
        of sklearn, e.g. fewer distinct points than K).

    Raises:
        ValueError: If ``num_parts`` is not a positive int.
    """
    from sklearn.cluster import KMeans  # deferred: importing sklearn costs ~1 s, and only this function needs it

    num_parts = positive_int('num_parts', num_parts, owner='kmeans_prototypes (K parts per class)')
    num_classes, dim, k = reservoir.num_classes, reservoir.dim, num_parts
    prototypes = torch.zeros(num_classes, k, dim, dtype=torch.float32)
    seen = reservoir.counts().tolist()
    per_class: List[Dict] = []
    for c in range(num_classes):
        x = F.normalize(reservoir.samples(c).to('cpu', torch.float32), dim=1)
        m = x.shape[0]
        caught: List[str] = []
        status: Optional[str]
        if m == 0:
            status = 'absent'
        elif m < k:
            status = 'fewer_than_k'
            prototypes[c] = x[torch.arange(k) % m]
        else:
            status = 'ok'
            kmeans = KMeans(n_clusters=k, random_state=seed, n_init=n_init, max_iter=max_iter)
            with warnings.catch_warnings(record=True) as records:
                warnings.simplefilter('always')
                kmeans.fit(x.numpy())
            caught = [str(r.message) for r in records]
            centres = torch.from_numpy(kmeans.cluster_centers_).to(torch.float32)
            prototypes[c] = F.normalize(centres, dim=1)
        per_class.append(dict(seen=int(seen[c]), sampled=m, status=status, warnings=caught))
    report = dict(
        num_classes=num_classes,
        num_parts=k,
        absent=[c for c, r in enumerate(per_class) if r['status'] == 'absent'],
        fewer_than_k=[c for c, r in enumerate(per_class) if r['status'] == 'fewer_than_k'],
        per_class=per_class,
    )
    return prototypes, report
