"""Pre-flight checks of issue 9 (``mmseg_esl.utils.preflight``): one corrupted thing per test, in-process.

Each test generates a fresh tiny dataset (``make_tiny_voc``: 2 labeled, 6 unlabeled, 4 validation images), breaks
one thing and checks that the error names the file / config key / value and the fix.
"""
import os
import os.path as osp
from typing import Dict

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, tiny_data_options
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS
from PIL import Image

from mmseg_esl.testing import make_tiny_voc
from mmseg_esl.utils import (
    CheckpointMismatchError,
    DataFileError,
    ESLInputError,
    InputConfigError,
    check_test_checkpoint,
    check_training_inputs,
    load_tool_config,
)

ESL_CONFIG = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_esl_voc.py')
PLAIN_CONFIG = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_supervised_voc.py')
SPLITS = osp.join('ImageSets', 'Segmentation')


@pytest.fixture
def data(tmp_path) -> Dict[str, object]:
    """A fresh tiny dataset: ``root`` and its ``ids`` (train, val, labeled, unlabeled)."""
    root = str(tmp_path / 'tiny')
    return dict(root=root, ids=make_tiny_voc(root, num_train=8, num_val=4, seed=0))


def config(root: str, *, semi: bool = True, **options) -> Config:
    """The tiny ESL (``semi``) or supervised config on ``root``, with ``--cfg-options``-style ``options``."""
    merged = dict(option.split('=', 1) for option in tiny_data_options(root, semi=semi))
    merged.update(options)
    return load_tool_config(ESL_CONFIG if semi else PLAIN_CONFIG, launcher='none', cfg_options=merged,
                            work_dir=osp.join(root, 'never_written'))


def label_path(root: str, sample_id: str) -> str:
    return osp.join(root, 'SegmentationClass', f'{sample_id}.png')


def image_path(root: str, sample_id: str) -> str:
    return osp.join(root, 'JPEGImages', f'{sample_id}.jpg')


def write_label(path: str, label: np.ndarray) -> None:
    Image.fromarray(label.astype(np.uint8), mode='L').save(path)


def refused(cfg: Config, error: type = ESLInputError, **kwargs) -> str:
    with pytest.raises(error) as info:
        check_training_inputs(cfg, **kwargs)
    assert not osp.exists(cfg.work_dir), 'the pre-flight must not write anything'
    return str(info.value)


# ------------------------------------------------------------------------------------------- clean data


def test_clean_tiny_dataset_passes_and_counts_what_it_checked(data):
    cfg = config(data['root'])
    report = check_training_inputs(cfg)
    # 2 labeled + 6 unlabeled + 4 validation images; labels of the labeled and validation sets only.
    assert (report.images, report.labels, report.scan) == (12, 6, 'full')
    assert check_training_inputs(cfg, scan='labels').labels == 6
    assert check_training_inputs(cfg, scan='off').images == 0
    assert check_training_inputs(config(data['root'], semi=False)).labels == 12
    assert not osp.exists(cfg.work_dir)


def test_scan_is_sharded_by_rank(data, monkeypatch):
    from mmseg_esl.utils import preflight
    cfg = config(data['root'])
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(preflight, 'get_dist_info', lambda rank=rank: (rank, 2))
        monkeypatch.setattr(preflight, 'all_gather_object', lambda obj: [obj, obj])  # stands in for the peer
        shards.append(check_training_inputs(cfg))
    assert [s.images for s in shards] == [6, 6] and shards[0].total_images == 12


# ----------------------------------------------------------------------------------- 1-3: split files


def test_missing_split_file(data):
    split = osp.join(data['root'], SPLITS, 'labeled.txt')
    os.remove(split)
    message = refused(config(data['root']), InputConfigError)
    assert 'train_dataloader.dataset.datasets.0' in message and f'Split file not found: {split}' in message
    assert 'tools/make_splits.py' in message


