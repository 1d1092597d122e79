"""own_config: every derived value of a config for your own dataset, and the written file as mmengine reads it."""
from __future__ import annotations

import math
import os
import os.path as osp

import pytest
from conftest import REPO_ROOT
from mmengine.config import Config

from mmseg_esl.datasets import folder_splits, write_split
from mmseg_esl.testing.own_dataset import OWN_CLASSES, make_own_dataset
from mmseg_esl.testing.tiny_voc import voc_palette
from mmseg_esl.utils.own_config import (
    MODELS,
    DatasetSpec,
    plan_config,
    read_classes,
    render_config,
    render_sup_config,
)

CONFIGS = osp.join(REPO_ROOT, 'configs')


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('own') / 'my_dataset')
    make_own_dataset(root, num_images=60, num_masked=30)
    splits = folder_splits(img_dir=osp.join(root, 'images'), img_suffix='.png', ann_dir=osp.join(root, 'masks'),
                           seg_map_suffix='_mask.png', num_labeled=10, num_val=12)
    for name in ('labeled', 'unlabeled', 'val'):
        write_split(osp.join(root, 'splits', f'{name}.txt'), getattr(splits, name))
    return DatasetSpec(data_root=root, classes=OWN_CLASSES, img_dir='images', ann_dir='masks', img_suffix='.png',
                       seg_map_suffix='_mask.png', labeled='splits/labeled.txt', unlabeled='splits/unlabeled.txt',
                       val='splits/val.txt')


def _write(spec, tmp_path, **kwargs):
    out = str(tmp_path / 'configs' / 'mine' / 'esl_mine.py')
    plan = plan_config(spec, out=out, configs_dir=CONFIGS, **kwargs)
    os.makedirs(osp.dirname(out), exist_ok=True)
    with open(out, 'w') as f:  # its _base_ is the shipped config, by a path relative to this file
        f.write(render_config(plan, voc_palette(len(spec.classes))))
    return plan, Config.fromfile(out)


def _num_classes(node, found=None):
    found = [] if found is None else found
    if isinstance(node, dict):
        if 'num_classes' in node:
            found.append(node['num_classes'])
        for value in node.values():
            _num_classes(value, found)
    return found


def test_read_classes_from_a_file_skips_blank_lines_and_refuses_duplicates(tmp_path):
    path = tmp_path / 'classes.txt'
    path.write_text('road\n\nsky \ncar\n')
    assert read_classes(None, str(path)) == (('road', 'sky', 'car'), str(path))
    assert read_classes(['a', 'b'], None) == (('a', 'b'), 'the command line')
    path.write_text('road\nsky\nroad\n')
    with pytest.raises(ValueError, match=r"\['road'\] appear twice"):
        read_classes(None, str(path))
    with pytest.raises(ValueError, match='at least two'):
        read_classes(['only'], None)
    with pytest.raises(ValueError, match='cannot read the class file'):
        read_classes(None, str(tmp_path / 'missing.txt'))


@pytest.mark.parametrize('model', sorted(MODELS))
def test_every_shipped_model_gets_the_dataset_classes_in_every_head_and_the_crop(dataset, tmp_path, model):
    plan, cfg = _write(dataset, tmp_path, model=model, crop_size=128)
    assert _num_classes(cfg.model) and set(_num_classes(cfg.model)) == {len(OWN_CLASSES)}
    assert tuple(cfg.model.segmentor.data_preprocessor.size) == (128, 128) == tuple(cfg.data_preprocessor.size)
    assert cfg.model.semi_train_cfg.loss_contrast.feat_channels == plan.feat_channels
    labeled, unlabeled = cfg.train_dataloader.dataset.datasets
    assert (labeled.split_file, unlabeled.split_file) == ('splits/labeled.txt', 'splits/unlabeled.txt')
    assert labeled.metainfo.classes == OWN_CLASSES and unlabeled.with_labels is False
    assert labeled.data_root == dataset.data_root and labeled.seg_map_suffix == '_mask.png'
    assert cfg.val_dataloader.dataset.type == 'SplitSegDataset'
    assert cfg.val_dataloader.dataset.split_file == 'splits/val.txt' and cfg.val_dataloader.batch_size == 1
    crops = [t.crop_size for t in labeled.pipeline if t.type == 'RandomCrop']
    assert crops == [(128, 128)]
    hooks = {h.type: h for h in cfg.custom_hooks}
    assert hooks['PrototypeInitHook'].dataloader.dataset.split_file == 'splits/labeled.txt'


