"""Loading transforms for semi-supervised data."""
from __future__ import annotations

from typing import Optional

from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadOptionalAnnotations(LoadAnnotations):
    """``LoadAnnotations`` that skips samples without a label file (``seg_map_path`` is None).

    For the unlabeled set: an unlabeled image needs no label, but when its label file happens to exist
    (e.g. VOC train_aug), it is loaded and travels with the image through the geometric transforms, so that
    the segmentor can log pseudo-label accuracy. It is never used in a loss.
    """

    def transform(self, results: dict) -> Optional[dict]:
        if results.get('seg_map_path') is None:
            return results
        return super().transform(results)
