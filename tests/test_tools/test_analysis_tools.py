"""tools/analysis: the paper's Fig. 3, 4, 6 and 7b for a trained checkpoint, checked on their pixels.

A small demo dataset (6 labeled + 6 unlabeled 128 px images, labels for all) and an ESL demo checkpoint (4 training
iterations of configs/esl/esl_effnet-lite0_demo.py with tools/train.py, prototypes from PrototypeInitHook) are made
once per module. Each tool runs in this process (``main(argv)``); the test then loads the checkpoint itself,
recomputes what the figure must show from the teacher (Eq. 1, 3-5, 7) and reads it back from the PNG: the panels
are drawn pixel-exactly (``figimage``), their boxes are in the tool's JSON.
"""
import importlib.util
import os.path as osp
import subprocess
import sys

import mmcv
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, clean_env, run
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS
from PIL import Image

import mmseg_esl  # noqa: F401  (registrations)
from mmseg_esl.analysis import AnalysisError
from mmseg_esl.models.decode_heads.projector_head import DecodeFeatureTap
from mmseg_esl.models.losses import dominant_classes
from mmseg_esl.testing import make_demo_dataset
from mmseg_esl.utils.experiment import data_root_options
from mmseg_esl.visualization.pseudo_labels import CATEGORY_COLOURS

ANALYSIS = osp.join(REPO_ROOT, 'tools', 'analysis')
ESL_CONFIG = osp.join(REPO_ROOT, 'configs', 'esl', 'esl_effnet-lite0_demo.py')
K0_CONFIG = osp.join(REPO_ROOT, 'configs', 'esl', 'mt-dsl_effnet-lite0_demo.py')
PLAIN_CONFIG = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_supervised_voc.py')
TINY_ESL_CONFIG = osp.join(REPO_ROOT, 'configs', 'esl', 'tiny_esl_voc.py')
TOOLS = ('dominant_classes', 'part_grouping', 'pseudo_label_hist', 'tsne')
ITERS = 4
SIZE = 128  # the demo's image size: E^t of EfficientNet-Lite0 (stride 32) is then 4 x 4
SHRINK = [f'train_cfg.max_iters={ITERS}', f'train_cfg.val_interval={ITERS}',
          f'default_hooks.checkpoint.interval={ITERS}', f'param_scheduler.0.end={ITERS}',
          'train_dataloader.sampler.num_labeled=1',
          'train_dataloader.sampler.num_unlabeled=1', 'train_dataloader.batch_size=3',
          # no supervised-only phase: the 4 iterations train the teacher path the tools read
          'custom_hooks.0.sup_only_iters=0'] + [
    f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    for key in ('num_workers=0', 'persistent_workers=False')]


