"""Splits of a dataset that is a folder of images and a folder of (some) masks: validation, labeled, unlabeled.

For a user who arrives with ``images/`` and ``masks/`` instead of published split files
(``tools/make_splits.py --img-dir``). Ids are file paths relative to the image folder without the suffix, as
``SplitSegDataset`` joins them back (``img_dir/id + img_suffix``, ``ann_dir/id + seg_map_suffix``).
"""
from __future__ import annotations

import os
import os.path as osp
from collections import Counter
from dataclasses import dataclass
from typing import List

from .splits import draw_labeled

_MAX_LISTED = 5


@dataclass
class FolderSplits:
    """The three splits, each a sorted list of ids.

    Attributes:
        val: Masked images held out for validation.
        labeled: Masked images the model trains on with their masks.
        unlabeled: Every other image (with or without a mask; a mask of an unlabeled image only feeds the logged
            pseudo-label accuracy, never a loss).
    """

    val: List[str]
    labeled: List[str]
    unlabeled: List[str]


def folder_ids(folder: str, suffix: str) -> List[str]:
    """Sorted ids of the files under ``folder`` (recursively) whose name ends with ``suffix``.

    Args:
        folder: The image or mask folder.
        suffix: File name ending, e.g. ``'.jpg'`` or ``'_mask.png'`` (case-sensitive, as mmseg matches it).

    Returns:
        ``relative/path/name`` without ``suffix``, ``/``-separated.

    Raises:
        FileNotFoundError: If ``folder`` is not a directory.
    """
    if not osp.isdir(folder):
        raise FileNotFoundError(f'{folder} is not a folder: check --data-root and the folder argument.')
    ids = []
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(suffix) and len(name) > len(suffix):
                rel = osp.relpath(osp.join(root, name), folder)
                ids.append(rel[:-len(suffix)].replace(os.sep, '/'))
    return sorted(ids)


def _endings(folder: str) -> str:
    """The most common file endings in ``folder``, e.g. ``'_mask.png' (40 files)``, for an error message."""
    counts: Counter = Counter()
    for _, _, files in os.walk(folder):
        for name in files:
            stem, ext = osp.splitext(name)
            tail = stem.rsplit('_', 1)[-1] if '_' in stem else ''
            counts[f'_{tail}{ext}' if tail.isalpha() else ext] += 1
    return ', '.join(f'{ending!r} ({n} files)' for ending, n in counts.most_common(3)) or 'no files'


def folder_splits(*, img_dir: str, img_suffix: str, ann_dir: str, seg_map_suffix: str, num_labeled: int,
                  num_val: int, seed: int = 0) -> FolderSplits:
    """Draws validation and labeled ids from the masked images; every other image is unlabeled.

    The validation ids are drawn first (:func:`~mmseg_esl.datasets.splits.draw_labeled` with ``seed``), then the
    labeled ids from the remaining masked images with the same seed: for one seed the validation set does not
    depend on ``num_labeled``, and a smaller labeled set lies inside a larger one.

    Args:
        img_dir: Image folder.
        img_suffix: Image file ending, e.g. ``'.jpg'``.
        ann_dir: Mask folder (index PNGs: pixel value = class index, 255 = ignore).
        seg_map_suffix: Mask file ending, e.g. ``'.png'`` or ``'_mask.png'``.
        num_labeled: Labeled images to draw.
        num_val: Validation images to draw.
        seed: Seed of both draws.

    Returns:
        The :class:`FolderSplits`.

    Raises:
        FileNotFoundError: If a folder does not exist.
        ValueError: If no image or no mask matches its suffix (the message names the endings found), masks have
            no image, or there are not enough masked images for ``num_val + num_labeled``.
    """
    images = folder_ids(img_dir, img_suffix)
    if not images:
        raise ValueError(f'No image in {img_dir} ends with {img_suffix!r}; the files there end with '
                         f'{_endings(img_dir)}. Pass --img-suffix with the images\' ending.')
    masks = folder_ids(ann_dir, seg_map_suffix)
    if not masks:
        raise ValueError(f'No mask in {ann_dir} ends with {seg_map_suffix!r}; the files there end with '
                         f'{_endings(ann_dir)}. Pass --seg-map-suffix with the masks\' ending (e.g. _mask.png when '
                         'image 0001.jpg has the mask 0001_mask.png).')
    image_set = set(images)
    orphans = [m for m in masks if m not in image_set]
    if orphans:
        hint = ''
        stems = {m.rsplit('_', 1)[0] for m in orphans if '_' in m}
        if stems and stems <= image_set and all('_' in m for m in orphans):
            hint = (f' The mask ids look like <image id>_{orphans[0].rsplit("_", 1)[1]}: pass --seg-map-suffix '
                    f'_{orphans[0].rsplit("_", 1)[1]}{seg_map_suffix}.')
        raise ValueError(f'{len(orphans)} of the {len(masks)} masks in {ann_dir} have no image in {img_dir} (ids '
                         f'{orphans[:_MAX_LISTED]}; image ids look like {images[:2]}). A mask is '
                         f'<ann_dir>/<id>{seg_map_suffix} for the image <img_dir>/<id>{img_suffix}: check both '
                         f'suffixes, or remove the masks without image.{hint}')
    if num_val < 1 or num_labeled < 1:
        raise ValueError(f'--num-val and --num-labeled must be positive, got {num_val} and {num_labeled}.')
    if num_val + num_labeled > len(masks):
        raise ValueError(f'{len(masks)} images have a mask, fewer than --num-val {num_val} + --num-labeled '
                         f'{num_labeled}: validation and labeled images both need masks. Lower one of them.')
    if len(masks) == len(images) and num_val + num_labeled == len(images):
        raise ValueError(f'--num-val {num_val} + --num-labeled {num_labeled} take all {len(images)} images: no image '
                         'would be unlabeled. Lower --num-labeled, or add images without masks.')
    val, rest = draw_labeled(images, num_val, seed, masks)
    rest_set = set(rest)
    labeled, unlabeled = draw_labeled(rest, num_labeled, seed, [m for m in masks if m in rest_set])
    return FolderSplits(val=val, labeled=labeled, unlabeled=unlabeled)

