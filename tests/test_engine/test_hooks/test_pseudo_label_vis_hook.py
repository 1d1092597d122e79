"""PseudoLabelVisHook and the Fig. 3 rendering it shares with tools/analysis/dominant_classes.py.

Fast: the rendering on synthetic probabilities whose dominant-class counts are known; the hook on a tiny ESL model
(configs/esl/tiny_esl_voc.py, random init) with a namespace runner and mmengine's LocalVisBackend. Slow: the
TensorBoard demo config trained for 4 iterations with tools/train.py; its images (LocalVisBackend PNGs and the
TensorBoard events file) and scalars are read back.
"""
import glob
import os.path as osp
import sys
import uuid
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, run
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmengine.visualization import Visualizer
from mmseg.registry import HOOKS, MODELS
from mmseg.structures import SegDataSample
from PIL import Image

import mmseg_esl  # noqa: F401  (registers the hook)
from mmseg_esl.engine.hooks import PseudoLabelVisHook
from mmseg_esl.models.losses import dominant_classes
from mmseg_esl.testing import make_demo_dataset
from mmseg_esl.utils.experiment import data_root_options
from mmseg_esl.visualization.panels import save_png
from mmseg_esl.visualization.pseudo_labels import (
    CATEGORY_COLOURS,
    dominant_class_counts,
    dominant_classes_figure,
    render_dominant_classes,
)

TINY_ESL = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_esl_voc.py')
TB_CONFIG = osp.join(REPO_ROOT, 'configs', 'esl', 'esl_effnet-lite0_demo_tensorboard.py')


def decode_overlay(png, image_box, overlay_box, scale, alpha):
    """Category (0: 1 class, 1: 2, 2: >=3) of each pixel of an overlay panel, given its image panel."""
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = image_box, overlay_box
    image = png[ay0:ay1:scale, ax0:ax1:scale].astype(np.float64)
    overlay = png[by0:by1:scale, bx0:bx1:scale].astype(np.float64)
    colour = (overlay - (1 - alpha) * image) / alpha
    return np.linalg.norm(colour[:, :, None] - CATEGORY_COLOURS[None, None], axis=-1).argmin(-1)


def synthetic_probs():
    """(2, 5, 6, 8) probabilities with known counts at η = 0.95: 1, 2 and 5 dominant classes, and 3 (η reached
    only with the third class)."""
    probs = torch.zeros(2, 5, 6, 8)
    expected = np.zeros((2, 6, 8), dtype=np.int64)
    probs[:, 0] = 1.0  # one-hot: 1 class
    expected[:] = 1
    probs[0, :, :3, :4] = torch.tensor([0.5, 0.5, 0, 0, 0])[:, None, None]  # two halves: 2 classes
    expected[0, :3, :4] = 2
    probs[0, :, 3:, 4:] = 0.2  # uniform: all 5 classes
    expected[0, 3:, 4:] = 5
    probs[1, :, :, :2] = torch.tensor([0.5, 0.3, 0.2, 0, 0])[:, None, None]  # 0.5 + 0.3 < 0.95: 3 classes
    expected[1, :, :2] = 3
    return probs, expected


def test_rendering_shows_known_counts_and_fractions(tmp_path):
    probs, expected = synthetic_probs()
    counts = dominant_class_counts(probs, eta=0.95)
    np.testing.assert_array_equal(counts.numpy(), expected)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (6, 8, 3), dtype=np.uint8) for _ in range(2)]
    fig, boxes, fractions = dominant_classes_figure(images, list(counts.numpy()), eta=0.95, names=['a', 'b'],
                                                    alpha=0.4, scale=3)
    path = str(tmp_path / 'fig3.png')
    size = save_png(fig, path)
    png = np.asarray(Image.open(path).convert('RGB'))
    assert png.shape == (size['height'], size['width'], 3)
    for i in range(2):
        x0, y0, x1, y1 = boxes[i][0]
        assert (x1 - x0, y1 - y0) == (8 * 3, 6 * 3)
        np.testing.assert_array_equal(png[y0:y1:3, x0:x1:3], images[i])
        decoded = decode_overlay(png, boxes[i][0], boxes[i][1], 3, 0.4)
        np.testing.assert_array_equal(decoded, np.clip(expected[i], 1, 3) - 1)
    total = expected.size
    assert fractions == pytest.approx({'1': (expected == 1).sum() / total, '2': (expected == 2).sum() / total,
                                       '>=3': (expected >= 3).sum() / total})
    # The array the hook sends to the backends is the PNG the tool writes.
    rendered = render_dominant_classes(images, list(counts.numpy()), eta=0.95, names=['a', 'b'], alpha=0.4, scale=3)
    np.testing.assert_array_equal(rendered, png)


