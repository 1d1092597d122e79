"""PrototypeInitHook: K-means prototypes of the labeled set's E^t pixels (ESL §3.3), on a tiny model and dataset.

The model is a stand-in with the interface the hook reads (``teacher``, ``data_preprocessor``,
``contrast_loss``): the teacher is the tiny DeepLabv3+ of ``configs/_base_/models/deeplabv3plus_tiny-r18.py``
(E^t = its last ResNet stage, 64 channels at stride 8) and ``contrast_loss`` a stub with the loss's attributes;
one test uses the real ``PixelPartContrastLoss``. The runner is a namespace with ``model`` and ``iter``.
"""
import logging
import os.path as osp
import subprocess
import sys
import textwrap
from types import SimpleNamespace
from typing import List, Optional, Tuple

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, clean_env, free_port
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.runner.priority import get_priority
from mmseg.registry import HOOKS, MODELS
from sklearn.cluster import KMeans
from torch import Tensor, nn

import mmseg_esl  # noqa: F401  (registers the hooks into mmseg's HOOKS)
from mmseg_esl.engine.hooks import EMATeacherHook, PrototypeInitHook
from mmseg_esl.engine.hooks import prototype_init_hook as hook_module
from mmseg_esl.models.segmentors.esl_segmentor import ESLSegmentor
from mmseg_esl.testing.tiny_voc import TINY_VOC_CLASSES, TINY_VOC_PALETTE

TINY_MODEL = osp.join(REPO_ROOT, 'configs', '_base_', 'models', 'deeplabv3plus_tiny-r18.py')
FEAT_CHANNELS = 64  # the tiny ResNet-18's last stage: base_channels 8 x 8


def loader_cfg(root: str, split: str = 'labeled', batch_size: int = 2) -> dict:
    """A deterministic dataloader config over ``ImageSets/Segmentation/<split>.txt`` of the tiny dataset.

    ``BaseSegDataset`` as in ``configs/_base_/datasets/tiny_voc.py``: ``PascalVOCDataset`` would reject the tiny
    classes, which are not a subset of VOC's 21.
    """
    return dict(
        batch_size=batch_size,
        num_workers=0,
        persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            type='BaseSegDataset',
            data_root=root,
            metainfo=dict(classes=TINY_VOC_CLASSES, palette=TINY_VOC_PALETTE),
            data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
            ann_file=f'ImageSets/Segmentation/{split}.txt',
            img_suffix='.jpg',
            seg_map_suffix='.png',
            pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]))


