"""Helpers of the config tests: tiny datasets in the layouts the paper configs read, and the whitelist of overrides.

The paper configs are tested as they stand, with only these keys changed (:func:`whitelist_overrides`):

* input size: ``crop_size`` of ``RandomCrop`` / ``PadCenterCrop`` / a ``slide`` ``test_cfg`` (and its
  ``stride``), ``scale`` of ``RandomResize``, ``size`` of the ``SegDataPreProcessor``;
* data: every ``data_root`` (the tiny data holds a split file at each ``split_file`` path the config names);
* weights: ``pretrained`` and ``init_cfg`` of type ``Pretrained`` become None (no download);
* iteration count: ``train_cfg.max_iters`` and ``val_interval``; the checkpoint interval (and, for the in-process
  sweep, ``save_last=False``: no 800 MB checkpoint per config); ``EMATeacherHook``'s ``sup_only_iters`` and
  ``copy_iters`` become 0, so that the few iterations run the semi-supervised loss (the supervised-only phase has
  its own tests);
* norm: SyncBN -> BN (:func:`mmseg_esl.utils.convert_sync_bn_cfg`, as ``tools/train.py`` does without CUDA).

Runs inside the pytest process also load data without worker processes (:func:`in_process_overrides`): shutting
down the persistent workers of every config would cost ~25 s each; it changes how samples are loaded, not which.
"""
from __future__ import annotations

import gc
import hashlib
import itertools
import os
import os.path as osp
import shutil
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from mmseg_esl.testing import make_tiny_voc

#: Side of the square inputs the tests train on.
TINY_SIZE = 64
_RUN_IDS = itertools.count()


def make_tiny_voc_root(root: str) -> str:
    """A tiny Pascal VOC layout: 2 labeled + 4 unlabeled train images, 1 validation image, both label folders."""
    make_tiny_voc(root, num_train=6, num_val=1, num_labeled=2, seed=0)
    shutil.copytree(osp.join(root, 'SegmentationClass'), osp.join(root, 'SegmentationClassAug'))
    return root


def make_tiny_cityscapes_root(root: str) -> str:
    """The tiny images of :func:`make_tiny_voc_root` in the Cityscapes layout (labelTrainIds PNGs)."""
    voc = make_tiny_voc_root(osp.join(root, '_voc'))
    for subset, list_name in (('train', 'train'), ('val', 'val')):
        with open(osp.join(voc, 'ImageSets', 'Segmentation', f'{list_name}.txt')) as f:
            ids = [line.strip() for line in f if line.strip()]
        for i, sample_id in enumerate(ids):
            name = f'tiny_{i:06d}_000019'
            img_dir = osp.join(root, 'leftImg8bit', subset, 'tiny')
            ann_dir = osp.join(root, 'gtFine', subset, 'tiny')
            os.makedirs(img_dir, exist_ok=True)
            os.makedirs(ann_dir, exist_ok=True)
            Image.open(osp.join(voc, 'JPEGImages', f'{sample_id}.jpg')).save(
                osp.join(img_dir, f'{name}_leftImg8bit.png'))
            label = np.array(Image.open(osp.join(voc, 'SegmentationClass', f'{sample_id}.png')))
            Image.fromarray(label.astype(np.uint8), mode='L').save(
                osp.join(ann_dir, f'{name}_gtFine_labelTrainIds.png'))
    shutil.rmtree(voc)
    return root


def tiny_split_ids(data_root: str) -> Tuple[List[str], List[str]]:
    """``(labeled, unlabeled)`` canonical ids of a tiny root made by the functions above."""
    city = osp.join(data_root, 'leftImg8bit', 'train', 'tiny')
    if osp.isdir(city):
        ids = sorted(f'tiny/{name[:-len("_leftImg8bit.png")]}' for name in os.listdir(city))
        return ids[:2], ids[2:]
    split_dir = osp.join(data_root, 'ImageSets', 'Segmentation')
    read = [[line.strip() for line in open(osp.join(split_dir, f'{n}.txt')) if line.strip()]
            for n in ('labeled', 'unlabeled')]
    return read[0], read[1]


