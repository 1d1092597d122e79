"""CutMix for dense prediction: one box per image, applied identically to everything that describes the image.

The strong view x̃ of ESL "only contains CutMix" (paper, Sec. 4.1): a rectangle of every unlabeled image is
replaced by the same rectangle of another unlabeled image of the batch. For segmentation, the box must travel
with the images: the teacher predicts on the clean (weak) images and its full probability maps, its class
maps, its confidence maps and the valid-pixel masks are mixed with the *same* box and the *same* partner, so
that the target of every pixel of x̃ is the prediction for the pixel that was actually pasted there.

Two details matter:

* **Partners form a derangement.** Mixing an image with itself is a no-op (the box is pasted onto the same
  pixels), which silently weakens the strong view. ``torch.randperm`` has fixed points with probability
  ≈ 1 − 1/e, and ``flip(0)`` pairs the middle image of an odd batch with itself, so :func:`derangement`
  draws a permutation with ``partner[i] != i``. It needs at least two images per process; with a
  per-GPU unlabeled batch of one, draw an extra partner image instead.
* **The valid mask travels too.** Padding added by the data preprocessor is ignored through a valid-pixel
  mask (or ``ignore_index`` in a class map). Pixels pasted from the partner's padding must stay ignored, so
  the mask is mixed with the images, like everything else.

Typical use, once per iteration::

    params = make_cutmix_params(n, h, w, generator=gen, device=imgs.device)
    imgs_s, probs_s, valid_s = cutmix([imgs, teacher_probs, valid], params.partner, params.mask)
    feats_s, = cutmix([feats], params.partner, resize_mask(params.mask, feats.shape[-2:]))

Conventions: boxes are ``(y1, x1, y2, x2)`` in pixels, half-open (``y1 <= y < y2``); ``mask[i]`` is True
where image ``i`` receives pixels from image ``partner[i]``. No Python loop runs over images or pixels;
random numbers are drawn on the generator's device and moved to ``device``, so a seeded CPU generator gives
the same draws whatever the device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'CutMixParams',
    'box_masks',
    'cutmix',
    'cutmix_masks',
    'derangement',
    'make_cutmix_params',
    'resize_mask',
    'sample_cutmix_boxes',
]

Device = Optional[Union[str, torch.device]]
Size2d = Union[int, Sequence[int]]

#: UniMatch's ``obtain_cutmix_box``: box area 2-40 % of the image, aspect ratio between 0.3 and 1/0.3.
DEFAULT_AREA_RANGE: Tuple[float, float] = (0.02, 0.4)
DEFAULT_RATIO_RANGE: Tuple[float, float] = (0.3, 1 / 0.3)


def _draw_device(generator: Optional[torch.Generator], device: Device) -> Device:
    """Where random numbers are drawn: on the generator's device (a generator only draws there)."""
    return generator.device if generator is not None else device


def _out_device(generator: Optional[torch.Generator], device: Device) -> Device:
    """Where results live: ``device`` if given, else the generator's device, else torch's default."""
    if device is not None:
        return device
    return generator.device if generator is not None else None


def derangement(n: int, generator: Optional[torch.Generator] = None, device: Device = None) -> Tensor:
    """A random permutation without fixed points: ``partner[i] != i`` for every ``i``.

    Draws a random order ``s`` of the ``n`` indices and a random shift ``k`` in ``[1, n - 1]``, then sets
    ``partner[s[j]] = s[(j + k) % n]``. Since ``k`` is not a multiple of ``n``, no index maps to itself. The
    result is random and reproducible with ``generator``, but not uniform over all derangements (it is
    always a power of an ``n``-cycle, conjugated by ``s``), which CutMix does not need.

    Args:
        n: Number of images to pair, at least 2.
        generator: Source of randomness; the same seed gives the same permutation.
        device: Device of the result; defaults to the generator's device, else torch's default device.

    Returns:
        LongTensor of shape (n,): ``partner[i]`` is the image whose box is pasted into image ``i``.

    Raises:
        ValueError: If ``n < 2``: an image cannot be paired with a different one.
    """
    if n < 2:
        raise ValueError(
            f'CutMix needs at least 2 images to pair each image with a different one, got n={n}. Provide '
            f'>= 2 unlabeled images per process (e.g. draw an extra partner image), since mixing an image '
            f'with itself is a no-op.')
    draw_on = _draw_device(generator, device)
    order = torch.randperm(n, generator=generator, device=draw_on)
    shift = torch.randint(1, n, (1,), generator=generator, device=draw_on)
    partner = torch.empty_like(order)
    partner[order] = order[(torch.arange(n, device=order.device) + shift) % n]
    return partner.to(_out_device(generator, device))