def tool(name):
    """The tool's module (its ``main(argv)`` runs it in this process)."""
    spec = importlib.util.spec_from_file_location(f'analysis_{name}', osp.join(ANALYSIS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def save_untrained(config, path):
    """A checkpoint of ``config``'s freshly built model (fits it with strict=True; prototypes not ready)."""
    init_default_scope('mmseg')
    model = MODELS.build(Config.fromfile(config).model)
    torch.save(dict(meta=dict(), state_dict=model.state_dict()), path)
    return path


def load_model(config, checkpoint):
    init_default_scope('mmseg')
    model = MODELS.build(Config.fromfile(config).model)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
    return model.eval()


def preprocess(model, image_path):
    """(1, 3, H, W) model input and the (H, W, 3) RGB image of a file, without the tools' code."""
    bgr = mmcv.imread(image_path)
    data = model.data_preprocessor(dict(inputs=[torch.from_numpy(bgr).permute(2, 0, 1).contiguous()]), False)
    return data['inputs'], bgr[..., ::-1]


def read_png(path):
    return np.asarray(Image.open(path).convert('RGB'))


def crop(png, box, scale):
    """The panel at ``box`` reduced to one pixel per block of its ``scale`` × ``scale`` enlargement."""
    x0, y0, x1, y1 = box
    return png[y0:y1:scale, x0:x1:scale]


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """A small demo dataset, a 4-iteration ESL checkpoint and an untrained K = 0 (MT-DSL) checkpoint."""
    root = tmp_path_factory.mktemp('analysis')
    data = str(root / 'data')
    make_demo_dataset(data, num_labeled=6, num_unlabeled=6, num_dev=0, num_val=2, image_size=SIZE, seed=0)
    work_dir = str(root / 'work')
    run([sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), ESL_CONFIG, '--work-dir', work_dir,
         '--cfg-options', *data_root_options(ESL_CONFIG, data), *SHRINK], cwd=str(root))
    return dict(root=root, data=data, checkpoint=osp.join(work_dir, f'iter_{ITERS}.pth'),
                k0_checkpoint=save_untrained(K0_CONFIG, str(root / 'mt-dsl_untrained.pth')),
                options=['--data-root', data], cfg_options=['--cfg-options', *data_root_options(ESL_CONFIG, data)],
                unlabeled=open(osp.join(data, 'ImageSets', 'Segmentation', 'unlabeled.txt')).read().split())


def image_path(demo, sample_id):
    return osp.join(demo['data'], 'JPEGImages', f'{sample_id}.jpg')


def label(demo, sample_id):
    return np.array(Image.open(osp.join(demo['data'], 'SegmentationClass', f'{sample_id}.png'))).astype(np.int64)


# ------------------------------------------------------------------------------------------------ fast tests
@pytest.mark.parametrize('name', TOOLS)
def test_help_names_the_figure_and_shows_examples(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tool(name).main(['--help'])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    figure = dict(dominant_classes='Fig. 3', part_grouping='Fig. 4', pseudo_label_hist='Fig. 7b', tsne='Fig. 6')[name]
    assert figure in text and 'Examples:' in text
    for option in ('--cfg-options', '--data-root', '--img-dir', '--split', '--ids', '--out'):
        assert option in text


def test_missing_image_folder_is_a_clear_error(tmp_path):
    """Exit status 1 and one line naming the folder and the alternatives, no traceback (a real process)."""
    proc = subprocess.run([sys.executable, osp.join(ANALYSIS, 'dominant_classes.py'), TINY_ESL_CONFIG,
                           str(tmp_path / 'none.pth'), '--img-dir', str(tmp_path / 'no_such_folder')],
                          cwd=str(tmp_path), env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"dominant_classes.py: error: --img-dir '{tmp_path / 'no_such_folder'}' is not a directory" in proc.stderr
    assert '--split' in proc.stderr and 'Traceback' not in proc.stderr
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(AnalysisError, match='holds no image'):
        tool('dominant_classes').main([TINY_ESL_CONFIG, 'x.pth', '--img-dir', str(empty)])


def test_part_grouping_refuses_a_plain_config_naming_the_fix(tiny_voc, tmp_path):
    plain = save_untrained(PLAIN_CONFIG, str(tmp_path / 'plain.pth'))
    images = osp.join(tiny_voc, 'JPEGImages')
    part_grouping = tool('part_grouping')
    with pytest.raises(AnalysisError) as error:
        part_grouping.main([PLAIN_CONFIG, plain, '--img-dir', images, '--out', str(tmp_path / 'p.png')])
    message = str(error.value)
    assert "builds model.type='EncoderDecoder'" in message and 'Give an ESLSegmentor config' in message
    assert 'configs/esl/esl_effnet-lite0_demo.py' in message
    # A plain checkpoint with an ESL config: the strict load fails and the message says which config to use.
    with pytest.raises(AnalysisError) as error:
        part_grouping.main([TINY_ESL_CONFIG, plain, '--img-dir', images, '--out', str(tmp_path / 'p.png')])
    message = str(error.value)
    assert f'checkpoint {plain} does not fit the model of {TINY_ESL_CONFIG}' in message
    assert 'missing keys: student.projector.*' in message and 'contrast_loss.prototypes.* (1)' in message
    assert 'Give the config the checkpoint was trained with' in message
    # An ESL checkpoint saved before PrototypeInitHook ran.
    fresh = save_untrained(TINY_ESL_CONFIG, str(tmp_path / 'fresh.pth'))
    with pytest.raises(AnalysisError, match=r'has no part prototypes \(contrast_loss.prototypes_ready is False\).*'
                                        'PrototypeInitHook'):
        part_grouping.main([TINY_ESL_CONFIG, fresh, '--img-dir', images, '--out', str(tmp_path / 'p.png')])
    assert not (tmp_path / 'p.png').exists()


# ------------------------------------------------------------------------------------------------ Fig. 3
@pytest.mark.slow
def test_dominant_classes_png_shows_the_teacher_counts(demo, tmp_path):
    model = load_model(ESL_CONFIG, demo['checkpoint'])
    ids = demo['unlabeled'][:2]
    with torch.no_grad():
        probs = {i: model.teacher_probs(preprocess(model, image_path(demo, i))[0]) for i in ids}
    dominant_classes_tool = tool('dominant_classes')
    out = str(tmp_path / 'default.png')
    report = dominant_classes_tool.main([ESL_CONFIG, demo['checkpoint'], '--num-images', '2', '--out', out,
                                         *demo['cfg_options']])
    assert report['eta'] == model.unsup_loss.eta == 0.95 and [r['id'] for r in report['rows']] == ids
    npz = np.load(out[:-4] + '.npz')
    for n, i in enumerate(ids):
        np.testing.assert_array_equal(npz[f'counts_{n}'], dominant_classes(probs[i], eta=0.95).sum(dim=1)[0])

    # After 4 iterations the teacher is unsure everywhere at η = 0.95; an η at the median top-1 probability gives
    # a map with 1 class on about half of the pixels and 2 or more elsewhere.
    eta = round(float(torch.cat([p.max(dim=1).values.flatten() for p in probs.values()]).median()), 4)
    out = str(tmp_path / 'dominant.png')
    report = dominant_classes_tool.main([ESL_CONFIG, demo['checkpoint'], '--ids', *ids, '--eta', str(eta),
                                         '--scale', '2', '--out', out, *demo['cfg_options']])
    assert report['eta'] == eta
    png = read_png(out)
    assert png.shape[:2] == (report['png']['height'], report['png']['width'])
    all_counts = []
    for row in report['rows']:
        counts = dominant_classes(probs[row['id']], eta=eta).sum(dim=1)[0].numpy()  # Eq. 3-4
        all_counts.append(counts)
        rgb = preprocess(model, image_path(demo, row['id']))[1]
        np.testing.assert_array_equal(crop(png, row['image_box'], 2), rgb)  # the image itself, enlarged 2x
        # Undo the blend (1 - a) * image + a * colour and take the nearest of the three colours.
        overlay = crop(png, row['overlay_box'], 2).astype(np.float64)
        colour = (overlay - (1 - report['alpha']) * rgb) / report['alpha']
        decoded = np.linalg.norm(colour[:, :, None] - CATEGORY_COLOURS[None, None], axis=-1).argmin(-1)
        np.testing.assert_array_equal(decoded, np.clip(counts, 1, 3) - 1)
        expected = [np.mean(counts == 1), np.mean(counts == 2), np.mean(counts >= 3)]
        assert list(row['fractions'].values()) == pytest.approx(expected)
    flat = np.concatenate([c.ravel() for c in all_counts])
    assert list(report['fractions'].values()) == pytest.approx(
        [np.mean(flat == 1), np.mean(flat == 2), np.mean(flat >= 3)])
    assert 0.3 < report['fractions']['1'] < 0.7 and report['fractions']['1'] < 1  # both kinds of pixel shown


# ------------------------------------------------------------------------------------------------ Fig. 4
@pytest.mark.slow
def test_part_grouping_png_shows_assign_of_the_prototypes(demo, tmp_path):
    out = str(tmp_path / 'parts.png')
    part_grouping = tool('part_grouping')
    report = part_grouping.main([ESL_CONFIG, demo['checkpoint'], '--num-images', '2', '--scale', '1', '--out', out,
                                 *demo['options']])
    png = read_png(out)
    assert png.shape[:2] == (report['png']['height'], report['png']['width'])
    model = load_model(ESL_CONFIG, demo['checkpoint'])
    contrast = model.contrast_loss
    assert report['num_parts'] == contrast.num_parts == 5
    palette = np.array(report['palette'], dtype=np.uint8)  # (C, K, 3)
    assert len({tuple(c) for c in palette.reshape(-1, 3)}) == palette.shape[0] * palette.shape[1]  # all distinct
    for row in report['rows']:
        assert row['class_source'] == 'ground truth'  # the demo's unlabeled images have label files
        inputs, rgb = preprocess(model, image_path(demo, row['id']))
        gt = torch.from_numpy(label(demo, row['id']))[None]
        with torch.no_grad():
            enc = model.teacher.extract_feat(inputs)[contrast.in_index]
            parts = contrast.assign(enc, gt, align_corners=model.teacher.align_corners)[0].numpy()  # Eq. 7
        expected = palette[gt[0].numpy(), parts]
        np.testing.assert_array_equal(crop(png, row['parts_box'], 1), expected)
        np.testing.assert_array_equal(crop(png, row['image_box'], 1), rgb)
        assert len(np.unique(parts)) > 1  # several parts are shown, not one colour per class
    # With the teacher's classes instead of the labels.
    report = part_grouping.main([ESL_CONFIG, demo['checkpoint'], '--ids', demo['unlabeled'][0], '--scale', '1',
                                 '--class-source', 'teacher', '--out', out, *demo['options']])
    row = report['rows'][0]
    assert row['class_source'] == 'teacher arg-max'
    inputs, _ = preprocess(model, image_path(demo, row['id']))
    with torch.no_grad():
        classes = model.teacher_probs(inputs).argmax(dim=1)
        parts = contrast.assign(model.teacher.extract_feat(inputs)[contrast.in_index], classes)[0].numpy()
    np.testing.assert_array_equal(crop(read_png(out), row['parts_box'], 1), palette[classes[0].numpy(), parts])


@pytest.mark.slow
def test_part_grouping_refuses_a_checkpoint_without_contrast(demo, tmp_path):
    with pytest.raises(AnalysisError) as error:
        tool('part_grouping').main([K0_CONFIG, demo['k0_checkpoint'], '--out', str(tmp_path / 'p.png'),
                                    *demo['options']])
    assert 'without the pixel-to-part contrast (semi_train_cfg.loss_contrast.num_parts=0' in str(error.value)
    assert 'configs/esl/esl_effnet-lite0_demo.py' in str(error.value)


# ------------------------------------------------------------------------------------------------ Fig. 7b
def dsl_reference(probs, eta):
    """Eq. 3-5 in numpy, for one (C, H, W) probability map: the soft label y*."""
    order = np.sort(probs, axis=0)[::-1]
    prefix = np.cumsum(order, axis=0)
    last = np.minimum((prefix < eta - 1e-6).sum(axis=0), probs.shape[0] - 1)  # index of the threshold class C*
    delta = np.take_along_axis(order, last[None], axis=0)
    kept = probs * (probs >= delta)
    return kept / kept.sum(axis=0, keepdims=True)


@pytest.mark.slow
def test_pseudo_label_hist_counts_and_bars(demo, tmp_path):
    out = str(tmp_path / 'hist.png')
    report = tool('pseudo_label_hist').main([ESL_CONFIG, demo['checkpoint'], '--out', out, *demo['options']])
    model = load_model(ESL_CONFIG, demo['checkpoint'])
    num_classes = model.teacher.decode_head.num_classes
    hard, dsl, gt = np.zeros(num_classes), np.zeros(num_classes), np.zeros(num_classes)
    for sample_id in demo['unlabeled']:
        inputs, _ = preprocess(model, image_path(demo, sample_id))
        with torch.no_grad():
            probs = model.teacher_probs(inputs)[0].double().numpy()
        hard += np.bincount(probs.argmax(axis=0).ravel(), minlength=num_classes)
        dsl += dsl_reference(probs, 0.95).sum(axis=(1, 2))
        gt += np.bincount(label(demo, sample_id).ravel(), minlength=num_classes)
    assert report['num_images'] == len(demo['unlabeled']) == report['gt_images'] == 6
    assert report['num_pixels'] == 6 * SIZE * SIZE == hard.sum()
    np.testing.assert_array_equal(report['counts']['hard'], hard)
    np.testing.assert_allclose(report['counts']['dsl'], dsl, rtol=1e-4)
    np.testing.assert_array_equal(report['counts']['gt'], gt)
    assert report['fractions']['dsl'] == pytest.approx(list(dsl / dsl.sum()), rel=1e-4)
    # The bars in the PNG: the height of each bar's centre column, converted back to % of pixels.
    png = read_png(out)
    assert png.shape[:2] == (report['png']['height'], report['png']['width'])
    plot = report['plot']
    x0, y0, x1, y1 = plot['axes_box']
    (left, right), (bottom, top) = plot['xlim'], plot['ylim']
    assert plot['yscale'] == 'linear' and bottom == 0
    percent_per_px = (top - bottom) / (y1 - y0)
    for series in ('hard', 'dsl', 'gt'):
        colour = np.array(plot['colours'][series], dtype=np.uint8)
        for c, fraction in enumerate(report['fractions'][series]):
            column = x0 + (c + plot['offsets'][series] - left) / (right - left) * (x1 - x0)
            height = (png[y0:y1, int(column)] == colour).all(axis=-1).sum()
            assert height * percent_per_px == pytest.approx(100 * fraction, abs=3 * percent_per_px), (series, c)


# ------------------------------------------------------------------------------------------------ Fig. 6
@pytest.mark.slow
def test_tsne_two_checkpoints_panels_points_and_fallback(demo, tmp_path):
    out = str(tmp_path / 'tsne.png')
    report = tool('tsne').main([
        '--configs', ESL_CONFIG, K0_CONFIG, '--checkpoints', demo['checkpoint'], demo['k0_checkpoint'],
        '--labels', 'ESL', 'w/o contrast', '--num-images', '3', '--max-points', '60', '--perplexity', '5',
        '--save-features', '--out', out, *demo['options']])
    png = read_png(out)
    assert png.shape[:2] == (report['png']['height'], report['png']['width'])
    esl, k0 = report['checkpoints']
    assert (esl['label'], k0['label']) == ('ESL', 'w/o contrast')
    assert esl['feature_source'].startswith('teacher projector z') and esl['has_parts']
    assert 'decoder features' in k0['feature_source'] and 'no projector' in k0['class_panel']['title']
    assert not k0['has_parts'] and k0['part_panel']['title'] == 'w/o contrast: by part'
    assert esl['part_panel']['title'] == 'ESL: by part (Eq. 7, K = 5)'
    npz = np.load(out[:-4] + '.npz')
    class_colours = np.array(report['class_colours'], dtype=np.uint8)
    part_colours = np.array(report['part_colours'], dtype=np.uint8)
    boxes = []
    for m, entry in enumerate((esl, k0)):
        assert entry['num_points'] == 60 == sum(entry['points_per_class'].values())
        assert len(npz[f'embedding_{m}']) == len(npz[f'classes_{m}']) == 60
        for panel in ('class_panel', 'part_panel'):
            x0, y0, x1, y1 = entry[panel]['box']
            assert 0 <= x0 < x1 <= png.shape[1] and 0 <= y0 < y1 <= png.shape[0]
            boxes.append((x0, y0, x1, y1))
        # Each point is drawn at its embedding, in its class colour (and, with prototypes, its part colour).
        panels = [('class_panel', class_colours[npz[f'classes_{m}']])]
        if entry['has_parts']:
            panels.append(('part_panel', part_colours[npz[f'classes_{m}'], npz[f'parts_{m}']]))
        for panel, expected in panels:
            x0, y0, x1, y1 = entry[panel]['box']
            (left, right), (bottom, top) = entry[panel]['xlim'], entry[panel]['ylim']
            emb = npz[f'embedding_{m}']
            px = (x0 + (emb[:, 0] - left) / (right - left) * (x1 - x0)).astype(int)
            py = (y1 - (emb[:, 1] - bottom) / (top - bottom) * (y1 - y0)).astype(int)
            hits = (png[py, px] == expected).all(axis=-1).mean()
            assert hits >= 0.7, f'{panel} of checkpoint {m}: only {hits:.0%} of the points show their colour'
    assert len(set(boxes)) == 4  # two panels per checkpoint, all distinct
    # The stored features are the teacher projector's z at the recorded pixels.
    model = load_model(ESL_CONFIG, demo['checkpoint'])
    tap = DecodeFeatureTap(model.teacher.decode_head)
    pixels, features = npz['pixels_0'], npz['features_0']
    for image_index in np.unique(pixels[:, 0])[:2]:
        inputs, _ = preprocess(model, image_path(demo, demo['unlabeled'][image_index]))
        with torch.no_grad():
            model.teacher.decode_head.forward(model.teacher.extract_feat(inputs))
            z = model.teacher.projector(tap.pop())[0]
        rows = pixels[:, 0] == image_index
        np.testing.assert_allclose(features[rows], z[:, pixels[rows, 1], pixels[rows, 2]].t().numpy(), rtol=1e-4,
                                   atol=1e-5)
        # Classes are the labels nearest-downsampled to the feature map.
        gt = torch.from_numpy(label(demo, demo['unlabeled'][image_index]))[None, None].float()
        small = F.interpolate(gt, size=z.shape[1:], mode='nearest')[0, 0].long().numpy()
        np.testing.assert_array_equal(npz['classes_0'][rows], small[pixels[rows, 1], pixels[rows, 2]])
    tap.remove()
