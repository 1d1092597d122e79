"""``PadCenterCrop``: U2PL's "center crop" evaluation of Pascal VOC (ESL §4.1) as an mmseg transform."""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

__all__ = ['PadCenterCrop']

PadValue = Union[int, float, Sequence[Union[int, float]]]


def _crop_size(crop_size) -> Optional[Tuple[int, int]]:
    if crop_size is None:
        return None
    if isinstance(crop_size, numbers.Integral) and not isinstance(crop_size, bool):
        crop_size = (crop_size, crop_size)
    if (not isinstance(crop_size, (tuple, list)) or len(crop_size) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in crop_size)):
        raise ValueError(f'PadCenterCrop: crop_size must be None, a positive int or (height, width) of positive ints, '
                         f'got crop_size={crop_size!r}.')
    return int(crop_size[0]), int(crop_size[1])


@TRANSFORMS.register_module()
class PadCenterCrop(BaseTransform):
    """Pads an image (and its label maps) symmetrically to at least ``crop_size``, then crops the centre.

    This is the validation transform of U2PL (``Crop(crop_type='center')`` in ``u2pl/dataset/augmentation.py``),
    which ESL follows ("center crop ... for Pascal VOC", §4.1): with ``pad_h = max(crop_h - h, 0)``, the image
    gets ``pad_h // 2`` rows on top and the rest at the bottom (columns alike), and the window
    ``[(H - crop_h) // 2 :, (W - crop_w) // 2 :]`` of the padded ``H × W`` image is kept. Pascal VOC images are at
    most 500 px, so a 513 crop only pads them. Use it after ``LoadAnnotations``: the label maps get the same
    padding (``seg_pad_val``) and crop, and the metric compares the prediction with this crop.

    Because the evaluated region is the crop, ``ori_shape`` becomes the crop size: mmseg's segmentors resize
    their logits to ``ori_shape``, which must match the cropped ``gt_sem_seg``. ``crop_size=None`` makes the
    transform a no-op (whole-image evaluation, e.g.
    ``--cfg-options val_dataloader.dataset.pipeline.2.crop_size=None``).

    Differences from U2PL, both selectable: U2PL pads the *normalised* image with 0, i.e. with the mean colour;
    here the image is padded before the data preprocessor normalises it, so the config passes the mean colour
    in the loaded channel order (BGR) as ``img_pad_val``. U2PL's ``Crop`` also overrides its ``ignore_label``
    with 0, so its padded label pixels count as *background* in the mIoU; the default ``seg_pad_val=255`` ignores
    them (``seg_pad_val=0`` reproduces U2PL).

    Required keys: ``img``; optional ``gt_seg_map`` and the keys listed in ``seg_fields``.
    Modified keys: ``img``, ``img_shape``, ``ori_shape``, the label maps.
    Added keys: ``pad_center_crop``: ``dict(pad=(top, bottom, left, right), offset=(y, x))``, the padding
    added and the crop's top-left corner in the padded image.

    Args:
        crop_size: ``(height, width)`` (or one int for a square) of the output; None: leave the sample unchanged.
        img_pad_val: Padding value of the image, one number or one per channel (in the image's channel order).
        seg_pad_val: Padding value of the label maps (255: ignored by the metric; U2PL: 0).

    Raises:
        ValueError: On an invalid ``crop_size`` or ``seg_pad_val``, naming it.
    """

    def __init__(self, *, crop_size: Union[None, int, Tuple[int, int]], img_pad_val: PadValue = 0,
                 seg_pad_val: int = 255) -> None:
        super().__init__()
        self.crop_size = _crop_size(crop_size)
        if (isinstance(seg_pad_val, bool) or not isinstance(seg_pad_val, numbers.Integral)
                or not 0 <= seg_pad_val <= 255):
            raise ValueError(f'PadCenterCrop: seg_pad_val must be an int in [0, 255], got seg_pad_val={seg_pad_val!r}.')
        self.img_pad_val = tuple(img_pad_val) if isinstance(img_pad_val, (list, tuple)) else img_pad_val
        self.seg_pad_val = int(seg_pad_val)

    def _pad_and_crop(self, array: np.ndarray, pad: Tuple[int, int, int, int], offset: Tuple[int, int],
                      pad_val: PadValue) -> np.ndarray:
        top, bottom, left, right = pad
        if any(pad):
            array = mmcv.impad(array, padding=(left, top, right, bottom), pad_val=pad_val)
        y, x = offset
        crop_h, crop_w = self.crop_size
        return np.ascontiguousarray(array[y:y + crop_h, x:x + crop_w, ...])

    def transform(self, results: dict) -> dict:
        """Pads and crops ``results`` in place (see the class docstring) and returns it."""
        if self.crop_size is None:
            return results
        crop_h, crop_w = self.crop_size
        height, width = results['img'].shape[:2]
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        pad = (pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2)
        offset = ((height + pad_h - crop_h) // 2, (width + pad_w - crop_w) // 2)
        results['img'] = self._pad_and_crop(results['img'], pad, offset, self.img_pad_val)
        seg_keys = list(results.get('seg_fields', []))
        if 'gt_seg_map' in results and 'gt_seg_map' not in seg_keys:
            seg_keys.append('gt_seg_map')
        for key in seg_keys:
            results[key] = self._pad_and_crop(results[key], pad, offset, self.seg_pad_val)
        results['img_shape'] = (crop_h, crop_w)
        results['ori_shape'] = (crop_h, crop_w)
        results['pad_center_crop'] = dict(pad=pad, offset=offset)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(crop_size={self.crop_size}, img_pad_val={self.img_pad_val}, '
                f'seg_pad_val={self.seg_pad_val})')
