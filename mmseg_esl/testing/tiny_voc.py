"""A tiny dataset in Pascal VOC layout, generated deterministically for tests and smoke runs.

Layout (the one mmseg's ``PascalVOCDataset`` and our configs read)::

    root/
      JPEGImages/<id>.jpg               RGB images of slightly different sizes
      SegmentationClass/<id>.png        palette ("P" mode) PNGs: class index per pixel, 255 on object borders
      ImageSets/Segmentation/train.txt  one id per line
      ImageSets/Segmentation/val.txt
      ImageSets/Segmentation/labeled.txt, unlabeled.txt   a semi-supervised split of train.txt

Each image has a textured background (class 0) and a few objects, one shape per class (square, disc,
bar), drawn in a class colour with noise, so a small network can learn it in a few hundred iterations.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

#: Class names of the tiny dataset; index = label value.
TINY_VOC_CLASSES: Tuple[str, ...] = ('background', 'square', 'disc', 'bar')
#: Mean RGB colour each class is drawn with.
_CLASS_COLOURS = np.array([[90, 90, 90], [200, 60, 50], [60, 170, 70], [60, 80, 200]], dtype=np.float32)
IGNORE_INDEX = 255


def voc_palette(num_entries: int = 256) -> List[List[int]]:
    """Returns the Pascal VOC colour map (``[[r, g, b], ...]``, entry 255 is the VOC border colour).

    Args:
        num_entries: Number of palette entries to return (at most 256).
    """
    palette = []
    for index in range(num_entries):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette.append([r, g, b])
    return palette


#: Palette of the tiny dataset's classes (the first VOC colours), as mmseg's ``metainfo['palette']``.
TINY_VOC_PALETTE: List[List[int]] = voc_palette(len(TINY_VOC_CLASSES))


def _shape_mask(kind: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask ``(H, W)`` with one object of class ``kind`` at a random place and size."""
    yy, xx = np.mgrid[0:height, 0:width]
    size = rng.uniform(0.18, 0.32) * min(height, width)
    cy, cx = rng.uniform(size, height - size), rng.uniform(size, width - size)
    if kind == 1:  # square
        return (np.abs(yy - cy) <= size * 0.8) & (np.abs(xx - cx) <= size * 0.8)
    if kind == 2:  # disc
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= size ** 2
    # bar: a long thin rectangle, horizontal or vertical
    long_side, short_side = size * 1.6, size * 0.35
    if rng.random() < 0.5:
        return (np.abs(yy - cy) <= short_side) & (np.abs(xx - cx) <= long_side)
    return (np.abs(yy - cy) <= long_side) & (np.abs(xx - cx) <= short_side)


def _border(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` that touch a pixel outside it (4-neighbourhood): the VOC 'void' border."""
    padded = np.pad(mask, 1, mode='edge')
    inner = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask & ~inner


def make_sample(height: int, width: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Draws one image and its label map.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        rng: Random generator (all randomness comes from it).

    Returns:
        ``image`` ``(H, W, 3)`` uint8 RGB and ``label`` ``(H, W)`` uint8 with values in
        ``[0, len(TINY_VOC_CLASSES))`` or 255 (object borders).
    """
    label = np.zeros((height, width), dtype=np.uint8)
    borders = np.zeros((height, width), dtype=bool)
    num_objects = int(rng.integers(1, 4))
    for kind in rng.choice(np.arange(1, len(TINY_VOC_CLASSES)), size=num_objects, replace=False):
        mask = _shape_mask(int(kind), height, width, rng)
        label[mask] = kind
        borders |= _border(mask)
    label[borders] = IGNORE_INDEX
    drawn = np.where(label == IGNORE_INDEX, 0, label)
    image = _CLASS_COLOURS[drawn] + rng.normal(0.0, 18.0, size=(height, width, 3))
    image += 25.0 * np.sin(np.arange(width) / rng.uniform(2.0, 6.0))[None, :, None] * (drawn == 0)[..., None]
    return np.clip(image, 0, 255).astype(np.uint8), label


def _write_split(path: str, ids: Sequence[str]) -> None:
    with open(path, 'w') as f:
        f.write(''.join(f'{i}\n' for i in ids))


def make_tiny_voc(root: str, *, num_train: int = 8, num_val: int = 4, num_labeled: Optional[int] = None,
                  seed: int = 0, size_range: Tuple[int, int] = (56, 88)) -> Dict[str, List[str]]:
    """Writes a tiny VOC-layout dataset under ``root`` (created if needed; existing files are overwritten).

    Args:
        root: Output directory.
        num_train: Number of training images (``ImageSets/Segmentation/train.txt``).
        num_val: Number of validation images (``ImageSets/Segmentation/val.txt``).
        num_labeled: How many of the training images form ``labeled.txt`` (the first ones); the others form
            ``unlabeled.txt`` (their label files stay on disk, as in VOC ``train_aug``). Default:
            ``max(1, num_train // 4)``.
        seed: Seed of the generator; the same seed gives byte-identical PNGs and split files.
        size_range: Inclusive range of image heights and widths, so batches need padding.

    Returns:
        ``{'train': [...], 'val': [...], 'labeled': [...], 'unlabeled': [...]}`` (ids).
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train and num_val must be >= 1, got {num_train} and {num_val}.')
    num_labeled = max(1, num_train // 4) if num_labeled is None else num_labeled
    if not 1 <= num_labeled <= num_train:
        raise ValueError(f'num_labeled must be in [1, num_train={num_train}], got {num_labeled}.')
    rng = np.random.default_rng(seed)
    for sub in ('JPEGImages', 'SegmentationClass', osp.join('ImageSets', 'Segmentation')):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    palette = [v for rgb in voc_palette() for v in rgb]
    splits = {'train': [f'tiny_train_{i:04d}' for i in range(num_train)],
              'val': [f'tiny_val_{i:04d}' for i in range(num_val)]}
    for ids in (splits['train'], splits['val']):
        for sample_id in ids:
            height, width = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
            image, label = make_sample(height, width, rng)
            Image.fromarray(image).save(osp.join(root, 'JPEGImages', f'{sample_id}.jpg'), quality=95)
            png = Image.fromarray(label, mode='P')
            png.putpalette(palette)
            png.save(osp.join(root, 'SegmentationClass', f'{sample_id}.png'))
    splits['labeled'], splits['unlabeled'] = splits['train'][:num_labeled], splits['train'][num_labeled:]
    for name, ids in splits.items():
        _write_split(osp.join(root, 'ImageSets', 'Segmentation', f'{name}.txt'), ids)
    return splits