def _walk(node: Any, path: str = '') -> Iterator[Tuple[str, Any]]:
    """Yields ``(dotted_path, dict)`` for every dict of a config tree (list items as indices)."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f'{path}.{key}' if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f'{path}.{i}' if path else str(i))


def write_tiny_splits(cfg: Any, data_root: str) -> List[str]:
    """Writes, under ``data_root``, a split file at every ``split_file`` the config's datasets name.

    ``with_labels=False`` datasets get the unlabeled ids, the others the labeled ids. Returns the written paths.
    """
    labeled, unlabeled = tiny_split_ids(data_root)
    written = []
    for _, node in _walk(cfg._cfg_dict if hasattr(cfg, '_cfg_dict') else cfg):
        split = node.get('split_file')
        if not isinstance(split, str):
            continue
        ids = unlabeled if node.get('with_labels', True) is False else labeled
        path = osp.join(data_root, split)
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(''.join(f'{i}\n' for i in ids))
        written.append(path)
    return written


def whitelist_overrides(cfg: Any, data_root: str, *, iters: int = 1, size: int = TINY_SIZE,
                        checkpoint: bool = True) -> Dict[str, Any]:
    """The ``--cfg-options`` (dotted key -> value) that shrink a paper config, and nothing else.

    See the module docstring for the whitelist. Values are plain Python objects; :func:`as_cli_options` turns
    them into command-line strings. ``checkpoint=False`` saves no checkpoint at all (an R101 ESL checkpoint is
    800 MB), else one at the last iteration.
    """
    options: Dict[str, Any] = {}
    square = (size, size)
    for path, node in _walk(cfg._cfg_dict if hasattr(cfg, '_cfg_dict') else cfg):
        prefix = f'{path}.' if path else ''
        kind = node.get('type')
        if 'data_root' in node:
            options[prefix + 'data_root'] = data_root
        if kind in ('RandomCrop', 'PadCenterCrop') and node.get('crop_size') is not None:
            options[prefix + 'crop_size'] = square
        if kind == 'RandomResize':
            options[prefix + 'scale'] = square
        if kind == 'SegDataPreProcessor' and node.get('size') is not None:
            options[prefix + 'size'] = square
        if node.get('mode') == 'slide' and 'crop_size' in node:
            options[prefix + 'crop_size'] = square
            options[prefix + 'stride'] = (size * 2 // 3, size * 2 // 3)
        if node.get('pretrained') is not None:
            options[prefix + 'pretrained'] = None
        init_cfg = node.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            options[prefix + 'init_cfg'] = None
        if kind == 'EMATeacherHook':
            for key in ('sup_only_iters', 'copy_iters'):
                if node.get(key):
                    options[prefix + key] = 0
    options['train_cfg.max_iters'] = iters
    options['train_cfg.val_interval'] = iters
    if checkpoint:
        options['default_hooks.checkpoint.interval'] = iters
    else:
        options['default_hooks.checkpoint.interval'] = iters + 1
        options['default_hooks.checkpoint.save_last'] = False
    return options


def in_process_overrides(cfg: Any) -> Dict[str, Any]:
    """Dataloaders without worker processes, for runs inside the pytest process (how data is loaded, not what)."""
    options: Dict[str, Any] = {}
    for path, node in _walk(cfg._cfg_dict if hasattr(cfg, '_cfg_dict') else cfg):
        if 'num_workers' in node:
            prefix = f'{path}.' if path else ''
            options[prefix + 'num_workers'] = 0
            options[prefix + 'persistent_workers'] = False
    return options


def as_cli_options(options: Dict[str, Any]) -> List[str]:
    """``key=value`` strings for ``--cfg-options`` (tuples as ``(a,b)``, None as ``None``)."""
    def text(value: Any) -> str:
        if isinstance(value, tuple):
            return '(' + ','.join(str(v) for v in value) + ')'
        return str(value)
    return [f'{key}={text(value)}' for key, value in options.items()]


def mmpretrain_missing_reason() -> Optional[str]:
    """Why configs with mmpretrain backbones cannot run here, or None."""
    try:
        import mmpretrain  # noqa: F401
    except Exception as e:  # ImportError, or torchvision failing to import with this torch
        return f'mmpretrain does not import here ({type(e).__name__}: {e}); it is an optional extra'
    return None


def needs_mmpretrain(cfg: Config) -> bool:
    """Whether the config names a registered type of mmpretrain ('mmpretrain.ConvNeXt', ...)."""
    return "'mmpretrain." in str(cfg._cfg_dict)


def data_root_for(cfg: Config, roots: dict) -> str:
    return roots['cityscapes'] if cfg.val_dataloader.dataset.type == 'CityscapesDataset' else roots['voc']


def tiny_config(path: str, roots: dict, work_dir: str, *, iters: int,
                options: Optional[Dict[str, Any]] = None) -> Config:
    """``path`` with the whitelist applied for the tiny data (and ``options`` after it), SyncBN -> BN, a split file
    at every path it names. Configs with an mmpretrain backbone are skipped (reason printed) where mmpretrain does
    not import."""
    import mmseg_esl  # noqa: F401
    from mmseg_esl.utils import convert_sync_bn_cfg
    cfg = Config.fromfile(path)
    if needs_mmpretrain(cfg):
        reason = mmpretrain_missing_reason()
        if reason:
            print(f'SKIPPED {osp.basename(path)}: {reason}')
            pytest.skip(reason)
    data_root = data_root_for(cfg, roots)
    cfg.merge_from_dict(whitelist_overrides(cfg, data_root, iters=iters, checkpoint=False))
    cfg.merge_from_dict(options or {})
    convert_sync_bn_cfg(cfg, warn=False)
    write_tiny_splits(cfg, data_root)
    cfg.work_dir = work_dir
    return cfg


def run_one_iteration(path: str, roots: dict, work_dir: str, *, iters: int = 1):
    """Loads ``path``, applies the whitelist, trains ``iters`` iterations in this process and validates once.

    Configs with an mmpretrain backbone are skipped (with the reason printed) where mmpretrain does not import.

    Args:
        path: The config file.
        roots: ``dict(voc=..., cityscapes=...)`` tiny data roots (:func:`make_tiny_voc_root` and
            :func:`make_tiny_cityscapes_root`); the one matching the config's validation dataset is used.
        work_dir: Work directory of the run (removed afterwards).
        iters: Training iterations.

    Returns:
        ``(cfg, scalars, metrics, last_iter)``: the config as run, the last logged training values by name
        (``'loss'``, ``'decode.loss_ce'``, ``'unsup.loss_dsl'``, ...), the validation metrics (``'val/mIoU'``, ...)
        and the runner's final iteration.
    """
    from mmengine.runner import Runner

    cfg = tiny_config(path, roots, work_dir, iters=iters)
    cfg.merge_from_dict(in_process_overrides(cfg))
    # mmseg's runtime names its visualizer 'visualizer', and mmengine returns an existing instance of that name, still
    # writing to the previous run's work dir: one name per run inside this process.
    cfg.visualizer.name = f'visualizer_{next(_RUN_IDS)}'
    runner = Runner.from_cfg(cfg)
    try:
        runner.train()
        scalars = {k[len('train/'):]: v.current() for k, v in runner.message_hub.log_scalars.items()
                   if k.startswith('train/')}
        metrics = {k: v.current() for k, v in runner.message_hub.log_scalars.items() if k.startswith('val/')}
        return cfg, scalars, metrics, runner.iter
    finally:
        del runner
        gc.collect()
        shutil.rmtree(work_dir, ignore_errors=True)


#: Keys whose string values name files or folders: they differ between variants, not the code a training runs.
_PATH_KEYS = frozenset({'data_root', 'split_file', 'ann_file', 'img_path', 'seg_map_path', 'pretrained', 'checkpoint',
                        'work_dir', 'load_from', 'img_dir', 'ann_dir', 'save_dir', 'out_dir'})


def config_fingerprint(cfg: Config) -> str:
    """What decides the code a training of ``cfg`` runs: its tree with numbers reduced to zero / non-zero and
    file paths dropped (types, switches, enums and the structure of lists and dicts stay).

    Two configs with one fingerprint differ only in paths or scalars (a split, η, K > 0, a channel count), so the
    sweep trains one of them and checks the others on the meta device.
    """
    def reduce(node: Any, key: str = '') -> Any:
        if isinstance(node, dict):
            return {k: reduce(v, k) for k, v in sorted(node.items()) if k not in ('work_dir', 'randomness')}
        if isinstance(node, (list, tuple)):
            return [reduce(v, key) for v in node]
        if node is None or isinstance(node, bool):
            return node
        if isinstance(node, (int, float)):
            return 'zero' if node == 0 else 'number'
        if isinstance(node, str) and (key in _PATH_KEYS or '/' in node or node.endswith(('.txt', '.pth'))):
            return 'path'
        return node if isinstance(node, str) else type(node).__name__
    return hashlib.sha1(repr(reduce(cfg.to_dict())).encode()).hexdigest()[:12]


def check_on_meta_device(path: str, roots: dict, work_dir: str, *, options: Optional[Dict[str, Any]] = None,
                         size: int = TINY_SIZE) -> Config:
    """Checks a config without training it: the pre-flight on its tiny data (model built on the meta device,
    datasets, consistency, batch layout) and a forward of the meta model whose shapes must fit.

    Shapes checked (on ``meta``, no memory or weights): the logits have ``num_classes`` channels; for
    ``ESLSegmentor`` with the contrastive term, ``E^t = teacher.extract_feat(x)[in_index]`` has ``feat_channels``
    channels and the projector accepts the decode head's classifier input and returns ``embed_channels``.

    Args:
        path: The config file.
        roots: ``dict(voc=..., cityscapes=...)`` tiny data roots.
        work_dir: Work directory (never written).
        options: Further ``--cfg-options`` applied after the whitelist.
        size: Side of the square meta input.

    Returns:
        The config as checked.
    """
    from mmengine.registry import DefaultScope

    from mmseg_esl.utils import check_training_inputs
    from mmseg_esl.utils.preflight import build_model_cheaply
    cfg = tiny_config(path, roots, work_dir, iters=1, options=options)
    check_training_inputs(cfg, scan='off')
    assert not osp.exists(work_dir)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmseg')), torch.no_grad():
        try:
            _check_forward_shapes(build_model_cheaply(cfg.model), 'meta', size, path)
        except RuntimeError as error:  # a model that makes CPU tensors in its forward (SegFormer's LayerNorm path)
            if 'device' not in str(error):
                raise
            from mmseg.registry import MODELS
            _check_forward_shapes(MODELS.build(cfg.model), 'cpu', size, path)
    return cfg


def _check_forward_shapes(model: torch.nn.Module, device: str, size: int, path: str) -> None:
    """The shape checks of :func:`check_on_meta_device` on one forward of ``model`` (on ``device``)."""
    from mmseg_esl.models.segmentors.esl_segmentor import ESLSegmentor
    model = model.eval()
    inputs = torch.zeros(2, 3, size, size, device=device)
    net = model.teacher if isinstance(model, ESLSegmentor) else model
    contrast = getattr(model, 'contrast_loss', None)
    taps = getattr(model, '_taps', {})
    for tap in taps.values():
        tap.enabled = True
    try:
        feats = net.extract_feat(inputs)
        logits = net.decode_head.forward(feats)
        assert logits.shape[1] == net.decode_head.num_classes, (logits.shape, net.decode_head.num_classes)
        if contrast is not None:
            enc = feats[contrast.in_index]
            assert enc.shape[1] == contrast.feat_channels, (
                f'{osp.basename(path)}: E^t = extract_feat(x)[{contrast.in_index}] has {enc.shape[1]} channels, '
                f'semi_train_cfg.loss_contrast.feat_channels={contrast.feat_channels}')
            z = net.projector(taps['teacher'].pop())
            assert z.shape[1] == contrast.embed_channels, (z.shape, contrast.embed_channels)
    finally:
        for tap in taps.values():
            tap.enabled = False
            tap.features = None
