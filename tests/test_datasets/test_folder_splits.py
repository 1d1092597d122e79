"""folder_splits: validation and labeled ids from the masked images of a folder, every other image unlabeled."""
from __future__ import annotations

import os
import os.path as osp

import pytest

from mmseg_esl.datasets import folder_ids, folder_splits


def _touch(path: str) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    open(path, 'w').close()


@pytest.fixture
def folders(tmp_path):
    """30 images, the first 20 with a ``<id>_mask.png``; one image and its mask in a subfolder."""
    img_dir, ann_dir = str(tmp_path / 'images'), str(tmp_path / 'masks')
    for i in range(30):
        _touch(osp.join(img_dir, f'{i:03d}.jpg'))
        if i < 20:
            _touch(osp.join(ann_dir, f'{i:03d}_mask.png'))
    _touch(osp.join(img_dir, 'site_b', '900.jpg'))
    _touch(osp.join(ann_dir, 'site_b', '900_mask.png'))
    _touch(osp.join(img_dir, 'notes.txt'))
    return img_dir, ann_dir


def _split(folders, **kwargs):
    img_dir, ann_dir = folders
    args = dict(img_dir=img_dir, img_suffix='.jpg', ann_dir=ann_dir, seg_map_suffix='_mask.png', num_labeled=5,
                num_val=6, seed=0)
    args.update(kwargs)
    return folder_splits(**args)


def test_folder_ids_are_relative_paths_without_the_suffix(folders):
    img_dir, ann_dir = folders
    assert folder_ids(img_dir, '.jpg') == sorted([f'{i:03d}' for i in range(30)] + ['site_b/900'])
    assert folder_ids(ann_dir, '_mask.png')[-1] == 'site_b/900'
    assert folder_ids(ann_dir, '.jpg') == []


def test_val_and_labeled_come_from_masked_images_and_the_rest_is_unlabeled(folders):
    splits = _split(folders)
    masked = {f'{i:03d}' for i in range(20)} | {'site_b/900'}
    assert len(splits.val) == 6 and len(splits.labeled) == 5
    assert set(splits.val) <= masked and set(splits.labeled) <= masked
    assert not set(splits.val) & set(splits.labeled)
    everything = set(splits.val) | set(splits.labeled) | set(splits.unlabeled)
    assert everything == set(folder_ids(folders[0], '.jpg'))
    assert len(splits.val) + len(splits.labeled) + len(splits.unlabeled) == 31
    assert all(s == sorted(s) for s in (splits.val, splits.labeled, splits.unlabeled))


def test_the_draw_is_deterministic_val_does_not_depend_on_num_labeled_and_labeled_sets_nest(folders):
    small, large = _split(folders, num_labeled=3), _split(folders, num_labeled=8)
    assert _split(folders, num_labeled=3) == small
    assert small.val == large.val
    assert set(small.labeled) < set(large.labeled)
    assert _split(folders, seed=1).val != small.val


def test_a_wrong_image_suffix_names_the_endings_found(folders):
    with pytest.raises(ValueError, match=r"No image .* ends with '\.png'.*'\.jpg' \(31 files\)"):
        _split(folders, img_suffix='.png')


def test_a_wrong_mask_suffix_names_the_endings_found(folders):
    with pytest.raises(ValueError, match=r"No mask .* ends with '_label\.png'.*'_mask\.png' \(21 files\)"):
        _split(folders, seg_map_suffix='_label.png')


def test_masks_named_id_mask_with_the_plain_suffix_get_the_suffix_to_pass(folders):
    with pytest.raises(ValueError, match=r'21 of the 21 masks .* have no image.*pass --seg-map-suffix _mask\.png'):
        _split(folders, seg_map_suffix='.png')


def test_too_few_masked_images_for_val_and_labeled_is_refused(folders):
    with pytest.raises(ValueError, match='21 images have a mask, fewer than --num-val 15 \\+ --num-labeled 10'):
        _split(folders, num_val=15, num_labeled=10)


def test_a_missing_folder_is_named(folders, tmp_path):
    with pytest.raises(FileNotFoundError, match='not a folder'):
        _split(folders, ann_dir=str(tmp_path / 'labels'))
