"""The ESL demo dataset: layout, labels, determinism, the part design (distinct and shared parts), mmseg reads it."""
import hashlib
import os
import os.path as osp
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, run
from PIL import Image

from mmseg_esl.testing import (
    DEMO_CLASS_PARTS,
    DEMO_CLASSES,
    DEMO_PALETTE,
    DEMO_PART_APPEARANCES,
    make_demo_dataset,
    make_demo_sample,
    shared_part_appearances,
    voc_palette,
)

SMALL = dict(num_labeled=4, num_unlabeled=8, num_dev=3, num_val=4)
APPEARANCES = tuple(DEMO_PART_APPEARANCES)


@pytest.fixture(scope='module')
def small_demo(tmp_path_factory):
    """``(root, stats)`` of a small demo dataset generated once for this module."""
    root = str(tmp_path_factory.mktemp('esl_demo'))
    return root, make_demo_dataset(root, **SMALL, seed=0)


def _tree_digest(root: str) -> str:
    """One hash over every file's relative path and bytes under ``root``."""
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = osp.join(folder, name)
            digest.update(osp.relpath(path, root).encode())
            with open(path, 'rb') as f:
                digest.update(f.read())
    return digest.hexdigest()


def _rendered(num_images: int, *, image_size: int = 128):
    """Images, labels and part maps of ``num_images`` samples drawn with fixed seeds."""
    return [make_demo_sample(image_size=image_size, rng=np.random.default_rng([123, i])) for i in range(num_images)]


def test_constants_for_configs():
    assert len(DEMO_CLASSES) >= 7 and DEMO_CLASSES[0] == 'background'
    assert DEMO_PALETTE == voc_palette(len(DEMO_CLASSES))
    assert set(DEMO_CLASS_PARTS) == set(DEMO_CLASSES[1:])


def test_layout_and_splits(small_demo):
    root, stats = small_demo
    assert stats['root'] == root
    assert stats['counts'] == {'labeled': 4, 'unlabeled': 8, 'train': 12, 'dev': 3, 'val': 4}
    split_dir = osp.join(root, 'ImageSets', 'Segmentation')
    listed = {name: open(osp.join(split_dir, f'{name}.txt')).read().split()
              for name in ('labeled', 'unlabeled', 'train', 'dev', 'val')}
    assert listed == stats['splits']
    labeled, unlabeled, train, dev, val = (set(listed[n]) for n in ('labeled', 'unlabeled', 'train', 'dev', 'val'))
    assert len(labeled) == 4 and len(unlabeled) == 8 and len(dev) == 3 and len(val) == 4
    assert labeled | unlabeled == train and not labeled & unlabeled and not train & val
    # The dev split is carved from the training images (same generator) and held out of every training split.
    assert listed['dev'] == ['demo_train_00000', 'demo_train_00001', 'demo_train_00002']
    assert not dev & train and not dev & val
    all_ids = train | dev | val
    assert {f[:-4] for f in os.listdir(osp.join(root, 'JPEGImages'))} == all_ids
    assert {f[:-4] for f in os.listdir(osp.join(root, 'SegmentationClass'))} == all_ids  # unlabeled PNGs too