def _check_range(name: str, value: Sequence[float], *, upper: Optional[float]) -> Tuple[float, float]:
    """Validates ``0 < lo <= hi (<= upper)`` and returns ``(lo, hi)`` as floats."""
    if len(value) != 2:
        raise ValueError(f'{name} must be a (low, high) pair, got {value!r}')
    lo, hi = float(value[0]), float(value[1])
    if not 0 < lo <= hi or (upper is not None and hi > upper):
        bound = f' <= {upper:g}' if upper is not None else ''
        raise ValueError(f'{name} must satisfy 0 < low <= high{bound}, got {value!r}')
    return lo, hi


def sample_cutmix_boxes(n: int,
                        height: int,
                        width: int,
                        *,
                        area_range: Tuple[float, float] = DEFAULT_AREA_RANGE,
                        ratio_range: Tuple[float, float] = DEFAULT_RATIO_RANGE,
                        prob: float = 1.0,
                        generator: Optional[torch.Generator] = None,
                        device: Device = None) -> Tuple[Tensor, Tensor]:
    """Samples one random box per image, and whether to mix that image at all.

    The box covers a fraction of the image drawn uniformly in ``area_range``, with an aspect ratio
    ``box_h / box_w`` (in pixels) drawn log-uniformly in ``ratio_range`` (so that r and 1/r are equally
    likely), at a uniformly random position that keeps it inside the image. The defaults are those of
    UniMatch's ``obtain_cutmix_box`` (area 0.02-0.4, ratio 0.3-1/0.3; UniMatch draws the ratio uniformly and
    mixes with p=0.5). Our default ``prob`` is 1.0 because the ESL paper applies CutMix as *the* strong
    augmentation at every iteration.

    A box that would not fit (e.g. a tall box in a wide image) keeps its area and gives up its aspect ratio:
    its long side is clipped to the image and the other side grows. Sides are rounded to whole pixels, at
    least 1 pixel, so the area fraction is exact up to rounding.

    Args:
        n: Number of images (>= 0).
        height: Image height H in pixels (>= 1).
        width: Image width W in pixels (>= 1).
        area_range: ``(low, high)`` of the box area as a fraction of ``H * W``, ``0 < low <= high <= 1``.
        ratio_range: ``(low, high)`` of the aspect ratio ``box_h / box_w``, ``0 < low <= high``.
        prob: Probability that an image is mixed, in ``[0, 1]``.
        generator: Source of randomness, for reproducible boxes.
        device: Device of the results; defaults to the generator's device, else torch's default device.

    Returns:
        A tuple ``(boxes, apply)``: ``boxes`` is a LongTensor of shape (n, 4) holding ``(y1, x1, y2, x2)``,
        half-open, with ``0 <= y1 < y2 <= H`` and ``0 <= x1 < x2 <= W``; ``apply`` is a BoolTensor of shape
        (n,), False (with probability ``1 - prob``) where image ``i`` is not mixed. Every image gets a valid
        box either way; :func:`cutmix_masks` turns ``apply=False`` into an all-False mask.

    Raises:
        ValueError: If ``n``, ``height``, ``width``, ``area_range``, ``ratio_range`` or ``prob`` is out of
            range; the message names the argument.
    """
    if n < 0:
        raise ValueError(f'n must be >= 0, got {n}')
    if height < 1 or width < 1:
        raise ValueError(f'height and width must be >= 1, got height={height}, width={width}')
    area_lo, area_hi = _check_range('area_range', area_range, upper=1.0)
    ratio_lo, ratio_hi = _check_range('ratio_range', ratio_range, upper=None)
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f'prob must be in [0, 1], got {prob}')

    u = torch.rand((n, 5), generator=generator, device=_draw_device(generator, device))
    u = u.to(_out_device(generator, device))
    area = area_lo + (area_hi - area_lo) * u[:, 0]
    log_ratio = math.log(ratio_lo) + (math.log(ratio_hi) - math.log(ratio_lo)) * u[:, 1]
    pixel_ratio = torch.exp(log_ratio) * (width / height)  # box_h / box_w as fractions of H and W
    # Side lengths as fractions of the image side: frac_h * frac_w == area, frac_h / frac_w == pixel_ratio.
    frac_h = torch.sqrt(area * pixel_ratio).clamp(max=1.0)
    frac_w = (area / frac_h).clamp(max=1.0)
    frac_h = (area / frac_w).clamp(max=1.0)  # keeps the area when the width was clipped
    box_h = torch.round(frac_h * height).long().clamp(1, height)
    box_w = torch.round(frac_w * width).long().clamp(1, width)
    # Top-left corner uniform over the positions that keep the box inside: y1 in [0, H - box_h].
    y1 = torch.floor(u[:, 2] * (height - box_h + 1)).long().clamp(max=height - box_h)
    x1 = torch.floor(u[:, 3] * (width - box_w + 1)).long().clamp(max=width - box_w)
    boxes = torch.stack([y1, x1, y1 + box_h, x1 + box_w], dim=1)
    apply = u[:, 4] < prob  # torch.rand is in [0, 1): prob=1 always mixes, prob=0 never does
    return boxes, apply