def test_iterations_count_epochs_of_the_unlabeled_set_over_the_total_batch(dataset, tmp_path):
    plan, cfg = _write(dataset, tmp_path, model='r101', gpus=4, epochs=80)
    assert plan.per_gpu == 2  # the paper's 8 + 8 over 4 GPUs
    assert cfg.train_dataloader.batch_size == 6
    assert (cfg.train_dataloader.sampler.num_labeled, cfg.train_dataloader.sampler.num_unlabeled) == (2, 2)
    assert plan.num_unlabeled == 38
    assert cfg.train_cfg.max_iters == math.ceil(80 * 38 / 8) == 380
    assert plan.iters_per_epoch == math.ceil(38 / 8) == 5
    hook = next(h for h in cfg.custom_hooks if h.type == 'EMATeacherHook')
    assert (hook.sup_only_iters, hook.copy_iters, hook.decay) == (5, 5, 0.99)  # U2PL's one epoch each
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=24)
    assert cfg.train_cfg.val_interval == 38 and cfg.default_hooks.checkpoint.interval == 38


def test_a_short_run_caps_the_teacher_phases_at_an_eighth_and_moves_the_schedule_end(dataset, tmp_path):
    plan, cfg = _write(dataset, tmp_path, model='effnet-lite0', iters=16)
    assert plan.iters_per_epoch == math.ceil(38 / 4) == 10
    hook = next(h for h in cfg.custom_hooks if h.type == 'EMATeacherHook')
    assert (hook.sup_only_iters, hook.copy_iters) == (2, 2)
    assert any('1/8 of the run' in note for note in plan.notes)
    assert [s.get('end') for s in cfg.param_scheduler] == [16]  # the demo's PolyLR ended at its 1000


def test_bad_numbers_and_split_files_are_refused(dataset, tmp_path):
    with pytest.raises(ValueError, match='--gpus must be positive'):
        plan_config(dataset, model='r101', out=str(tmp_path / 'a.py'), configs_dir=CONFIGS, gpus=0)
    with pytest.raises(ValueError, match="--model 'r50'"):
        plan_config(dataset, model='r50', out=str(tmp_path / 'a.py'), configs_dir=CONFIGS)
    missing = DatasetSpec(**{**dataset.__dict__, 'val': 'splits/test.txt'})
    with pytest.raises(ValueError, match='the val split .*test.txt'):
        plan_config(missing, model='r101', out=str(tmp_path / 'a.py'), configs_dir=CONFIGS)


@pytest.mark.parametrize('model', ['r101', 'effnet-lite0'])
def test_the_supervised_baseline_keeps_the_network_labeled_images_and_iterations(dataset, tmp_path, model):
    plan, esl = _write(dataset, tmp_path, model=model, gpus=2)
    sup_path = str(tmp_path / 'configs' / 'mine' / 'sup_mine.py')
    with open(sup_path, 'w') as f:
        f.write(render_sup_config(plan, 'esl_mine.py'))
    sup = Config.fromfile(sup_path)
    assert sup.model.to_dict() == esl.model.segmentor.to_dict()  # the student's network, classes included
    assert sup.train_dataloader.dataset.split_file == 'splits/labeled.txt'
    assert sup.train_dataloader.batch_size == plan.per_gpu and sup.train_dataloader.sampler.type == 'InfiniteSampler'
    assert sup.train_cfg.max_iters == esl.train_cfg.max_iters and sup.custom_hooks == []
    assert sup.optim_wrapper.constructor == 'DefaultOptimWrapperConstructor'
    assert sup.optim_wrapper.optimizer == esl.optim_wrapper.optimizer
    # the same learning rate per labeled image: base_batch_size over the labeled images of the base's batch
    assert sup.auto_scale_lr.base_batch_size * 3 == esl.auto_scale_lr.base_batch_size