def test_images_and_palette_labels(small_demo):
    root, stats = small_demo
    totals = np.zeros(len(DEMO_CLASSES), np.int64)
    for sample_id in stats['splits']['train'] + stats['splits']['dev'] + stats['splits']['val']:
        image = Image.open(osp.join(root, 'JPEGImages', f'{sample_id}.jpg'))
        label = Image.open(osp.join(root, 'SegmentationClass', f'{sample_id}.png'))
        assert image.format == 'JPEG' and image.mode == 'RGB' and image.size == (128, 128)
        assert label.mode == 'P' and label.size == image.size
        assert label.getpalette()[:3 * len(DEMO_CLASSES)] == [v for rgb in DEMO_PALETTE for v in rgb]
        values = np.array(label)
        assert set(np.unique(values).tolist()) <= set(range(len(DEMO_CLASSES))) | {255}
        assert (values == 0).any() and (values > 0).any()  # background and at least one object
        totals += np.bincount(values.ravel(), minlength=256)[:len(DEMO_CLASSES)]
    # The returned statistics are those of the files.
    assert totals.tolist() == [sum(stats['pixel_counts'][s][c] for s in ('train', 'dev', 'val'))
                               for c in DEMO_CLASSES]
    for split in ('labeled', 'unlabeled', 'train', 'dev', 'val'):
        assert sum(stats['pixel_fractions'][split].values()) == pytest.approx(1.0)
        assert sum(stats['pixel_counts'][split].values()) == stats['counts'][split] * 128 * 128


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, small_demo):
    root, _ = small_demo
    make_demo_dataset(str(tmp_path / 'again'), **SMALL, seed=0)
    make_demo_dataset(str(tmp_path / 'other'), **SMALL, seed=1)
    assert _tree_digest(str(tmp_path / 'again')) == _tree_digest(root)
    assert _tree_digest(str(tmp_path / 'other')) != _tree_digest(root)


@pytest.mark.parametrize('split', ['val', 'dev'])
def test_val_and_dev_sets_do_not_depend_on_the_training_split_sizes(tmp_path, small_demo, split):
    root, _ = small_demo
    make_demo_dataset(str(tmp_path), num_labeled=1, num_unlabeled=0, num_dev=3, num_val=4, seed=0)
    for sample_id in open(osp.join(root, 'ImageSets', 'Segmentation', f'{split}.txt')).read().split():
        for sub, ext in (('JPEGImages', 'jpg'), ('SegmentationClass', 'png')):
            with open(osp.join(root, sub, f'{sample_id}.{ext}'), 'rb') as a, \
                    open(tmp_path / sub / f'{sample_id}.{ext}', 'rb') as b:
                assert a.read() == b.read()


def test_every_class_has_three_distinct_part_appearances():
    for cls, parts in DEMO_CLASS_PARTS.items():
        appearances = [part.appearance for part in parts]
        assert len(parts) >= 3 and len(set(appearances)) == len(appearances), cls
        looks = {(DEMO_PART_APPEARANCES[a].texture, DEMO_PART_APPEARANCES[a].colour) for a in appearances}
        assert len(looks) == len(appearances), f'{cls} has two parts that look the same'


def test_some_part_appearances_are_shared_between_classes():
    shared = shared_part_appearances()
    assert shared and all(len(classes) >= 2 for classes in shared.values())
    assert set(shared) == {'dark_leg', 'tyre', 'glass', 'leaf'}
    # Every class still owns at least one appearance no other class has: its context defines it.
    for cls, parts in DEMO_CLASS_PARTS.items():
        assert any(part.appearance not in shared for part in parts), cls


