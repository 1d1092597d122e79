"""The C×K part memory bank of ESL: one FIFO queue of part means per (class, part), shared by all ranks.

ESL's pixel-to-part contrast (paper, Sec. 3.3) pools the teacher's projected features ``z^t`` of each image
over each object part ``(c, k)`` (mask average pooling, Eq. 8) and pushes the mean ``mu_{c,k}`` "subclass-wisely
into a memory bank composed of C × K First-In-First-Out (FIFO) queues of size q". For every anchor pixel of
class ``c`` and part ``k*`` (Eq. 7), the loss (Eq. 10) draws one positive from queue ``(c, k*)`` and
``N_s = 255`` negatives "from other queues excluding (c, k*)".

:class:`PartMemoryBank` holds those queues and draws the samples:

* **State lives in buffers** (``queues``, ``pointers``, ``fill``), so checkpoints carry the bank and a resumed
  run continues with the same queues, and ``model.to(device)`` moves it with the model.
* **Queue** ``c * K + k`` holds the means of part ``k`` of class ``c``. Flat index ``j * q + s`` addresses
  slot ``s`` of queue ``j`` in :meth:`PartMemoryBank.flat_entries`; the samplers return such flat indices,
  so the loss gathers the vectors it needs with one indexing operation.
* **Raw means are stored**, in float32 and detached. Eq. 10 compares vectors by cosine similarity, so the
  loss L2-normalises anchors and samples itself; storing raw means keeps the bank independent of that choice.
* **Identical on every rank.** Under DDP, :meth:`PartMemoryBank.enqueue` first gathers the means of all
  ranks and enqueues them in rank order, so every rank holds the same bank (and a DDP wrapper that broadcasts
  buffers from rank 0 changes nothing). ``enqueue`` is then a collective: every rank must call it at the
  same point of every iteration, with ``N = 0`` images if it has none.

Typical use, once per iteration, after the teacher's forward::

    bank.enqueue(part_means, part_counts)              # (N, C, K, L), (N, C, K); no gradient
    pos = bank.sample_positive_idx(anchor_queue)       # (A,), -1 where the anchor's queue is empty
    neg = bank.sample_negative_idx(anchor_queue, 255)  # (A, 255), -1 rows where nothing is eligible
    keep = (pos >= 0) & (neg[:, 0] >= 0)
    entries = bank.flat_entries()
    v_pos, v_neg = entries[pos[keep]], entries[neg[keep]]  # (A', L), (A', 255, L)

No Python loop runs over images, queues, entries or anchors. Random numbers are drawn on the generator's
device and moved to the bank's device, so a seeded CPU generator gives the same draws whatever the device.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.dist import all_gather, get_world_size
from torch import Tensor, nn

from ...checks import positive_int

__all__ = ['PartMemoryBank']

#: Rules for the negatives of an anchor of queue (c, k*): 'part' excludes that queue only (the paper),
#: 'class' excludes every part of class c.
EXCLUDE_RULES: Tuple[str, ...] = ('part', 'class')


def _check_positive_int(name: str, value: int) -> int:
    return positive_int(name, value)


class PartMemoryBank(nn.Module):
    """``C × K`` FIFO queues of part means (Eq. 8), and the positive/negative sampling of Eq. 10.

    **Queue size.** The paper does not give ``q``. The default 256 is a judgment call:

    * *Memory*: ``C · K · q · L · 4`` bytes; for Pascal VOC (C = 21, K = 5, L = 512) that is
      21 · 5 · 256 · 512 · 4 B ≈ 55 MB in float32 (50 MB for Cityscapes' 19 classes), small on a GPU.
    * *Enough negatives*: a full bank offers ``(C · K − 1) · q`` ≈ 27 000 candidates for the ``N_s = 255``
      negatives of an anchor, so a draw with replacement repeats few of them; and each queue alone holds
      more entries than one anchor's negatives.
    * *Fresh entries*: an image adds at most one mean per queue, so a part seen in every image is renewed
      after ``q / images-per-iteration`` iterations (16 iterations for 16 images per iteration over all
      ranks), well within the horizon of the EMA teacher that produced the means (decay 0.99, ~100
      iterations). Rare parts keep older means, which is the point of a bank.

    **Buffers** (all persistent, so they are in ``state_dict()`` and checkpoints):

    * ``queues``: float32 of shape (C·K, q, L), the stored raw (not normalised) means.
    * ``pointers``: long of shape (C·K,), the slot the next mean of each queue is written to. Once a queue is
      full it is also its oldest entry.
    * ``fill``: long of shape (C·K,), the number of filled slots of each queue (``<= q``). Slots fill in order
      from 0, so slot ``s`` of queue ``j`` holds a mean iff ``s < fill[j]`` (:meth:`slot_valid`).

    Args:
        num_classes: Number of classes C.
        num_parts: Number of parts (sub-classes) K per class.
        dim: Feature dimension L of the projected features (512 in the paper).
        queue_size: Length q of every queue (default 256, see above).

    Raises:
        ValueError: If an argument is not a positive integer; the message names it.
    """

    queues: Tensor
    pointers: Tensor
    fill: Tensor

    def __init__(self, *, num_classes: int, num_parts: int, dim: int, queue_size: int = 256) -> None:
        super().__init__()
        self.num_classes = _check_positive_int('num_classes', num_classes)
        self.num_parts = _check_positive_int('num_parts', num_parts)
        self.dim = _check_positive_int('dim', dim)
        self.queue_size = _check_positive_int('queue_size', queue_size)
        self.register_buffer('queues', torch.zeros(self.num_queues, self.queue_size, self.dim, dtype=torch.float32))
        self.register_buffer('pointers', torch.zeros(self.num_queues, dtype=torch.long))
        self.register_buffer('fill', torch.zeros(self.num_queues, dtype=torch.long))

    @property
    def num_queues(self) -> int:
        """Number of queues, ``C · K``; queue ``c · K + k`` holds part ``k`` of class ``c``."""
        return self.num_classes * self.num_parts

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, num_parts={self.num_parts}, dim={self.dim}, '
                f'queue_size={self.queue_size}')

    # ------------------------------------------------------------------------------------------- writing

    @torch.no_grad()
    def enqueue(self, means: Tensor, counts: Tensor) -> None:
        """Pushes every present per-image part mean into its queue, first-in first-out.

        The entry of image ``n`` for part ``(c, k)`` is pushed into queue ``c · K + k`` iff
        ``counts[n, c, k] > 0``; absent parts (count 0, whose mean is undefined) are skipped. Entries enter
        in image order (under DDP: rank order, then image order within a rank). The write slot of an entry is
        ``(pointer + rank) % q``, where ``rank`` is its position among this call's entries of the same queue,
        so a queue wraps around and overwrites its oldest entries. If a queue receives more than ``q``
        entries in one call, only its last ``q`` are kept (the earlier ones would be overwritten anyway).

        Under DDP (``torch.distributed`` initialised with world size > 1) the means and counts of all ranks
        are gathered first, so every rank enqueues the same entries in the same order and holds an identical
        bank. Ranks may pass different ``N`` (the smaller batches are padded with absent entries). This makes
        ``enqueue`` a collective: every rank must call it, the same number of times.

        Args:
            means: Float tensor of shape (N, C, K, L), the mask-averaged features of Eq. 8. Detached and stored
                as float32; any device (moved to the bank's device).
            counts: Tensor of shape (N, C, K), the number (or total weight) of pixels of each part in each
                image; only ``counts > 0`` matters.

        Raises:
            ValueError: If ``means`` is not (N, C, K, L) or ``counts`` not (N, C, K) with the bank's C, K, L.
        """
        expected = (self.num_classes, self.num_parts, self.dim)
        if means.ndim != 4 or tuple(means.shape[1:]) != expected:
            raise ValueError(f'means must have shape (N, {", ".join(map(str, expected))}) = (N, C, K, L), got '
                             f'{tuple(means.shape)}')
        if tuple(counts.shape) != tuple(means.shape[:3]):
            raise ValueError(f'counts must have shape {tuple(means.shape[:3])} = (N, C, K) like means, got '
                             f'{tuple(counts.shape)}')
        device, q = self.queues.device, self.queue_size
        means = means.detach().to(device=device, dtype=torch.float32).reshape(-1, self.num_queues, self.dim)
        present = (counts.detach() > 0).to(device).reshape(-1, self.num_queues)
        if get_world_size() > 1:
            means, present = self._gather(means, present)

        num_new = present.sum(0)  # (C·K,) entries per queue in this call
        rank_in_queue = present.cumsum(0) - 1  # (N, C·K): position among this call's entries of the queue
        img, queue = present.nonzero(as_tuple=True)  # row-major: image order, the order entries enter
        rank = rank_in_queue[img, queue]
        # Only the last q entries of a queue survive this call; dropping the others also makes the write
        # slots unique, so the indexed write below is deterministic on every device.
        keep = rank >= num_new[queue] - q
        img, queue, rank = img[keep], queue[keep], rank[keep]
        slot = (self.pointers[queue] + rank) % q  # distinct within a queue: at most q consecutive ranks
        self.queues[queue, slot] = means[img, queue]
        self.pointers.add_(num_new).remainder_(q)
        self.fill.add_(num_new).clamp_(max=q)

    @staticmethod
    def _gather(means: Tensor, present: Tensor) -> Tuple[Tensor, Tensor]:
        """All ranks' ``means`` (N, Q, L) and ``present`` (N, Q), concatenated in rank order.

        Batches are padded to the largest N with absent entries, since ``all_gather`` needs equal shapes.
        """
        sizes = all_gather(torch.tensor([means.shape[0]], device=means.device))
        pad = int(torch.cat(sizes).max()) - means.shape[0]
        means = F.pad(means, (0, 0, 0, 0, 0, pad))
        present = F.pad(present.to(torch.uint8), (0, 0, 0, pad))  # bool is not supported by every backend
        return torch.cat(all_gather(means)), torch.cat(all_gather(present)).bool()

    # ------------------------------------------------------------------------------------------- reading

    def flat_entries(self) -> Tensor:
        """All slots as one matrix, a view of ``queues``: row ``j · q + s`` is slot ``s`` of queue ``j``.

        Returns:
            Float32 tensor of shape (C·K·q, L). Rows of unfilled slots are zeros; the samplers never return
            them. Do not write into it (it is the bank's storage).
        """
        return self.queues.view(-1, self.dim)

    def slot_valid(self) -> Tensor:
        """Which slots hold a mean.

        Returns:
            BoolTensor of shape (C·K, q), True where ``slot < fill[queue]``.
        """
        slots = torch.arange(self.queue_size, device=self.fill.device)
        return slots[None, :] < self.fill[:, None]

    def fill_fraction(self) -> Tensor:
        """Fraction of filled slots over the whole bank, for logging.

        Returns:
            0-dim float tensor, ``sum(fill) / (C·K·q)`` in ``[0, 1]``.
        """
        return self.fill.sum().float() / (self.num_queues * self.queue_size)

    # ------------------------------------------------------------------------------------------- sampling

    def _check_queue_idx(self, queue_idx: Tensor) -> Tensor:
        if queue_idx.ndim != 1 or queue_idx.dtype.is_floating_point or queue_idx.dtype == torch.bool:
            raise ValueError(f'queue_idx must be a 1-D integer tensor (A,), got shape {tuple(queue_idx.shape)} '
                             f'and dtype {queue_idx.dtype}')
        queue_idx = queue_idx.to(device=self.fill.device, dtype=torch.long)
        if ((queue_idx < 0) | (queue_idx >= self.num_queues)).any():
            raise ValueError(f'queue_idx must lie in [0, C·K) = [0, {self.num_queues}) with queue = c * K + k, got '
                             f'values in [{int(queue_idx.min())}, {int(queue_idx.max())}]')
        return queue_idx

    def _uniform(self, shape: Tuple[int, ...], generator: Optional[torch.Generator]) -> Tensor:
        """Float64 uniforms in [0, 1), drawn on the generator's device and moved to the bank's device."""
        draw_on = generator.device if generator is not None else self.fill.device
        u = torch.rand(shape, generator=generator, dtype=torch.float64, device=draw_on)
        return u.to(self.fill.device)

    def sample_positive_idx(self, queue_idx: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """One positive per anchor: a uniformly random filled slot of the anchor's own queue.

        Args:
            queue_idx: Integer tensor of shape (A,), the queue ``c · K + k*`` of each anchor (Eq. 7).
            generator: Source of randomness, for reproducible draws.

        Returns:
            LongTensor of shape (A,) of flat indices into :meth:`flat_entries`; ``-1`` where the anchor's queue
            is still empty. The caller drops those anchors (they have no positive yet).

        Raises:
            ValueError: If ``queue_idx`` is not a 1-D integer tensor with values in ``[0, C·K)``.
        """
        queue_idx = self._check_queue_idx(queue_idx)
        filled = self.fill[queue_idx]
        slot = (self._uniform(tuple(queue_idx.shape), generator) * filled).long()
        slot = torch.minimum(slot, (filled - 1).clamp(min=0))  # guards float rounding of u * filled
        return torch.where(filled > 0, queue_idx * self.queue_size + slot, torch.full_like(slot, -1))

    def sample_negative_idx(self,
                            queue_idx: Tensor,
                            num_negatives: int = 255,
                            *,
                            exclude: str = 'part',
                            class_of_queue: Optional[Tensor] = None,
                            generator: Optional[torch.Generator] = None) -> Tensor:
        """``num_negatives`` negatives per anchor, uniformly over the filled entries of the other queues.

        Every filled slot of every eligible queue is equally likely (so a fuller queue gives more negatives);
        draws are with replacement and never hit an unfilled slot. Eligible queues, for an anchor of queue
        ``(c, k*)``:

        * ``exclude='part'`` (default, the paper's rule: "other queues excluding (c, k*)"): every queue but
          ``(c, k*)``, so the other parts of class ``c`` *are* negatives, which is what separates the parts.
        * ``exclude='class'``: only the queues of the other classes.

        Implementation: filled entries are numbered queue after queue (cumulative ``fill``); the excluded
        queues form one block of that numbering, so a uniform integer ``r`` over the eligible count is shifted
        past the block (``r += width`` if ``r >= block start``) and mapped back to its queue by a
        lookup in a table of the position of every filled entry. Memory is O(A · N_s) indices.

        Args:
            queue_idx: Integer tensor of shape (A,), the queue ``c · K + k*`` of each anchor.
            num_negatives: Negatives per anchor, ``N_s`` (255 in the paper), >= 0.
            exclude: ``'part'`` or ``'class'``, see above.
            class_of_queue: Only used with ``exclude='class'``: integer tensor of shape (C·K,) giving the class
                of every queue, to group queues differently; defaults to ``queue // K``.
            generator: Source of randomness, for reproducible draws.

        Returns:
            LongTensor of shape (A, num_negatives) of flat indices into :meth:`flat_entries`; a row is all
            ``-1`` where the anchor has no eligible entry (e.g. early in training, when only its own class
            has been seen). The caller drops those anchors.

        Raises:
            ValueError: If ``queue_idx``, ``num_negatives``, ``exclude`` or ``class_of_queue`` is invalid; the
                message names the argument.
        """
        if exclude not in EXCLUDE_RULES:
            raise ValueError(f'exclude must be one of {EXCLUDE_RULES}, got {exclude!r}')
        if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 0:
            raise ValueError(f'num_negatives must be a non-negative integer, got {num_negatives!r}')
        queue_idx = self._check_queue_idx(queue_idx)
        device, num_queues = self.fill.device, self.num_queues

        # Number the queues so that the excluded ones form a block [lo, hi) of positions.
        order: Optional[Tensor] = None  # position -> queue; None means identity
        if exclude == 'part':
            lo, hi = queue_idx, queue_idx + 1
        elif class_of_queue is None:
            lo = queue_idx - queue_idx % self.num_parts
            hi = lo + self.num_parts
        else:
            if (class_of_queue.shape != (num_queues,) or class_of_queue.dtype.is_floating_point
                    or class_of_queue.dtype == torch.bool):
                raise ValueError(f'class_of_queue must be an integer tensor of shape ({num_queues},) = (C·K,), got '
                                 f'shape {tuple(class_of_queue.shape)} and dtype {class_of_queue.dtype}')
            class_of_queue = class_of_queue.to(device=device, dtype=torch.long)
            sorted_class, order = torch.sort(class_of_queue, stable=True)
            anchor_class = class_of_queue[queue_idx]
            lo = torch.searchsorted(sorted_class, anchor_class, right=False)
            hi = torch.searchsorted(sorted_class, anchor_class, right=True)
        fill = self.fill if order is None else self.fill[order]
        cum = fill.cumsum(0)  # cum[p]: filled entries in positions <= p
        start = F.pad(cum, (1, 0))  # start[p]: number of the first entry of position p; start[-1] = total
        total = start[-1]
        skip_from, width = start[lo], start[hi] - start[lo]  # the excluded entries, (A,) each
        eligible = total - width
        total_entries = int(total)  # one number to the host: the size of the lookup table below
        if total_entries == 0:
            return torch.full((queue_idx.shape[0], num_negatives), -1, dtype=torch.long, device=device)

        u = self._uniform((queue_idx.shape[0], num_negatives), generator)
        # In place where possible: these (A, N_s) passes are the sampler's whole cost (A x 255 draws).
        r = u.mul_(eligible[:, None]).long()
        torch.minimum(r, (eligible[:, None] - 1).clamp(min=0), out=r)  # guards float rounding of u * eligible
        r.add_((r >= skip_from[:, None]) * width[:, None])  # jump over the excluded block
        r.clamp_(max=total_entries - 1)  # reached only by rows without eligible entries, set to -1 below
        # Entry r lies in position pos = searchsorted(cum, r, right=True); a table of the position of each of the
        # total_entries (<= C·K·q) entries gives it by one lookup (searchsorted was 60 % of the sampler on a CPU).
        position_of_entry = torch.repeat_interleave(torch.arange(num_queues, device=device), fill,
                                                    output_size=total_entries)
        pos = position_of_entry[r]
        # flat = queue(pos) * q + (r - start[pos]) = r + offset[pos], with one lookup table over the positions.
        queue_of_pos = torch.arange(num_queues, device=device) if order is None else order
        offset = queue_of_pos * self.queue_size - start[:-1]
        flat = r.add_(offset[pos])
        return flat.masked_fill_(eligible[:, None] <= 0, -1)
