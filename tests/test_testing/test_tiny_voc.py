"""The tiny VOC-layout dataset factory: layout, label values, determinism, and mmseg reads it."""
import filecmp
import os.path as osp

import numpy as np
import pytest
from conftest import TINY_CONFIG
from mmengine.config import Config
from PIL import Image

from mmseg_esl.testing import TINY_VOC_CLASSES, TINY_VOC_PALETTE, make_tiny_voc, voc_palette


def test_voc_palette_matches_pascal_voc():
    palette = voc_palette()
    # Hand-checked entries of the official VOC colour map.
    assert palette[0] == [0, 0, 0] and palette[1] == [128, 0, 0] and palette[15] == [192, 128, 128]
    assert palette[255] == [224, 224, 192]


def test_layout_and_labels(tmp_path):
    splits = make_tiny_voc(str(tmp_path), num_train=3, num_val=2, num_labeled=1, seed=1)
    assert len(splits['train']) == 3 and len(splits['val']) == 2
    assert splits['labeled'] + splits['unlabeled'] == splits['train'] and len(splits['labeled']) == 1
    for name, ids in splits.items():
        listed = (tmp_path / 'ImageSets' / 'Segmentation' / f'{name}.txt').read_text().split()
        assert listed == ids
        for sample_id in ids:
            image = Image.open(tmp_path / 'JPEGImages' / f'{sample_id}.jpg')
            label = Image.open(tmp_path / 'SegmentationClass' / f'{sample_id}.png')
            assert image.mode == 'RGB' and label.mode == 'P' and image.size == label.size
            values = set(np.unique(np.array(label)).tolist())
            assert values <= set(range(len(TINY_VOC_CLASSES))) | {255}
            assert 0 in values and len(values - {0, 255}) >= 1  # background and at least one object


def test_same_seed_same_files(tmp_path):
    make_tiny_voc(str(tmp_path / 'a'), num_train=2, num_val=1, seed=5)
    make_tiny_voc(str(tmp_path / 'b'), num_train=2, num_val=1, seed=5)
    make_tiny_voc(str(tmp_path / 'c'), num_train=2, num_val=1, seed=6)
    png = osp.join('SegmentationClass', 'tiny_train_0000.png')
    assert filecmp.cmp(tmp_path / 'a' / png, tmp_path / 'b' / png, shallow=False)
    assert not filecmp.cmp(tmp_path / 'a' / png, tmp_path / 'c' / png, shallow=False)


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match='num_train and num_val must be >= 1'):
        make_tiny_voc(str(tmp_path), num_train=0)
    with pytest.raises(ValueError, match=r'num_labeled must be in \[1, num_train=3\], got 4'):
        make_tiny_voc(str(tmp_path), num_train=3, num_labeled=4)


def test_tiny_config_reads_the_dataset(tiny_voc):
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(TINY_CONFIG)
    assert tuple(cfg.metainfo.classes) == TINY_VOC_CLASSES
    assert [list(c) for c in cfg.metainfo.palette] == TINY_VOC_PALETTE
    cfg.train_dataloader.dataset.data_root = tiny_voc
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(dataset) == 8
    sample = dataset[0]
    # RandomResize (ratio 0.5-2) may shrink the image below the 64 px crop: the crop is then the whole image.
    channels, height, width = sample['inputs'].shape
    assert channels == 3 and height <= 64 and width <= 64
    assert tuple(sample['data_samples'].gt_sem_seg.data.shape) == (1, height, width)