def test_empty_split_file(data):
    split = osp.join(data['root'], SPLITS, 'labeled.txt')
    open(split, 'w').close()
    message = refused(config(data['root']), InputConfigError)
    assert f'{split} is empty' in message and 'train_dataloader.dataset.datasets.0' in message


def test_split_id_that_does_not_exist_on_disk(data):
    with open(osp.join(data['root'], SPLITS, 'labeled.txt'), 'a') as f:
        f.write('2007_999999\n')
    message = refused(config(data['root']), InputConfigError)
    assert osp.join(data['root'], 'JPEGImages', '2007_999999.jpg') in message
    assert 'train_dataloader.dataset.datasets.0' in message and 'data_prefix' in message


# ------------------------------------------------------------------------------------ 4-6: the files


def test_label_values_outside_the_classes(data):
    path = label_path(data['root'], data['ids']['labeled'][0])
    label = np.array(Image.open(path))
    label[:3, :3] = 7  # C = 4: valid values are 0-3 and 255
    write_label(path, label)
    message = refused(config(data['root']), DataFileError)
    assert f'label map {path} has values [7] outside [0, 4) ∪ {{255}}' in message
    assert 'reduce_zero_label=False' in message and 'train_dataloader.dataset.datasets.0' in message


def test_label_values_are_checked_after_reduce_zero_label(data):
    """Values 1..4 with 0 = ignore are valid only with reduce_zero_label=True (applied as LoadAnnotations does)."""
    path = label_path(data['root'], data['ids']['labeled'][0])
    label = np.array(Image.open(path))
    write_label(path, np.where(label == 255, 0, label + 1))  # 0 = ignore, classes 1..4
    message = refused(config(data['root']), DataFileError)
    assert 'values [4]' in message and 'set reduce_zero_label=True' in message
    cfg = config(data['root'], **{'train_dataloader.dataset.datasets.0.reduce_zero_label': True})
    for other in data['ids']['labeled'][1:]:  # the other labeled maps get the same encoding
        other_path = label_path(data['root'], other)
        other_label = np.array(Image.open(other_path))
        write_label(other_path, np.where(other_label == 255, 0, other_label + 1))
    assert check_training_inputs(cfg).labels == 6


def test_image_and_label_of_different_sizes(data):
    sample = data['ids']['val'][1]
    path = label_path(data['root'], sample)
    label = np.array(Image.open(path))
    write_label(path, label[:-5])
    height, width = label.shape
    message = refused(config(data['root']), DataFileError)
    assert (f'image {image_path(data["root"], sample)} is {height}×{width} (H×W) but its label map {path} is '
            f'{height - 5}×{width}') in message


@pytest.mark.parametrize('content', [b'', b'this is not a JPEG'], ids=['zero-byte', 'not-an-image'])
def test_unreadable_image(data, content):
    path = image_path(data['root'], data['ids']['unlabeled'][2])
    with open(path, 'wb') as f:
        f.write(content)
    message = refused(config(data['root']), DataFileError)
    assert f'image {path} cannot be read' in message
    assert 'ImageSets/Segmentation/unlabeled.txt (train_dataloader.dataset.datasets.1)' in message
    assert check_training_inputs(config(data['root']), scan='off').images == 0  # the switch skips the scan


def test_problems_are_collected_into_one_error(data):
    for sample in data['ids']['unlabeled'][:3] + data['ids']['val'][:2]:
        open(image_path(data['root'], sample), 'wb').close()
    message = refused(config(data['root']), DataFileError)
    assert message.startswith('5 problem(s)') and message.count('cannot be read') == 5


# ------------------------------------------------------------------------------ 7: no unlabeled image


def test_empty_unlabeled_split_for_an_esl_run(data):
    open(osp.join(data['root'], SPLITS, 'unlabeled.txt'), 'w').close()
    message = refused(config(data['root']), InputConfigError)
    assert 'train_dataloader.dataset.datasets.1' in message and 'is empty' in message
    assert 'ESLSegmentor trains on unlabeled images' in message and 'supervised config' in message