def box_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """Rasterises boxes into masks, by broadcasting coordinate comparisons (no loop over boxes).

    Args:
        boxes: Integer tensor of shape (n, 4), ``(y1, x1, y2, x2)`` half-open, as from
            :func:`sample_cutmix_boxes`. Coordinates outside the image are allowed and simply clip.
        height: Mask height H.
        width: Mask width W.

    Returns:
        BoolTensor of shape (n, H, W) on ``boxes.device``, True where ``y1 <= y < y2`` and ``x1 <= x < x2``.

    Raises:
        ValueError: If ``boxes`` is not of shape (n, 4).
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f'boxes must have shape (n, 4) as (y1, x1, y2, x2), got {tuple(boxes.shape)}')
    ys = torch.arange(height, device=boxes.device).view(1, height, 1)
    xs = torch.arange(width, device=boxes.device).view(1, 1, width)
    y1, x1, y2, x2 = (boxes[:, k].view(-1, 1, 1) for k in range(4))
    rows = (ys >= y1) & (ys < y2)  # (n, H, 1)
    cols = (xs >= x1) & (xs < x2)  # (n, 1, W)
    return rows & cols


def cutmix_masks(boxes: Tensor, apply: Tensor, height: int, width: int) -> Tensor:
    """Box masks where images with ``apply=False`` get an all-False mask (they are left unchanged).

    Args:
        boxes: Integer tensor of shape (n, 4), ``(y1, x1, y2, x2)`` half-open.
        apply: BoolTensor of shape (n,): whether image ``i`` is mixed.
        height: Mask height H.
        width: Mask width W.

    Returns:
        BoolTensor of shape (n, H, W): True where image ``i`` receives the pixels of its partner.

    Raises:
        ValueError: If ``apply`` is not of shape (n,).
    """
    if apply.shape != boxes.shape[:1]:
        raise ValueError(f'apply must have shape ({boxes.shape[0]},) like boxes, got {tuple(apply.shape)}')
    return box_masks(boxes, height, width) & apply.to(device=boxes.device, dtype=torch.bool).view(-1, 1, 1)


def _check_mask(mask: Tensor) -> None:
    if mask.dtype != torch.bool:
        raise TypeError(f'mask must be a bool tensor, got {mask.dtype}')
    if mask.ndim != 3:
        raise ValueError(f'mask must have shape (N, H, W), got {tuple(mask.shape)}')


def resize_mask(mask: Tensor, size: Size2d, *, mode: str = 'nearest') -> Tensor:
    """Resizes CutMix masks to another resolution (e.g. a stride-4 feature map) by nearest interpolation.

    Use the same ``mode`` as for the label maps you compare the resized tensors with: ``'nearest'`` (the
    default, what mmseg uses to resize labels) takes source pixel ``floor(i * scale)``; ``'nearest-exact'``
    takes ``floor((i + 0.5) * scale)``, the pixel nearest to the cell's centre.

    Args:
        mask: BoolTensor of shape (N, H, W).
        size: Target ``(h, w)``, or an int for a square size.
        mode: ``'nearest'`` or ``'nearest-exact'``.

    Returns:
        BoolTensor of shape (N, h, w).

    Raises:
        TypeError: If ``mask`` is not bool.
        ValueError: If ``mask`` is not 3-D or ``mode`` is not a nearest mode.
    """
    _check_mask(mask)
    if mode not in ('nearest', 'nearest-exact'):
        raise ValueError(f"mode must be 'nearest' or 'nearest-exact', got {mode!r}")
    size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if tuple(mask.shape[-2:]) == size:
        return mask
    resized = F.interpolate(mask[:, None].float(), size=size, mode=mode)  # float: supported on every device
    return resized[:, 0].bool()


def cutmix(tensors: Sequence[Tensor], partner: Tensor, mask: Tensor) -> List[Tensor]:
    """Pastes the box of image ``partner[i]`` into image ``i``, identically in every tensor.

    Computes ``where(mask, t[partner], t)`` for each tensor ``t``, with the mask broadcast over channels.
    Works for any dtype (float images and probability maps, bool valid masks, long class maps) and keeps
    gradients. The inputs are not modified.

    Args:
        tensors: Tensors of shape (N, H, W) or (N, C, H, W) whose spatial size equals the mask's.
        partner: Integer tensor of shape (N,), e.g. from :func:`derangement`.
        mask: BoolTensor of shape (N, H, W), True where image ``i`` takes the pixels of ``partner[i]``
            (e.g. from :func:`cutmix_masks`). For other resolutions, use :func:`resize_mask` first.

    Returns:
        The mixed tensors, in the order given, each with the shape and dtype of its input.

    Raises:
        TypeError: If ``tensors`` is a single tensor, ``mask`` is not bool or ``partner`` not integer.
        ValueError: If a shape does not match (batch size, rank, or spatial size of the mask).
    """
    if isinstance(tensors, Tensor):
        raise TypeError('tensors must be a sequence of tensors; wrap a single tensor in a list: cutmix([t], ...)')
    _check_mask(mask)
    if partner.dtype.is_floating_point or partner.dtype.is_complex or partner.dtype == torch.bool:
        raise TypeError(f'partner must be an integer tensor of indices, got {partner.dtype}')
    n, height, width = mask.shape
    if partner.shape != (n,):
        raise ValueError(f'partner must have shape ({n},) like the mask, got {tuple(partner.shape)}')
    mixed = []
    for k, t in enumerate(tensors):
        if t.ndim not in (3, 4):
            raise ValueError(f'tensors[{k}] must have shape (N, H, W) or (N, C, H, W), got {tuple(t.shape)}')
        if t.shape[0] != n:
            raise ValueError(f'tensors[{k}] has batch size {t.shape[0]}, the mask has {n}')
        if tuple(t.shape[-2:]) != (height, width):
            raise ValueError(
                f'tensors[{k}] has spatial size {tuple(t.shape[-2:])}, the mask has {(height, width)}; resize '
                f'the mask with resize_mask(mask, {tuple(t.shape[-2:])}) and call cutmix for that size.')
        m = mask.to(t.device)
        if t.ndim == 4:
            m = m[:, None]
        mixed.append(torch.where(m, t[partner.to(t.device)], t))
    return mixed


@dataclass(frozen=True)
class CutMixParams:
    """The random draw of one CutMix step, shared by every tensor mixed in that step.

    Attributes:
        partner: LongTensor of shape (N,), a derangement: image ``i`` receives pixels from ``partner[i]``.
        mask: BoolTensor of shape (N, H, W), True inside the pasted box (all False for unmixed images).
    """

    partner: Tensor
    mask: Tensor

    def resized(self, size: Size2d, *, mode: str = 'nearest') -> CutMixParams:
        """The same draw with the mask resized by :func:`resize_mask` (e.g. for feature maps)."""
        return CutMixParams(self.partner, resize_mask(self.mask, size, mode=mode))


def make_cutmix_params(n: int,
                       height: int,
                       width: int,
                       *,
                       prob: float = 1.0,
                       area_range: Tuple[float, float] = DEFAULT_AREA_RANGE,
                       ratio_range: Tuple[float, float] = DEFAULT_RATIO_RANGE,
                       generator: Optional[torch.Generator] = None,
                       device: Device = None) -> CutMixParams:
    """Draws partners and boxes for one iteration; apply with ``cutmix([...], p.partner, p.mask)``.

    Draws :func:`derangement` first, then :func:`sample_cutmix_boxes`, from the same ``generator``.

    Args:
        n: Number of images, at least 2.
        height: Image height H.
        width: Image width W.
        prob: Probability that an image is mixed (1.0: always, as in the ESL paper).
        area_range: Box area as a fraction of the image, see :func:`sample_cutmix_boxes`.
        ratio_range: Box aspect ratio ``box_h / box_w``, see :func:`sample_cutmix_boxes`.
        generator: Source of randomness, for reproducible draws.
        device: Device of the results; defaults to the generator's device, else torch's default device.

    Returns:
        :class:`CutMixParams` with ``partner`` (N,) and ``mask`` (N, H, W).

    Raises:
        ValueError: If ``n < 2`` or an argument is out of range (see :func:`sample_cutmix_boxes`).
    """
    partner = derangement(n, generator=generator, device=device)
    boxes, apply = sample_cutmix_boxes(n, height, width, area_range=area_range, ratio_range=ratio_range,
                                       prob=prob, generator=generator, device=device)
    return CutMixParams(partner=partner, mask=cutmix_masks(boxes, apply, height, width))