def test_rendered_parts_are_distinct_within_and_alike_across_classes():
    """Pixel colours: a class's parts differ from each other; a shared part looks alike in every class."""
    colours = {}  # (class, appearance) -> list of RGB pixels
    for image, label, parts in _rendered(80):
        for cls_index in range(1, len(DEMO_CLASSES)):
            for part_id in np.unique(parts[label == cls_index]):
                assert part_id > 0, 'object pixels always belong to a part'
                pixels = image[(label == cls_index) & (parts == part_id)].astype(np.float64)
                colours.setdefault((DEMO_CLASSES[cls_index], APPEARANCES[part_id - 1]), []).append(pixels)
        assert not parts[label == 0].any()
    means = {key: np.concatenate(value).mean(axis=0) for key, value in colours.items()}
    for cls, parts in DEMO_CLASS_PARTS.items():
        seen = [part.appearance for part in parts if (cls, part.appearance) in means]
        assert len(seen) == len(parts), f'{cls}: not every part was rendered in 80 images'
        for i, first in enumerate(seen):
            for second in seen[i + 1:]:
                distance = np.linalg.norm(means[cls, first] - means[cls, second])
                assert distance > 25, f'{cls}: {first} and {second} have mean colours only {distance:.0f} apart'
    for appearance, classes in shared_part_appearances().items():
        reference = means[classes[0], appearance]
        for cls in classes[1:]:
            assert np.linalg.norm(means[cls, appearance] - reference) < 25, (appearance, cls)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match='num_labeled must be an integer >= 1, got 0'):
        make_demo_dataset(str(tmp_path), num_labeled=0)
    with pytest.raises(ValueError, match='num_unlabeled must be an integer >= 0, got -1'):
        make_demo_dataset(str(tmp_path), num_unlabeled=-1)
    with pytest.raises(ValueError, match='num_dev must be an integer >= 0, got -2'):
        make_demo_dataset(str(tmp_path), num_dev=-2)
    with pytest.raises(ValueError, match='image_size must be an integer >= 32, got 16'):
        make_demo_dataset(str(tmp_path), image_size=16)
    with pytest.raises(ValueError, match=r'seed must be an integer >= 0, got 1.5'):
        make_demo_dataset(str(tmp_path), seed=1.5)
    assert not os.listdir(tmp_path)  # nothing written before the checks


def test_mmseg_reads_the_dataset(small_demo):
    from mmengine.registry import init_default_scope
    from mmseg.datasets import BaseSegDataset
    root, _ = small_demo
    init_default_scope('mmseg')
    dataset = BaseSegDataset(
        data_root=root, data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        img_suffix='.jpg', seg_map_suffix='.png', ann_file='ImageSets/Segmentation/val.txt',
        metainfo=dict(classes=DEMO_CLASSES, palette=DEMO_PALETTE),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')])
    assert len(dataset) == 4 and dataset.metainfo['classes'] == DEMO_CLASSES
    item = dataset[0]
    assert item['img'].shape == (128, 128, 3) and item['gt_seg_map'].shape == (128, 128)
    expected = np.array(Image.open(osp.join(root, 'SegmentationClass', 'demo_val_00000.png')))
    np.testing.assert_array_equal(item['gt_seg_map'], expected)


@pytest.mark.slow
def test_cli_writes_and_summarises(tmp_path):
    out = str(tmp_path / 'demo')
    proc = run([sys.executable, osp.join(REPO_ROOT, 'tools', 'make_demo_dataset.py'), '--out', out,
                '--num-labeled', '2', '--num-unlabeled', '3', '--num-dev', '2', '--num-val', '2', '--image-size', '64',
                '--seed', '3'], cwd=str(tmp_path), timeout=120)
    assert 'wrote 5 train (2 labeled, 3 unlabeled), 2 dev and 2 val images of 64x64' in proc.stdout
    assert all(cls in proc.stdout for cls in DEMO_CLASSES)
    assert open(osp.join(out, 'ImageSets', 'Segmentation', 'val.txt')).read().split() == \
        ['demo_val_00000', 'demo_val_00001']
    bad = run([sys.executable, osp.join(REPO_ROOT, 'tools', 'make_demo_dataset.py'), '--out', out, '--num-val',
               '0'], cwd=str(tmp_path), timeout=120, check=False)
    assert bad.returncode == 2 and 'num_val must be an integer >= 1, got 0' in bad.stdout


@pytest.mark.slow
def test_default_size_has_every_class_in_every_split(tmp_path):
    stats = make_demo_dataset(str(tmp_path))
    assert stats['counts'] == {'labeled': 20, 'unlabeled': 1000, 'train': 1020, 'dev': 300, 'val': 500}
    for split in ('labeled', 'unlabeled', 'dev', 'val'):
        fractions = stats['pixel_fractions'][split]
        for cls in DEMO_CLASSES:
            assert fractions[cls] > 0.005, f'{cls} covers only {fractions[cls]:.2%} of {split}'
            assert stats['image_counts'][split][cls] >= 3, (split, cls)
        assert fractions['background'] < 0.9
