"""Loading transforms for semi-supervised data."""
from __future__ import annotations

import logging
from typing import Optional

from mmengine.logging import print_log
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadOptionalAnnotations(LoadAnnotations):
    """``LoadAnnotations`` that skips samples without a label file (``seg_map_path`` is None).

    For the unlabeled set: an unlabeled image needs no label, but when its label file happens to exist
    (e.g. VOC train_aug), it is loaded and travels with the image through the geometric transforms, so that
    the segmentor can log pseudo-label accuracy. It is never used in a loss, so a label map that is not
    ``(H, W)`` of its image (an RGB colour map, another size) is dropped with one warning per process instead of
    crashing the batch; its pixels are then left out of the logged pseudo-label accuracy.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._warned = False

    def transform(self, results: dict) -> Optional[dict]:
        if results.get('seg_map_path') is None:
            return results
        results = super().transform(results)
        label = results['gt_seg_map']
        image_size = tuple(results.get('img_shape', label.shape[:2])[:2])
        if label.ndim == 2 and tuple(label.shape) == image_size:
            return results
        if not self._warned:
            self._warned = True
            print_log(f'Unlabeled label map {results["seg_map_path"]} has shape {label.shape}, not (H, W) = '
                      f'{image_size} of its image (an RGB colour map?): it is dropped. Unlabeled label maps only '
                      'feed the logged pseudo-label accuracy, which leaves such images out. Further ones are '
                      'dropped without a warning.', logger='current', level=logging.WARNING)
        del results['gt_seg_map']
        results['seg_fields'].remove('gt_seg_map')
        return results