class StubContrast(nn.Module):
    """The attributes of ``PixelPartContrastLoss`` that ``PrototypeInitHook`` reads."""

    def __init__(self, *, num_classes: int = 4, num_parts: int = 3, feat_channels: int = FEAT_CHANNELS,
                 in_index: int = -1, ignore_index: int = 255) -> None:
        super().__init__()
        self.num_classes, self.num_parts, self.feat_channels = num_classes, num_parts, feat_channels
        self.in_index, self.ignore_index = in_index, ignore_index
        self.register_buffer('prototypes', torch.zeros(num_classes, num_parts, feat_channels))
        self.register_buffer('prototypes_ready', torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def set_prototypes_(self, prototypes: Tensor) -> None:
        self.prototypes.copy_(prototypes.to(self.prototypes))
        self.prototypes_ready.fill_(True)


class FakeESL(nn.Module):
    """``teacher``, ``data_preprocessor``, ``contrast_loss`` and ``teacher_encoder_features``, like ``ESLSegmentor``."""

    teacher_encoder_features = ESLSegmentor.teacher_encoder_features

    def __init__(self, teacher: nn.Module, contrast_loss: Optional[nn.Module]) -> None:
        super().__init__()
        self.teacher = teacher
        self.data_preprocessor = teacher.data_preprocessor
        self.contrast_loss = contrast_loss


def build_teacher(state_dict: Optional[dict] = None) -> nn.Module:
    init_default_scope('mmseg')
    cfg = Config.fromfile(TINY_MODEL).model
    cfg.pop('pretrained', None)
    torch.manual_seed(0)
    teacher = MODELS.build(cfg)
    if state_dict is not None:
        teacher.load_state_dict(state_dict)
    return teacher.eval()


@pytest.fixture(scope='module')
def teacher() -> nn.Module:
    return build_teacher()


def make_runner(teacher: nn.Module, contrast: Optional[nn.Module], iteration: int = 0) -> SimpleNamespace:
    init_default_scope('mmseg')
    return SimpleNamespace(model=FakeESL(teacher, contrast), iter=iteration)


@pytest.fixture
def logs(monkeypatch) -> List[Tuple[int, str]]:
    """``(level, message)`` of every ``print_log`` of the hook module."""
    records: List[Tuple[int, str]] = []

    def record(msg, logger=None, level=logging.INFO):
        records.append((level, msg))

    monkeypatch.setattr(hook_module, 'print_log', record)
    return records


def reference_pixels(teacher: nn.Module, root: str, split: str) -> Tuple[List[Tensor], List[Tensor]]:
    """E^t pixels and their labels, image by image, by plain code: per class c, ``(feats[c], ...)``.

    Returns:
        ``(pixels, counts)``: ``pixels[c]`` (n_c, L') float32 features of all pixels of class c, and the class
        pixel counts (C,).
    """
    loader = Runner.build_dataloader(loader_cfg(root, split, batch_size=1))
    feats_all, labels_all = [], []
    with torch.no_grad():
        for batch in loader:
            data = teacher.data_preprocessor(batch, True)
            feats = teacher.extract_feat(data['inputs'])[-1]  # (1, L', h, w)
            gt = data['data_samples'][0].gt_sem_seg.data[None].float()  # (1, 1, H, W)
            labels = F.interpolate(gt, size=feats.shape[-2:], mode='nearest').long().flatten()
            feats_all.append(feats[0].flatten(1).T)
            labels_all.append(labels)
    feats, labels = torch.cat(feats_all), torch.cat(labels_all)
    pixels = [feats[labels == c] for c in range(len(TINY_VOC_CLASSES))]
    return pixels, torch.bincount(labels[labels != 255], minlength=len(TINY_VOC_CLASSES))


def expected_prototypes(sample: Tensor, k: int, seed: int, n_init: int) -> Tensor:
    x = F.normalize(sample.float(), dim=1).numpy()
    kmeans = KMeans(n_clusters=k, random_state=seed, n_init=n_init).fit(x)
    return F.normalize(torch.from_numpy(kmeans.cluster_centers_).float(), dim=1)


def assert_same_rows(a: Tensor, b: Tensor, atol: float = 1e-4) -> None:
    """``a`` and ``b`` hold the same rows up to order (each row of one is within ``atol`` of a row of the other)."""
    assert a.shape == b.shape
    if a.shape[0]:
        dist = torch.cdist(a.double(), b.double())
        assert dist.amin(dim=1).max() < atol and dist.amin(dim=0).max() < atol


# --------------------------------------------------------------------------------------------------------------
# Construction
# --------------------------------------------------------------------------------------------------------------
def test_missing_dataloader_names_the_config_key():
    with pytest.raises(ValueError, match=r"custom_hooks\[\.\.\.\]\.dataloader .*DefaultSampler"):
        PrototypeInitHook()
    with pytest.raises(ValueError, match='must be a dataloader config dict'):
        PrototypeInitHook(dataloader='labeled.txt')
    with pytest.raises(ValueError, match='has no `dataset`'):
        PrototypeInitHook(dataloader=dict(batch_size=2))


def test_constructor_checks_and_sampler_defaults(tiny_voc):
    cfg = loader_cfg(tiny_voc)
    with pytest.raises(ValueError, match='never ends'):
        PrototypeInitHook(dataloader=dict(cfg, sampler=dict(type='InfiniteSampler', shuffle=False)))
    with pytest.raises(ValueError, match="storage_dtype must be one of .*storage_dtype='int8'"):
        PrototypeInitHook(dataloader=cfg, storage_dtype='int8')
    with pytest.raises(ValueError, match='max_pixels_per_class must be a positive int'):
        PrototypeInitHook(dataloader=cfg, max_pixels_per_class=0)
    with pytest.raises(TypeError):
        PrototypeInitHook(cfg)  # keyword-only
    hook = PrototypeInitHook(dataloader=cfg)
    assert hook.dataloader['sampler'] == dict(type='DefaultSampler', shuffle=False, round_up=False)
    assert cfg['sampler'] == dict(type='DefaultSampler', shuffle=False)  # the config is not modified
    assert PrototypeInitHook(dataloader=dict(cfg, sampler=dict(type='DefaultSampler', round_up=True))
                             ).dataloader['sampler']['round_up'] is True
    built = HOOKS.build(dict(type='PrototypeInitHook', dataloader=cfg, max_pixels_per_class=7))
    assert isinstance(built, PrototypeInitHook) and built.max_pixels_per_class == 7


def test_runs_after_the_ema_teacher_hook():
    # before_train hooks run in priority order (a larger value runs later): the teacher must be set first.
    assert get_priority(PrototypeInitHook.priority) > get_priority(EMATeacherHook.priority)


# --------------------------------------------------------------------------------------------------------------
# before_train
# --------------------------------------------------------------------------------------------------------------
def test_prototypes_equal_sklearn_kmeans_on_the_sampled_normalised_pixels(teacher, tiny_voc, logs):
    contrast = StubContrast(num_parts=3)
    runner = make_runner(teacher, contrast)
    hook = PrototypeInitHook(dataloader=loader_cfg(tiny_voc, 'train'), max_pixels_per_class=40,
                             storage_dtype='float32', seed=3, n_init=2)
    hook.before_train(runner)
    assert bool(contrast.prototypes_ready)
    prototypes = contrast.prototypes.clone()

    # The same extraction with the same seed gives the same sample (the hook's reservoir is not kept).
    reservoir, num_images = hook.collect_pixels(runner)
    assert num_images == 8
    pixels, counts = reference_pixels(teacher, tiny_voc, 'train')
    assert torch.equal(reservoir.counts(), counts)  # every labeled pixel of E^t's grid was offered
    assert (counts > 40).all()
    for c in range(4):
        sample = reservoir.samples(c)
        assert sample.shape == (40, FEAT_CHANNELS)
        # Each sampled row is a pixel of class c, computed here image by image (nearest-downsampled labels).
        assert torch.cdist(sample.double(), pixels[c].double()).amin(dim=1).max() < 1e-4
        torch.testing.assert_close(prototypes[c], expected_prototypes(sample, 3, seed=3, n_init=2),
                                   atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prototypes.norm(dim=-1), torch.ones(4, 3))
    assert hook.report['absent'] == [] and hook.report['fewer_than_k'] == []
    assert [entry['seen'] for entry in hook.report['per_class']] == counts.tolist()
    info = '\n'.join(msg for level, msg in logs if level == logging.INFO)
    assert 'from 8 labeled images in' in info and ' s. Pixels per class' in info
    assert f'class 0: {int(counts[0])} / 40 (ok)' in info
    assert not [msg for level, msg in logs if level >= logging.WARNING]


def test_small_and_absent_classes_are_reported_not_fatal(teacher, tiny_voc, logs):
    # 5 classes, the dataset has 4 (all present in train.txt): class 4 is absent. At most 3 pixels per class
    # are kept, K = 4.
    contrast = StubContrast(num_classes=5, num_parts=4)
    runner = make_runner(teacher, contrast)
    hook = PrototypeInitHook(dataloader=loader_cfg(tiny_voc, 'train'), max_pixels_per_class=3, n_init=1)
    hook.before_train(runner)
    report = hook.report
    assert report['absent'] == [4] and report['fewer_than_k'] == [0, 1, 2, 3]
    assert [entry['status'] for entry in report['per_class']] == ['fewer_than_k'] * 4 + ['absent']
    assert [entry['sampled'] for entry in report['per_class']] == [3, 3, 3, 3, 0]
    assert bool(contrast.prototypes_ready) and torch.isfinite(contrast.prototypes).all()
    assert torch.equal(contrast.prototypes[4], torch.zeros(4, FEAT_CHANNELS))
    torch.testing.assert_close(contrast.prototypes[0, 3], contrast.prototypes[0, 0])  # pixels repeated to K rows
    warnings = [msg for level, msg in logs if level == logging.WARNING]
    assert any('classes [4] have no labeled pixel' in msg for msg in warnings)
    assert any('classes [0, 1, 2, 3] have fewer than K=4' in msg for msg in warnings)


def test_real_pixel_part_contrast_loss(teacher, tiny_voc):
    loss_module = pytest.importorskip('mmseg_esl.models.losses.pixel_part_contrast_loss')
    contrast = loss_module.PixelPartContrastLoss(num_classes=4, feat_channels=FEAT_CHANNELS, num_parts=2,
                                                 embed_channels=8, queue_size=4)
    hook = PrototypeInitHook(dataloader=loader_cfg(tiny_voc), max_pixels_per_class=50, n_init=1)
    hook.before_train(make_runner(teacher, contrast))
    assert bool(contrast.prototypes_ready) and contrast.prototypes.shape == (4, 2, FEAT_CHANNELS)
    # Unit prototypes, but zeros for a class absent from the 2 labeled images (the disc).
    present = torch.tensor([entry['status'] != 'absent' for entry in hook.report['per_class']])
    assert hook.report['absent'] == [2]
    torch.testing.assert_close(contrast.prototypes.norm(dim=-1), present.float()[:, None].expand(4, 2))


def missing_data_cfg(tmp_path) -> dict:
    return loader_cfg(str(tmp_path / 'no_such_dataset'))  # fails if the hook ever builds it


def test_resumed_run_keeps_the_checkpoint_prototypes(teacher, tmp_path, logs):
    contrast = StubContrast()
    contrast.set_prototypes_(torch.full((4, 3, FEAT_CHANNELS), 0.5))
    hook = PrototypeInitHook(dataloader=missing_data_cfg(tmp_path))
    hook.before_train(make_runner(teacher, contrast, iteration=10))
    assert torch.equal(contrast.prototypes, torch.full((4, 3, FEAT_CHANNELS), 0.5))
    assert hook.report is None
    assert any('resumed at iter 10; prototypes come from the checkpoint' in msg for _, msg in logs)


def test_resumed_run_without_prototypes_initialises_them_with_a_warning(teacher, tiny_voc, logs):
    contrast = StubContrast()
    hook = PrototypeInitHook(dataloader=loader_cfg(tiny_voc), max_pixels_per_class=20, n_init=1)
    hook.before_train(make_runner(teacher, contrast, iteration=10))
    assert bool(contrast.prototypes_ready) and contrast.prototypes.abs().sum() > 0
    assert any(level == logging.WARNING and 'prototypes_ready is False' in msg for level, msg in logs)


def test_disabled_contrast_does_nothing(teacher, tmp_path, logs):
    hook = PrototypeInitHook(dataloader=missing_data_cfg(tmp_path))
    hook.before_train(make_runner(teacher, None))
    assert hook.report is None
    assert any('contrastive loss disabled' in msg for _, msg in logs)


def test_model_without_contrast_loss_attribute_is_an_error(tmp_path):
    hook = PrototypeInitHook(dataloader=missing_data_cfg(tmp_path))
    with pytest.raises(TypeError, match='needs a model with a `contrast_loss` attribute'):
        hook.before_train(SimpleNamespace(model=nn.Linear(1, 1), iter=0))


def test_wrong_feat_channels_or_in_index_name_the_config_keys(teacher, tiny_voc):
    hook = PrototypeInitHook(dataloader=loader_cfg(tiny_voc), max_pixels_per_class=10)
    with pytest.raises(ValueError, match=r'semi_train_cfg\.loss_contrast\.feat_channels=32.*in_index'):
        hook.before_train(make_runner(teacher, StubContrast(feat_channels=32)))
    with pytest.raises(ValueError, match=r'semi_train_cfg\.loss_contrast\.in_index=7'):
        hook.before_train(make_runner(teacher, StubContrast(in_index=7)))
    # Another stage of the backbone works when feat_channels matches it: stage 2 has 32 channels.
    contrast = StubContrast(feat_channels=32, in_index=2, num_parts=2)
    PrototypeInitHook(dataloader=loader_cfg(tiny_voc), max_pixels_per_class=10, n_init=1).before_train(
        make_runner(teacher, contrast))
    assert bool(contrast.prototypes_ready)


# --------------------------------------------------------------------------------------------------------------
# init_at='semi': at the first semi-supervised iteration
# --------------------------------------------------------------------------------------------------------------
def test_init_at_is_checked(tiny_voc):
    with pytest.raises(ValueError, match=r"init_at must be one of \('train', 'semi'\), got init_at='later'"):
        PrototypeInitHook(dataloader=loader_cfg(tiny_voc), init_at='later')


def test_init_at_semi_waits_for_the_semi_supervised_phase_and_clusters_the_teacher_then(tiny_voc, logs):
    """Nothing in before_train or while ``model.semi_supervised`` is False; at the first semi-supervised iteration
    the prototypes are those ``init_at='train'`` gives for the teacher of that moment; afterwards nothing again."""
    trained = build_teacher()
    with torch.no_grad():  # the teacher has moved during the supervised-only phase
        for param in trained.parameters():
            param.add_(0.05 * torch.randn_like(param))
    contrast = StubContrast(num_parts=2)
    runner = make_runner(trained, contrast)
    runner.model.semi_supervised = False
    hook = PrototypeInitHook(dataloader=loader_cfg(tiny_voc), max_pixels_per_class=30, n_init=1, init_at='semi')
    hook.before_train(runner)
    for iteration in range(3):
        runner.iter = iteration
        hook.before_train_iter(runner, iteration)
    assert not bool(contrast.prototypes_ready) and hook.report is None
    runner.iter, runner.model.semi_supervised = 3, True
    hook.before_train_iter(runner, 3)
    assert bool(contrast.prototypes_ready)
    assert any("init_at='semi', iter 3" in msg for _, msg in logs)

    reference = StubContrast(num_parts=2)
    PrototypeInitHook(dataloader=loader_cfg(tiny_voc), max_pixels_per_class=30, n_init=1).before_train(
        make_runner(trained, reference))
    torch.testing.assert_close(contrast.prototypes, reference.prototypes)

    contrast.prototypes.fill_(0.25)  # Eq. 12 moves them; the hook must not initialise again
    runner.iter = 4
    hook.before_train_iter(runner, 4)
    assert torch.equal(contrast.prototypes, torch.full_like(contrast.prototypes, 0.25))


def test_init_at_semi_keeps_resumed_prototypes_and_ignores_disabled_contrast(teacher, tmp_path):
    contrast = StubContrast()
    contrast.set_prototypes_(torch.full((4, 3, FEAT_CHANNELS), 0.5))
    hook = PrototypeInitHook(dataloader=missing_data_cfg(tmp_path), init_at='semi')
    runner = make_runner(teacher, contrast, iteration=10)
    hook.before_train(runner)
    hook.before_train_iter(runner, 10)
    assert torch.equal(contrast.prototypes, torch.full((4, 3, FEAT_CHANNELS), 0.5)) and hook.report is None
    runner = make_runner(teacher, None)
    hook.before_train(runner)
    hook.before_train_iter(runner, 0)
    assert hook.report is None


# --------------------------------------------------------------------------------------------------------------
# DDP: two gloo ranks, each with its DefaultSampler shard
# --------------------------------------------------------------------------------------------------------------
WORKER = textwrap.dedent('''
    import sys

    rank, world_size, port, out, root, weights, test_dir, tests_dir = sys.argv[1:9]
    sys.path[:0] = [test_dir, tests_dir]

    import torch
    import torch.distributed as dist

    import test_prototype_init_hook as t
    from mmseg_esl.engine.hooks import PrototypeInitHook

    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=int(rank),
                            world_size=int(world_size))
    contrast = t.StubContrast(num_parts=3)
    runner = t.make_runner(t.build_teacher(torch.load(weights)), contrast)
    hook = PrototypeInitHook(dataloader=t.loader_cfg(root, 'train'), max_pixels_per_class=5000,
                             storage_dtype='float32', seed=0, n_init=2)
    hook.before_train(runner)
    reservoir, num_images = hook.collect_pixels(runner)
    torch.save({'prototypes': contrast.prototypes, 'report': hook.report, 'num_images': num_images,
                'counts': reservoir.counts(), 'samples': [reservoir.samples(c) for c in range(4)]}, out)
    dist.destroy_process_group()
''')


@pytest.mark.slow
def test_ddp_ranks_get_identical_prototypes_of_the_whole_labeled_set(teacher, tiny_voc, tmp_path):
    """Two ranks, 4 of the 8 images each; M exceeds every class's pixel count, so nothing is sampled away.

    What must hold: both ranks hold the same prototypes (broadcast from rank 0), computed from the merged
    sample, which is the set of all pixels of all 8 images, the same set one process collects. The assertion is
    on the set (rows matched up to order, within float tolerance: a conv on a batch of other images may round
    differently) and on K-means run here on the merged sample in its order. Prototypes are not compared with a
    single process's: K-means++ on the same points in another order may pick other seeds and converge to
    another local optimum.
    """
    weights, script = tmp_path / 'teacher.pth', tmp_path / 'worker.py'
    torch.save(teacher.state_dict(), weights)
    script.write_text(WORKER)
    port, world_size = str(free_port()), 2
    env = clean_env({'OMP_NUM_THREADS': '1'})
    outs = [tmp_path / f'rank{rank}.pth' for rank in range(world_size)]
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), str(world_size), port, str(out), tiny_voc,
                               str(weights), osp.dirname(__file__), osp.join(REPO_ROOT, 'tests')],
                              cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank, out in enumerate(outs)]
    try:
        logs = [proc.communicate(timeout=180)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f'rank {rank} exited with {proc.returncode}:\n{logs[rank][-4000:]}'
    results = [torch.load(out, weights_only=False) for out in outs]

    assert torch.equal(results[0]['prototypes'], results[1]['prototypes'])
    assert results[0]['report'] == results[1]['report']
    assert results[0]['num_images'] == results[1]['num_images'] == 8

    runner = make_runner(teacher, StubContrast(num_parts=3))
    single, num_images = PrototypeInitHook(dataloader=loader_cfg(tiny_voc, 'train'), max_pixels_per_class=5000,
                                           storage_dtype='float32').collect_pixels(runner)
    assert num_images == 8 and (single.counts() < 5000).all()
    for result in results:
        assert torch.equal(result['counts'], single.counts())
    for c in range(4):
        merged = results[0]['samples'][c]
        assert torch.equal(merged, results[1]['samples'][c])
        assert_same_rows(merged, single.samples(c))  # all pixels of the 8 images, as one process has them
        torch.testing.assert_close(results[0]['prototypes'][c], expected_prototypes(merged, 3, seed=0, n_init=2),
                                   atol=1e-5, rtol=1e-5)
