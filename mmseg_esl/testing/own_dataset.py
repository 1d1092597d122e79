"""A dataset laid out as a user brings it: a folder of images, a folder of masks for some of them, a class file.

Not the VOC layout of the demo: its own class names, ``.png`` images of several sizes, masks named
``<id>_mask.png``, no split files, and no mask at all for most images. For the tests of the README section
"Train ESL on your own dataset" (``tools/make_splits.py --img-dir``, ``tools/make_config.py``)::

    root/
      images/<id>.png          RGB, sizes cycling through ``sizes``
      masks/<id>_mask.png      index PNGs for the first ``num_masked`` ids only (or 0/255 binary masks)
      classes.txt              one class name per line, in mask value order
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Sequence, Tuple

import numpy as np
from PIL import Image

from .tiny_voc import make_sample

#: Class names of the generated dataset (the tiny VOC shapes under other names); index = mask value.
OWN_CLASSES: Tuple[str, ...] = ('soil', 'stone', 'leaf', 'twig')


def make_own_dataset(root: str, *, num_images: int = 40, num_masked: int = 16,
                     sizes: Sequence[Tuple[int, int]] = ((60, 80), (72, 72), (88, 64)), img_suffix: str = '.png',
                     seg_map_suffix: str = '_mask.png', binary_255: bool = False, seed: int = 0) -> str:
    """Writes the dataset under ``root`` and returns ``root``.

    Args:
        root: Output folder (created).
        num_images: Images in ``images/``.
        num_masked: The first this many ids get a mask.
        sizes: ``(height, width)`` of the images, in turn.
        img_suffix: Image ending: ``'.png'`` (lossless) or ``'.jpg'``.
        seg_map_suffix: Mask ending.
        binary_255: Two classes (``background``, ``object``) saved as 0/255, the common mistake; else the four
            :data:`OWN_CLASSES` as values 0-3 (255 on object borders).
        seed: Seed of all drawing.
    """
    rng = np.random.default_rng(seed)
    for folder in ('images', 'masks'):
        os.makedirs(osp.join(root, folder), exist_ok=True)
    for index in range(num_images):
        height, width = sizes[index % len(sizes)]
        image, label = make_sample(height, width, rng)
        sample_id = f'plot_{index:04d}'
        Image.fromarray(image).save(osp.join(root, 'images', sample_id + img_suffix))
        if index < num_masked:
            if binary_255:
                label = np.where((label > 0) & (label != 255), 255, 0).astype(np.uint8)
            Image.fromarray(label).save(osp.join(root, 'masks', sample_id + seg_map_suffix))
    classes = ('background', 'object') if binary_255 else OWN_CLASSES
    with open(osp.join(root, 'classes.txt'), 'w') as f:
        f.write('\n'.join(classes) + '\n')
    return root
