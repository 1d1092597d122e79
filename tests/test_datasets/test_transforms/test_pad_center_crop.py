"""PadCenterCrop: U2PL's centre crop of the VOC evaluation (symmetric padding, then the centre window)."""
import numpy as np
import pytest
from mmseg.registry import TRANSFORMS

import mmseg_esl  # noqa: F401  (registers the transform)
from mmseg_esl.datasets.transforms import PadCenterCrop


def u2pl_crop(array: np.ndarray, crop_h: int, crop_w: int, pad_val) -> np.ndarray:
    """U2PL's Crop(crop_type='center') (u2pl/dataset/augmentation.py) on an (H, W[, C]) array."""
    h, w = array.shape[:2]
    pad_h, pad_w = max(crop_h - h, 0), max(crop_w - w, 0)
    pad_h_half, pad_w_half = int(pad_h / 2), int(pad_w / 2)
    if pad_h > 0 or pad_w > 0:
        widths = [(pad_h_half, pad_h - pad_h_half), (pad_w_half, pad_w - pad_w_half)] + [(0, 0)] * (array.ndim - 2)
        if array.ndim == 3 and isinstance(pad_val, tuple):
            array = np.stack([np.pad(array[..., c], widths[:2], constant_values=pad_val[c])
                              for c in range(array.shape[2])], axis=-1)
        else:
            array = np.pad(array, widths, constant_values=pad_val)
    h, w = array.shape[:2]
    h_off, w_off = (h - crop_h) // 2, (w - crop_w) // 2
    return array[h_off:h_off + crop_h, w_off:w_off + crop_w]


def sample(h: int, w: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    seg = rng.integers(0, 21, size=(h, w), dtype=np.uint8)
    return dict(img=img, gt_seg_map=seg, seg_fields=['gt_seg_map'], img_shape=(h, w), ori_shape=(h, w))


@pytest.mark.parametrize('h, w', [(375, 500), (500, 333), (513, 513), (600, 700), (512, 520), (1, 1)])
def test_matches_u2pl_center_crop(h, w):
    results = sample(h, w)
    img, seg = results['img'].copy(), results['gt_seg_map'].copy()
    out = PadCenterCrop(crop_size=513, img_pad_val=(104, 116, 124), seg_pad_val=255).transform(results)
    assert out['img'].shape == (513, 513, 3) and out['img'].dtype == np.uint8
    assert out['gt_seg_map'].shape == (513, 513) and out['gt_seg_map'].dtype == np.uint8
    np.testing.assert_array_equal(out['img'], u2pl_crop(img, 513, 513, (104, 116, 124)))
    np.testing.assert_array_equal(out['gt_seg_map'], u2pl_crop(seg, 513, 513, 255))
    assert out['img_shape'] == (513, 513) and out['ori_shape'] == (513, 513)


def test_odd_padding_puts_the_extra_row_at_the_bottom_and_records_it():
    results = sample(4, 6)
    seg = results['gt_seg_map'].copy()
    out = PadCenterCrop(crop_size=(7, 9), seg_pad_val=255).transform(results)
    assert out['pad_center_crop'] == dict(pad=(1, 2, 1, 2), offset=(0, 0))
    np.testing.assert_array_equal(out['gt_seg_map'][1:5, 1:7], seg)
    assert (out['gt_seg_map'][0] == 255).all() and (out['gt_seg_map'][5:] == 255).all()
    assert (out['gt_seg_map'][:, 0] == 255).all() and (out['gt_seg_map'][:, 7:] == 255).all()
    assert (out['img'][0] == 0).all()  # default image padding value


def test_larger_image_is_cropped_at_the_centre_without_padding():
    results = sample(11, 10)
    img = results['img'].copy()
    out = PadCenterCrop(crop_size=(5, 4)).transform(results)
    assert out['pad_center_crop'] == dict(pad=(0, 0, 0, 0), offset=(3, 3))
    np.testing.assert_array_equal(out['img'], img[3:8, 3:7])


def test_u2pl_label_padding_is_selectable():
    out = PadCenterCrop(crop_size=8, seg_pad_val=0).transform(sample(4, 4))
    assert (out['gt_seg_map'][:2] == 0).all()


def test_every_seg_field_is_transformed_and_a_missing_label_is_fine():
    results = sample(6, 6)
    results['extra_map'] = np.ones((6, 6), np.uint8)
    results['seg_fields'].append('extra_map')
    out = PadCenterCrop(crop_size=8).transform(results)
    assert out['extra_map'].shape == (8, 8) and out['extra_map'][0, 0] == 255
    no_label = dict(img=np.zeros((3, 3, 3), np.uint8), img_shape=(3, 3), ori_shape=(3, 3))
    assert PadCenterCrop(crop_size=5).transform(no_label)['img'].shape == (5, 5, 3)


def test_none_is_whole_image_evaluation():
    results = sample(5, 7)
    img = results['img']
    out = PadCenterCrop(crop_size=None).transform(results)
    assert out['img'] is img and out['ori_shape'] == (5, 7) and 'pad_center_crop' not in out


def test_registered_and_in_a_pipeline():
    transform = TRANSFORMS.build(dict(type='PadCenterCrop', crop_size=(6, 6), img_pad_val=[1, 2, 3]))
    assert isinstance(transform, PadCenterCrop) and transform.img_pad_val == (1, 2, 3)
    out = transform(sample(2, 2))
    assert out['img'][0, 0].tolist() == [1, 2, 3]
    assert 'crop_size=(6, 6)' in repr(transform)


@pytest.mark.parametrize('kwargs, match', [
    (dict(crop_size=0), 'crop_size'), (dict(crop_size=(5,)), 'crop_size'), (dict(crop_size=(5, -1)), 'crop_size'),
    (dict(crop_size=5.0), 'crop_size'), (dict(crop_size=True), 'crop_size'),
    (dict(crop_size=5, seg_pad_val=256), 'seg_pad_val'), (dict(crop_size=5, seg_pad_val=1.5), 'seg_pad_val'),
])
def test_invalid_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PadCenterCrop(**kwargs)