def test_esl_run_without_an_unlabeled_set(data):
    cfg = config(data['root'], **{'train_dataloader.dataset.datasets.1.with_labels': True,
                                  'train_dataloader.dataset.datasets.1.split_file': f'{SPLITS}/labeled.txt'})
    message = refused(cfg, InputConfigError)
    assert 'ESLSegmentor needs unlabeled images' in message and 'supervised config' in message


# --------------------------------------------------------------------- 8-9: hyper-parameters, classes


def test_constructor_errors_are_reported_by_the_preflight(data):
    cfg = config(data['root'], **{'model.semi_train_cfg.loss_unsup.eta': 1.5})
    message = refused(cfg, InputConfigError)
    assert 'semi_train_cfg.loss_unsup.eta' in message and 'class `' not in message


def test_num_negatives_larger_than_the_bank(data):
    # tiny config: C = 4, K = 5, q = 16 -> (4·5 − 1)·16 = 304 slots.
    cfg = config(data['root'], **{'model.semi_train_cfg.loss_contrast.num_negatives': 305})
    message = refused(cfg, InputConfigError)
    assert 'model.semi_train_cfg.loss_contrast.num_negatives=305 exceeds the 304 bank slots' in message


def test_num_classes_of_dataset_and_model_differ(data):
    cfg = config(data['root'], semi=False, **{'model.decode_head.num_classes': 5})
    message = refused(cfg, InputConfigError)
    assert 'train_dataloader.dataset (len(metainfo["classes"]))=4' in message
    assert 'model.decode_head.num_classes=5' in message
    cfg = config(data['root'], **{'model.segmentor.decode_head.num_classes': 5})
    message = refused(cfg, InputConfigError)
    assert 'model.segmentor.decode_head.num_classes=5' in message and 'val_dataloader.dataset' in message


# ------------------------------------------------------------------------------------ 10, 12: checkpoints


def save_model(cfg: Config, path: str) -> str:
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


def test_plain_config_refuses_an_esl_checkpoint(data, tmp_path):
    checkpoint = save_model(config(data['root']), str(tmp_path / 'esl.pth'))
    with pytest.raises(CheckpointMismatchError) as error:
        check_test_checkpoint(config(data['root'], semi=False), checkpoint)
    message = str(error.value)
    assert 'is an ESL checkpoint' in message and f'tools/export_checkpoint.py {checkpoint}' in message
    assert '- backbone.stem.0.weight' in message and '- student.backbone.stem.0.weight' in message


def test_esl_config_accepts_plain_and_esl_checkpoints(data, tmp_path):
    plain = save_model(config(data['root'], semi=False), str(tmp_path / 'plain.pth'))
    esl = save_model(config(data['root']), str(tmp_path / 'esl.pth'))
    check_test_checkpoint(config(data['root']), plain)  # mapped into student and teacher
    check_test_checkpoint(config(data['root']), esl)
    check_test_checkpoint(config(data['root'], semi=False), plain)


def test_checkpoint_of_other_classes_is_refused_for_testing(data, tmp_path):
    checkpoint = save_model(config(data['root'], semi=False), str(tmp_path / 'plain.pth'))
    with pytest.raises(CheckpointMismatchError, match='size mismatch for decode_head.conv_seg.weight'):
        check_test_checkpoint(config(data['root'], semi=False, **{'model.decode_head.num_classes': 5}), checkpoint)


def test_load_from_of_other_num_parts_is_refused_before_training(data, tmp_path):
    checkpoint = save_model(config(data['root']), str(tmp_path / 'esl.pth'))
    cfg = config(data['root'], load_from=checkpoint, **{'model.semi_train_cfg.loss_contrast.num_parts': 7})
    message = refused(cfg, CheckpointMismatchError, scan='off')
    assert 'the checkpoint was trained with C=4, K=5' in message and 'this config has C=4, K=7' in message


# ---------------------------------------------------- batch layout: sampler and cutmix.partner must agree


