"""LoadOptionalAnnotations: optional labels of the unlabeled set; a label map that does not fit is dropped, not a
crash (issue 18, case 1)."""
import logging
import os.path as osp

import numpy as np
from mmcv.transforms import LoadImageFromFile
from PIL import Image

import mmseg_esl.datasets.transforms.loading as loading
from mmseg_esl.datasets.transforms.loading import LoadOptionalAnnotations


def load(tmp_path, label: np.ndarray, transform: LoadOptionalAnnotations) -> dict:
    image, label_path = str(tmp_path / 'a.jpg'), str(tmp_path / 'a.png')
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(image)
    Image.fromarray(label).save(label_path)
    results = LoadImageFromFile().transform(dict(img_path=image))
    return transform.transform(dict(results, seg_map_path=label_path, reduce_zero_label=False, seg_fields=[]))


def test_no_label_file_passes_through(tmp_path):
    results = dict(img_path='x.jpg', seg_map_path=None, seg_fields=[])
    assert LoadOptionalAnnotations().transform(dict(results)) == results


def test_a_fitting_label_map_is_loaded(tmp_path):
    label = np.arange(48, dtype=np.uint8).reshape(6, 8) % 3
    results = load(tmp_path, label, LoadOptionalAnnotations())
    assert np.array_equal(results['gt_seg_map'], label) and results['seg_fields'] == ['gt_seg_map']


def test_rgb_or_missized_label_maps_are_dropped_with_one_warning(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(loading, 'print_log', lambda message, **kwargs: logged.append((message, kwargs)))
    transform = LoadOptionalAnnotations()
    rgb = load(tmp_path, np.zeros((6, 8, 3), np.uint8), transform)
    assert 'gt_seg_map' not in rgb and rgb['seg_fields'] == []
    other_size = load(tmp_path, np.zeros((5, 8), np.uint8), transform)
    assert 'gt_seg_map' not in other_size
    assert len(logged) == 1 and logged[0][1]['level'] == logging.WARNING
    assert f'{osp.join(tmp_path, "a.png")} has shape (6, 8, 3), not (H, W) = (6, 8)' in logged[0][0]