def test_arguments_are_checked():
    for kwargs, key in ((dict(interval=0), 'interval'), (dict(max_images=0), 'max_images'), (dict(eta=1.5), 'eta'),
                        (dict(alpha=2.0), 'alpha'), (dict(scale=0), 'scale'), (dict(name='a/b'), 'name')):
        with pytest.raises(ValueError, match=f'PseudoLabelVisHook: {key} must'):
            PseudoLabelVisHook(**kwargs)
    hook = HOOKS.build(dict(type='PseudoLabelVisHook', interval=3, max_images=2))
    assert isinstance(hook, PseudoLabelVisHook) and hook.interval == 3 and hook.max_images == 2
    with pytest.raises(TypeError, match='PseudoLabelVisHook needs an ESLSegmentor.*Remove the hook'):
        hook.before_train(SimpleNamespace(model=torch.nn.Linear(1, 1)))


def sample(flag, height, width, index):
    data_sample = SegDataSample(metainfo=dict(is_labeled=flag, img_shape=(height, width), ori_shape=(height, width),
                                              img_path=f'/data/img_{index}.jpg'))
    if flag:
        data_sample.gt_sem_seg = PixelData(data=torch.zeros(1, height, width, dtype=torch.long))
    return data_sample


@pytest.fixture
def tiny_esl():
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(TINY_ESL).model)
    model.init_weights()
    return model.eval()


def test_hook_sends_the_figure_of_the_unlabeled_images_at_its_interval(tiny_esl, tmp_path):
    """Batch [1 labeled | 2 unlabeled | 2 partners]; images of different sizes (the preprocessor pads to 64)."""
    gen = torch.Generator().manual_seed(1)
    shapes = [(64, 64), (48, 40), (64, 56), (64, 64), (64, 64)]
    batch = dict(inputs=[torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for h, w in shapes],
                 data_samples=[sample(i == 0, h, w, i) for i, (h, w) in enumerate(shapes)])
    visualizer = Visualizer(name=f'vis_{uuid.uuid4().hex}', vis_backends=[dict(type='LocalVisBackend')],
                            save_dir=str(tmp_path))
    runner = SimpleNamespace(model=tiny_esl, iter=0, visualizer=visualizer)
    hook = PseudoLabelVisHook(interval=2, max_images=2, alpha=0.5, scale=2)
    hook.before_train(runner)
    rng_before = torch.get_rng_state(), np.random.get_state()[1].copy()
    for it in range(5):
        runner.iter = it
        hook.after_train_iter(runner, it, data_batch=batch)
    # It draws no random numbers: the training run and an exact resume are the same with or without it.
    assert torch.equal(torch.get_rng_state(), rng_before[0])
    np.testing.assert_array_equal(np.random.get_state()[1], rng_before[1])
    written = sorted(osp.basename(p) for p in glob.glob(str(tmp_path / 'vis_data' / 'vis_image' / '*.png')))
    assert written == ['dominant_classes_2.png', 'dominant_classes_4.png']

    # The figure is Fig. 3 of the two unlabeled images (not the labeled one, not the partners), cropped to their
    # sizes, with the teacher's counts at the model's η.
    data = tiny_esl.data_preprocessor(batch, True)
    with torch.no_grad():
        probs = tiny_esl.teacher_probs(data['inputs'][[1, 2]])
    counts = dominant_classes(probs, eta=tiny_esl.unsup_loss.eta).sum(dim=1).numpy()
    images = [batch['inputs'][i][[2, 1, 0]].permute(1, 2, 0).numpy() for i in (1, 2)]
    maps = [counts[0, :48, :40], counts[1, :64, :56]]
    expected = render_dominant_classes(images, maps, eta=0.95, names=['img_1', 'img_2'], alpha=0.5, scale=2,
                                       title='iter 4: teacher dominant classes (Eq. 3-4, \u03b7 = 0.95)')
    written = cv2.imread(str(tmp_path / 'vis_data' / 'vis_image' / 'dominant_classes_4.png'))[..., ::-1]
    np.testing.assert_array_equal(written, expected)