def test_extra_partners_without_sampler_partners_are_refused(data):
    """Without partner images, 'extra' would silently use half of the unlabeled images as partners only."""
    cfg = config(data['root'])
    num_labeled = cfg.train_dataloader.sampler.num_labeled
    num_unlabeled = cfg.train_dataloader.sampler.num_unlabeled
    cfg = config(data['root'], **{'train_dataloader.sampler.cutmix_partners': False,
                                  'train_dataloader.batch_size': num_labeled + num_unlabeled})
    message = refused(cfg, InputConfigError)
    assert "cutmix.partner='extra'" in message and 'train_dataloader.sampler.cutmix_partners=False' in message
    assert 'half of the unlabeled images would be used only as partners' in message


def test_batch_partners_with_sampler_partners_are_refused(data):
    cfg = config(data['root'], **{'model.semi_train_cfg.cutmix.partner': 'batch'})
    message = refused(cfg, InputConfigError)
    assert "cutmix.partner='batch'" in message and 'cutmix_partners=True' in message
    assert 'trained on as unlabeled images' in message


def test_batch_partners_need_two_unlabeled_images_per_process(data):
    cfg = config(data['root'], **{'model.semi_train_cfg.cutmix.partner': 'batch',
                                  'train_dataloader.sampler.cutmix_partners': False,
                                  'train_dataloader.sampler.num_unlabeled': 1})
    cfg.train_dataloader.batch_size = cfg.train_dataloader.sampler.num_labeled + 1
    message = refused(cfg, InputConfigError)
    assert 'num_unlabeled=1' in message and '>= 2 unlabeled images per process' in message


def test_batch_size_that_does_not_match_the_sampler_is_refused(data):
    cfg = config(data['root'])
    expected = cfg.train_dataloader.batch_size
    cfg.train_dataloader.batch_size = expected + 1
    message = refused(cfg, InputConfigError)
    assert f'train_dataloader.batch_size={expected + 1} does not match' in message
    assert f'Set train_dataloader.batch_size={expected}.' in message


def test_batch_partners_with_a_matching_sampler_pass(data):
    cfg = config(data['root'], **{'model.semi_train_cfg.cutmix.partner': 'batch',
                                  'train_dataloader.sampler.cutmix_partners': False,
                                  'train_dataloader.sampler.num_unlabeled': 2})
    cfg.train_dataloader.batch_size = cfg.train_dataloader.sampler.num_labeled + 2
    check_training_inputs(cfg, scan='off')


# ------------------------------------------------------------------ issue 18: the mistakes users make


def test_a_negative_contrastive_weight_is_refused_like_a_negative_dsl_weight(data):
    message = refused(config(data['root'], **{'model.semi_train_cfg.loss_contrast.loss_weight': -0.1}),
                      InputConfigError)
    assert 'model.semi_train_cfg.loss_contrast.loss_weight=-0.1' in message and 'finite number >= 0' in message
    message = refused(config(data['root'], **{'model.semi_train_cfg.loss_unsup.loss_weight': -0.2}),
                      InputConfigError)
    assert 'model.semi_train_cfg.loss_unsup.loss_weight=-0.2' in message


def test_every_loss_weight_of_the_model_config_is_checked_mmsegs_included(data):
    cfg = config(data['root'], semi=False)
    cfg.model.decode_head.loss_decode.loss_weight = float('nan')
    message = refused(cfg, InputConfigError)
    assert 'model.decode_head.loss_decode.loss_weight=nan' in message


def test_the_contrastive_loss_itself_refuses_a_negative_weight():
    from mmseg_esl.models.losses.pixel_part_contrast_loss import PixelPartContrastLoss
    with pytest.raises(ValueError, match=r'loss_weight must be a finite number >= 0, got loss_weight=-0\.1.*λ2'):
        PixelPartContrastLoss(num_classes=4, feat_channels=8, embed_channels=8, loss_weight=-0.1)


