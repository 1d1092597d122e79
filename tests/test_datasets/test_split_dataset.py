"""SplitSegDataset on the tiny VOC-layout dataset: labeled and unlabeled sets, missing files, the data pipeline."""
from __future__ import annotations

import glob
import os
import os.path as osp
import shutil

import pytest
import torch
from conftest import REPO_ROOT
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS
from mmseg.structures import SegDataSample

import mmseg_esl  # noqa: F401  (registers SplitSegDataset and applies the compat fixes)
from mmseg_esl.datasets import SplitFileError, SplitFileNotFoundError, SplitSegDataset, read_split, write_split

TINY_DATA_CFG = osp.join(REPO_ROOT, 'configs', '_base_', 'datasets', 'tiny_voc.py')
TRAIN_LIST = 'ImageSets/Segmentation/train.txt'
TRAIN_IDS = [f'tiny_train_{i:04d}' for i in range(8)]


@pytest.fixture(scope='module')
def data_cfg() -> Config:
    return Config.fromfile(TINY_DATA_CFG)


def build(data_root: str, split_file: str, cfg: Config, **kwargs) -> SplitSegDataset:
    return SplitSegDataset(split_file=split_file, data_root=data_root, metainfo=dict(cfg.metainfo),
                           data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
                           img_suffix='.jpg', seg_map_suffix='.png', **kwargs)


@pytest.fixture
def voc_copy(tiny_voc, tmp_path) -> str:
    """A private copy of the tiny dataset that a test may damage."""
    root = str(tmp_path / 'voc')
    shutil.copytree(tiny_voc, root)
    return root