def test_max_images_limits_the_rows(tiny_esl, tmp_path):
    hook = PseudoLabelVisHook(interval=1, max_images=1, scale=1)
    shapes = [(64, 64)] * 3
    batch = dict(inputs=[torch.full((3, h, w), 100, dtype=torch.uint8) for h, w in shapes],
                 data_samples=[sample(i == 0, h, w, i) for i, (h, w) in enumerate(shapes)])
    one = hook.render(tiny_esl, batch)
    two = PseudoLabelVisHook(interval=1, max_images=2, scale=1).render(
        tiny_esl, dict(inputs=batch['inputs'] + batch['inputs'][1:], data_samples=batch['data_samples'] + [
            sample(False, 64, 64, 3), sample(False, 64, 64, 4)]))
    assert one.shape[1] == two.shape[1] and two.shape[0] > one.shape[0]  # one row vs two rows


@pytest.mark.slow
def test_tensorboard_config_writes_images_and_scalars(tmp_path):
    event_accumulator = pytest.importorskip(
        'tensorboard.backend.event_processing.event_accumulator',
        reason='the tensorboard package is not installed (pip install tensorboard, or pip install -e ".[tests]")')
    cfg = Config.fromfile(TB_CONFIG)
    assert [b['type'] for b in cfg.visualizer.vis_backends] == ['LocalVisBackend', 'TensorboardVisBackend']
    types = [h['type'] for h in cfg.custom_hooks]
    parent = [h['type'] for h in Config.fromfile(osp.join(REPO_ROOT, 'configs', 'esl', 'esl_effnet-lite0_demo.py'))
              .custom_hooks]
    assert types == parent + ['PseudoLabelVisHook']  # the parent's hooks are kept
    hook_index = types.index('PseudoLabelVisHook')

    data = str(tmp_path / 'data')
    make_demo_dataset(data, num_labeled=4, num_unlabeled=4, num_dev=0, num_val=2, image_size=64, seed=0)
    work_dir = str(tmp_path / 'work')
    iters = 4
    options = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
               f'default_hooks.checkpoint.interval={iters}', f'param_scheduler.0.end={iters}',
               'default_hooks.logger.interval=1', f'custom_hooks.{hook_index}.interval=2',
               'train_dataloader.sampler.num_labeled=1', 'train_dataloader.sampler.num_unlabeled=1',
               'train_dataloader.batch_size=3', 'custom_hooks.0.sup_only_iters=0'] + [
        f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
        for key in ('num_workers=0', 'persistent_workers=False')]
    run([sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), TB_CONFIG, '--work-dir', work_dir,
         '--cfg-options', *data_root_options(TB_CONFIG, data), *options], cwd=str(tmp_path))
    (vis_data,) = glob.glob(osp.join(work_dir, '*', 'vis_data'))
    pngs = sorted(osp.basename(p) for p in glob.glob(osp.join(vis_data, 'vis_image', '*.png')))
    assert pngs == ['dominant_classes_2.png', 'dominant_classes_4.png']

    (events,) = glob.glob(osp.join(vis_data, 'events.out.tfevents.*'))
    acc = event_accumulator.EventAccumulator(events, size_guidance={'images': 0, 'scalars': 0})
    acc.Reload()
    assert acc.Tags()['images'] == ['dominant_classes']
    images = acc.Images('dominant_classes')
    assert [e.step for e in images] == [2, 4]
    for event in images:  # TensorBoard holds the same picture as the LocalVisBackend file
        from_tb = cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
        local = cv2.imread(osp.join(vis_data, 'vis_image', f'dominant_classes_{event.step}.png'))
        assert from_tb.shape == local.shape and (event.height, event.width) == local.shape[:2]
        np.testing.assert_array_equal(from_tb, local)
    scalars = acc.Tags()['scalars']
    for tag in ('loss', 'unsup.loss_dsl', 'unsup.dominant_classes', 'unsup.multi_dominant', 'unsup.teacher_conf',
                'unsup.pseudo_acc', 'contrast.loss_ctr', 'contrast.bank_fill', 'mIoU'):
        assert tag in scalars, (tag, scalars)
    assert [e.step for e in acc.Scalars('unsup.dominant_classes')] == [1, 2, 3, 4]
    assert all(1.0 <= e.value <= 7.0 for e in acc.Scalars('unsup.dominant_classes'))