def test_an_image_in_both_the_labeled_and_the_unlabeled_split_is_named_in_a_warning(data, monkeypatch):
    import mmseg_esl.utils.preflight as preflight
    logged = []
    monkeypatch.setattr(preflight, 'print_log', lambda message, **kwargs: logged.append((message, kwargs)))
    with open(osp.join(data['root'], SPLITS, 'unlabeled.txt'), 'a') as f:
        f.write(f'{data["ids"]["labeled"][1]}\n')
    check_training_inputs(config(data['root']))  # a warning, not an error
    warnings = [m for m, kwargs in logged if kwargs.get('level') == preflight.logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith('1 image(s) are in both the labeled and the unlabeled training split (')
    assert image_path(data['root'], data['ids']['labeled'][1]) in warnings[0]


def test_a_work_dir_that_cannot_be_written_is_refused_before_anything_else(data, tmp_path, monkeypatch):
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    for work_dir, expected in ((blocker, 'is a file'), (blocker / 'sub', f'cannot be created: {blocker} is a file')):
        cfg = config(data['root'])
        cfg.work_dir = str(work_dir)
        with pytest.raises(InputConfigError, match=f'The work dir {work_dir} {expected}. Pass another --work-dir'):
            check_training_inputs(cfg)
    assert blocker.read_text() == 'x'
    import mmseg_esl.utils.preflight.work_dir as work_dir_module
    monkeypatch.setattr(work_dir_module.os, 'access', lambda path, mode: False)  # as on a read-only mount
    cfg = config(data['root'])
    with pytest.raises(InputConfigError, match=r'cannot be written \(its first existing parent .* is not writable\)'):
        check_training_inputs(cfg)


def test_label_maps_saved_as_jpeg_name_the_lossy_format(data):
    for sample_id in data['ids']['labeled']:
        label = np.array(Image.open(label_path(data['root'], sample_id)))
        label[: label.shape[0] // 2] = 255  # an edge between ignore and the classes, as around VOC's objects
        Image.fromarray(label).save(osp.join(data['root'], 'SegmentationClass', f'{sample_id}.jpg'), quality=75)
    message = refused(config(data['root'], **{'train_dataloader.dataset.datasets.0.seg_map_suffix': '.jpg'}),
                      DataFileError)
    assert 'it is a JPEG file: JPEG compression is lossy' in message and "seg_map_suffix='.png'" in message


def test_binary_masks_saved_as_0_255_are_refused_with_the_conversion(data):
    """With 255 the ignore index, 0/255 masks leave every object class without a labeled pixel."""
    for split in ('labeled', 'unlabeled'):
        for sample_id in data['ids'][split]:
            path = label_path(data['root'], sample_id)
            label = np.array(Image.open(path))
            label[:, : label.shape[1] // 2] = 1  # enough foreground for any threshold
            write_label(path, np.where(label > 0, 255, 0))
    for semi in (False, True):
        message = refused(config(data['root'], semi=semi), DataFileError)
        assert 'class(es) [1, 2, 3]' in message and 'have no pixel in the labeled training set' in message
        assert 'Binary masks saved as 0/255' in message and 'label[label == 255] = 1' in message
        assert '--allow-missing-classes' in message
        check_training_inputs(config(data['root'], semi=semi), allow_missing_classes=True)  # the opt-out


def test_binary_masks_with_small_objects_are_refused_too(data):
    """Objects far below a quarter of the pixels: the masks holding only 0 and 255 give the mistake away."""
    for sample_id in data['ids']['labeled']:
        path = label_path(data['root'], sample_id)
        label = np.zeros_like(np.array(Image.open(path)))
        label[:2, :2] = 255  # one small object per image
        write_label(path, label)
    message = refused(config(data['root']), DataFileError)
    assert 'class(es) [1, 2, 3]' in message and 'Binary masks saved as 0/255' in message


def test_a_class_missing_from_the_labeled_set_alone_is_not_an_error(data):
    """Few labeled images may lack a class; without a large ignored share that is not the 0/255 mistake."""
    for sample_id in data['ids']['labeled']:
        path = label_path(data['root'], sample_id)
        label = np.array(Image.open(path))
        write_label(path, np.where(label == 3, 0, label))
    check_training_inputs(config(data['root']))