def test_labeled_set_matches_base_seg_dataset(tiny_voc, data_cfg):
    dataset = build(tiny_voc, TRAIN_LIST, data_cfg)
    assert len(dataset) == 8
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    assert all(info['is_labeled'] is True for info in infos)
    assert all(osp.isfile(info['img_path']) and osp.isfile(info['seg_map_path']) for info in infos)
    # exactly BaseSegDataset's data infos (same ann file), plus is_labeled
    base = BaseSegDataset(ann_file=TRAIN_LIST, data_root=tiny_voc, metainfo=dict(data_cfg.metainfo),
                          data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'))
    expected = [dict(base.get_data_info(i), is_labeled=True) for i in range(len(base))]
    assert infos == expected
    assert dataset.metainfo['classes'] == tuple(data_cfg.metainfo['classes'])


def test_absolute_split_file_and_registry_build(tiny_voc, data_cfg, tmp_path):
    split = str(tmp_path / 'labeled.txt')
    write_split(split, TRAIN_IDS[:3])
    dataset = DATASETS.build(dict(type='SplitSegDataset', split_file=split, data_root=tiny_voc,
                                  metainfo=dict(data_cfg.metainfo),
                                  data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass')))
    assert isinstance(dataset, SplitSegDataset)
    assert [osp.basename(dataset.get_data_info(i)['img_path']) for i in range(3)] == [f'{i}.jpg'
                                                                                      for i in TRAIN_IDS[:3]]


def test_unimatch_format_split(tiny_voc, data_cfg, tmp_path):
    split = tmp_path / 'labeled.txt'
    split.write_text(''.join(f'JPEGImages/{i}.jpg SegmentationClass/{i}.png\n' for i in TRAIN_IDS[2:5]))
    dataset = build(tiny_voc, str(split), data_cfg)
    assert [osp.basename(dataset.get_data_info(i)['seg_map_path']) for i in range(3)] == [f'{i}.png'
                                                                                          for i in TRAIN_IDS[2:5]]


def test_nonexistent_id_raises_with_its_path(tiny_voc, data_cfg, tmp_path):
    split = str(tmp_path / 'labeled.txt')
    write_split(split, TRAIN_IDS[:2] + ['does_not_exist'])
    with pytest.raises(FileNotFoundError) as info:
        build(tiny_voc, split, data_cfg)
    message = str(info.value)
    assert osp.join(tiny_voc, 'JPEGImages', 'does_not_exist.jpg') in message
    assert osp.join(tiny_voc, 'SegmentationClass', 'does_not_exist.png') in message
    assert '2 file(s) of the 3 samples' in message and '1 image(s), 1 label map(s)' in message
    assert 'data_root' in message and 'img_suffix' in message


def test_missing_labels_count_and_list_first_few(voc_copy, data_cfg):
    for sample_id in TRAIN_IDS:
        os.remove(osp.join(voc_copy, 'SegmentationClass', f'{sample_id}.png'))
    with pytest.raises(FileNotFoundError) as info:
        build(voc_copy, TRAIN_LIST, data_cfg)
    message = str(info.value)
    assert '8 file(s) of the 8 samples' in message and '... and 3 more' in message
    assert 'with_labels=False' in message


def test_unlabeled_set_without_label_files(voc_copy, data_cfg):
    removed = TRAIN_IDS[::2]
    for sample_id in removed:
        os.remove(osp.join(voc_copy, 'SegmentationClass', f'{sample_id}.png'))
    dataset = build(voc_copy, TRAIN_LIST, data_cfg, with_labels=False)
    assert len(dataset) == 8
    for i, sample_id in enumerate(TRAIN_IDS):
        info = dataset.get_data_info(i)
        assert info['is_labeled'] is False
        if sample_id in removed:
            assert info['seg_map_path'] is None
        else:  # a label that happens to exist is recorded (for logged pseudo-label accuracy only)
            assert info['seg_map_path'] == osp.join(voc_copy, 'SegmentationClass', f'{sample_id}.png')


def test_unlabeled_set_without_label_folder(voc_copy, data_cfg):
    shutil.rmtree(osp.join(voc_copy, 'SegmentationClass'))
    dataset = SplitSegDataset(split_file=TRAIN_LIST, with_labels=False, data_root=voc_copy,
                              metainfo=dict(data_cfg.metainfo), data_prefix=dict(img_path='JPEGImages'))
    assert len(dataset) == 8
    assert all(dataset.get_data_info(i)['seg_map_path'] is None for i in range(8))


def test_unlabeled_set_still_needs_images(voc_copy, data_cfg):
    os.remove(osp.join(voc_copy, 'JPEGImages', f'{TRAIN_IDS[3]}.jpg'))
    with pytest.raises(FileNotFoundError, match=f'(?s)1 image\\(s\\), 0 label map\\(s\\).*{TRAIN_IDS[3]}.jpg'):
        build(voc_copy, TRAIN_LIST, data_cfg, with_labels=False)


def test_empty_and_missing_split_file(tiny_voc, data_cfg, tmp_path):
    empty = tmp_path / 'empty.txt'
    empty.write_text('\n')
    with pytest.raises(SplitFileError, match='is empty'):
        build(tiny_voc, str(empty), data_cfg)
    with pytest.raises(SplitFileNotFoundError, match="relative split_file is joined with data_root") as info:
        build(tiny_voc, 'splits/nope.txt', data_cfg)
    assert osp.join(tiny_voc, 'splits/nope.txt') in str(info.value)


def test_argument_errors(tiny_voc, data_cfg):
    with pytest.raises(TypeError, match='remove ann_file'):
        build(tiny_voc, TRAIN_LIST, data_cfg, ann_file=TRAIN_LIST)
    with pytest.raises(ValueError, match='needs split_file'):
        build(tiny_voc, '', data_cfg)
    with pytest.raises(ValueError, match=r"needs data_prefix\['seg_map_path'\]"):
        SplitSegDataset(split_file=TRAIN_LIST, data_root=tiny_voc, data_prefix=dict(img_path='JPEGImages'))
    with pytest.raises(TypeError):
        SplitSegDataset(TRAIN_LIST)  # keyword-only


def test_tiny_voc_pipeline_runs_on_a_labeled_item(tiny_voc, data_cfg):
    pipeline = [dict(step) for step in data_cfg.train_pipeline]
    assert pipeline[-1]['type'] == 'PackSegInputs'
    pipeline[-1]['meta_keys'] = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'flip', 'is_labeled')
    with DefaultScope.overwrite_default_scope('mmseg'):  # as a runner with default_scope='mmseg' builds it
        dataset = build(tiny_voc, TRAIN_LIST, data_cfg, pipeline=pipeline)
    item = dataset[0]
    inputs, sample = item['inputs'], item['data_samples']
    # RandomResize (ratio 0.5-2) may shrink the image below the crop: the crop is then the whole image.
    assert isinstance(inputs, torch.Tensor) and inputs.shape[0] == 3
    assert all(size <= crop for size, crop in zip(inputs.shape[1:], data_cfg.crop_size))
    assert isinstance(sample, SegDataSample) and sample.gt_sem_seg.data.shape == (1, *inputs.shape[1:])
    assert sample.metainfo['is_labeled'] is True
    assert set(torch.unique(sample.gt_sem_seg.data).tolist()) <= {0, 1, 2, 3, 255}


def test_fixture_is_untouched(tiny_voc):
    """The damaging tests work on copies: the shared fixture keeps every file."""
    listed = sum(len(read_split(osp.join(tiny_voc, 'ImageSets', 'Segmentation', f'{name}.txt')))
                 for name in ('train', 'val'))
    assert len(glob.glob(osp.join(tiny_voc, 'SegmentationClass', '*.png'))) == listed
    assert len(glob.glob(osp.join(tiny_voc, 'JPEGImages', '*.jpg'))) == listed
