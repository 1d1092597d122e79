"""What the analysis tools (``tools/analysis/*.py``) read: an ESL model from a config and checkpoint, and images.

Model: the config is read like mmseg's tools read it (``Config.fromfile`` + ``--cfg-options``; default scope
``mmseg``; ``custom_imports`` imported; SyncBN turned into BN without CUDA), the model built with mmseg's
``MODELS`` and the checkpoint loaded with ``mmengine.runner.load_checkpoint(..., strict=True)``: a checkpoint
that does not fit the config is an error, never a silently half-loaded model.

Images (:class:`ImageSource`), deterministic and whole, through the config's *test* pipeline (with
``LoadAnnotations`` replaced by ``LoadOptionalAnnotations``, so images without a label file pass):

* ``--split unlabeled`` (default) / ``labeled``: the members of the config's semi-supervised training set
  (``train_dataloader.dataset``, a ``ConcatDataset`` of ``SplitSegDataset`` s; the unlabeled one has
  ``with_labels=False``), e.g. ``data/esl_demo/ImageSets/Segmentation/unlabeled.txt`` for the demo configs;
* ``--split val`` / ``test``: the config's validation / test set;
* ``--img-dir DIR``: every ``.jpg`` / ``.jpeg`` / ``.png`` / ``.bmp`` in a folder (no labels).

Ground truth travels with an image when its label file exists (the demo and VOC ``train_aug`` have labels for
the unlabeled images); the tools use it where the paper does (classes of labeled images in Eq. 7) and to
report, never to compute pseudo labels.
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import os.path as osp
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.utils import import_modules_from_strings
from torch import Tensor, nn

__all__ = [
    'AnalysisError', 'AnalysisSample', 'ImageSource', 'SPLITS', 'add_common_arguments', 'add_overlay_arguments',
    'check_overlay_arguments', 'class_names',
    'load_config', 'load_model', 'require_esl', 'run_tool', 'select_classes', 'set_data_roots', 'write_json'
]

SPLITS: Tuple[str, ...] = ('unlabeled', 'labeled', 'val', 'test')
IMAGE_SUFFIXES: Tuple[str, ...] = ('.jpg', '.jpeg', '.png', '.bmp')


class AnalysisError(ValueError):
    """A user error of an analysis tool; its message says what is wrong and how to fix it (no traceback)."""


@dataclass
class AnalysisSample:
    """One image as the tools use it.

    Attributes:
        id: File name without extension.
        image: (H, W, 3) uint8 RGB image after the test pipeline (what the model sees, before normalisation).
        inputs: (1, 3, H, W) float tensor after the model's data preprocessor, on the model's device.
        gt: (H, W) int64 ground truth (255 = ignore) when a label file exists, else None.
    """

    id: str
    image: np.ndarray
    inputs: Tensor
    gt: Optional[np.ndarray]


def add_common_arguments(parser: argparse.ArgumentParser, *, num_images: Optional[int], out: str,
                         single_model: bool = True) -> None:
    """Adds the arguments every analysis tool shares (config, checkpoint, images, device, output, options).

    Args:
        parser: The tool's parser.
        num_images: Default of ``--num-images`` (None: all images of the split).
        out: Default of ``--out``.
        single_model: Add the positional ``config`` and ``checkpoint`` (tsne.py takes lists instead).
    """
    if single_model:
        parser.add_argument('config', help='config the checkpoint was trained with (an ESLSegmentor config)')
        parser.add_argument('checkpoint', help='checkpoint written by tools/train.py')
    images = parser.add_mutually_exclusive_group()
    images.add_argument('--split', choices=SPLITS, default='unlabeled',
                        help='images of the config: the unlabeled / labeled training split (members of '
                        'train_dataloader.dataset) or the val / test set (default: unlabeled)')
    images.add_argument('--img-dir', help='use every image of this folder instead of a split of the config')
    parser.add_argument('--num-images', type=int, default=num_images,
                        help='use the first N images (default: ' + ('all' if num_images is None else str(num_images))
                        + ')')
    parser.add_argument('--ids', nargs='+', help='use these image ids (file names without extension) instead')
    parser.add_argument('--out', default=out, help=f'output PNG; JSON and NPZ files are written next to it '
                        f'(default: {out})')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='torch device (default: cuda if available, else cpu)')
    parser.add_argument('--data-root', help='set every data_root of the config(s) (datasets, ConcatDataset members, '
                        'hook dataloaders) to this folder')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='override settings of the config(s) as in mmseg\'s tools, e.g. '
                        'test_dataloader.dataset.pipeline.1.type=LoadAnnotations')


def add_overlay_arguments(parser: argparse.ArgumentParser, *, alpha: float, what: str) -> None:
    """Adds ``--alpha`` (opacity of the overlay, default ``alpha``) and ``--scale`` (panel enlargement)."""
    parser.add_argument('--alpha', type=float, default=alpha, help=f'opacity of the {what} (default: {alpha})')
    parser.add_argument('--scale', type=int, default=None,
                        help='integer enlargement of the panels (default: about 256 px per panel)')


def check_overlay_arguments(args: argparse.Namespace) -> None:
    """Refuses an ``--alpha`` outside [0, 1] or a ``--scale`` below 1 (see :func:`add_overlay_arguments`)."""
    if not 0.0 <= args.alpha <= 1.0:
        raise AnalysisError(f'--alpha must be in [0, 1], got {args.alpha}')
    if args.scale is not None and args.scale < 1:
        raise AnalysisError(f'--scale must be an integer >= 1, got {args.scale}')


def run_tool(main, argv: Optional[Sequence[str]], prog: str) -> int:
    """Runs ``main(argv)``; an :class:`AnalysisError` becomes ``<prog>: error: <message>`` and exit status 1."""
    try:
        main(argv)
    except AnalysisError as error:
        print(f'{prog}: error: {error}', file=sys.stderr)
        return 1
    return 0


def write_json(path: str, data: dict) -> None:
    """Writes ``data`` as indented JSON (directories created)."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(data, f, indent=1)
        f.write('\n')


def set_data_roots(node, data_root: str) -> int:
    """Sets every ``data_root`` key in a (nested) config to ``data_root``, in place; returns how many."""
    changed = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'data_root' and isinstance(value, str):
                node[key] = data_root
                changed += 1
            else:
                changed += set_data_roots(value, data_root)
    elif isinstance(node, (list, tuple)):
        changed += sum(set_data_roots(value, data_root) for value in node)
    return changed


def load_config(config: str, cfg_options: Optional[dict] = None, *, data_root: Optional[str] = None) -> Config:
    """Reads a config as mmseg's tools do, imports its ``custom_imports`` and sets the default scope.

    Args:
        config: Config file.
        cfg_options: ``--cfg-options`` merged into it.
        data_root: ``--data-root``: every ``data_root`` of the config becomes this folder (after the options).

    Returns:
        The config (SyncBN norms converted to BN when CUDA is unavailable).

    Raises:
        AnalysisError: If the file does not exist.
    """
    if not osp.isfile(config):
        raise AnalysisError(f'config file {config!r} does not exist; give the config the checkpoint was trained '
                            'with (tools/train.py copies it into the work dir, e.g. work_dirs/<name>/<name>.py)')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if data_root is not None:
        set_data_roots(cfg._cfg_dict, data_root)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    import mmseg_esl  # noqa: F401  (registers ESL's components even if the config forgets custom_imports)
    if not torch.cuda.is_available():
        from mmseg_esl.utils import convert_sync_bn_cfg
        convert_sync_bn_cfg(cfg, warn=False)
    return cfg


def require_esl(cfg: Config, config: str, tool: str) -> None:
    """Raises a clear :class:`AnalysisError` unless the config builds an ``ESLSegmentor``."""
    model_type = cfg.model.get('type')
    if model_type != 'ESLSegmentor':
        raise AnalysisError(
            f'{tool} needs an ESL model (a teacher and, for parts, prototypes), but {config} builds '
            f"model.type={model_type!r}. Give an ESLSegmentor config and a checkpoint it trained, e.g. "
            'configs/esl/esl_effnet-lite0_demo.py with work_dirs/esl_demo/ESL/iter_600.pth (make demo); '
            'a plain mmseg checkpoint has no teacher and no part prototypes.')


def load_model(cfg: Config, config: str, checkpoint: str, *, device: str = 'cpu') -> nn.Module:
    """Builds ``cfg.model`` with mmseg's ``MODELS`` and loads the checkpoint with ``strict=True``; eval mode.

    Args:
        cfg: Loaded config (:func:`load_config`).
        config: Its path (for messages).
        checkpoint: Checkpoint path.
        device: Torch device.

    Returns:
        The model on ``device``, in eval mode.

    Raises:
        AnalysisError: If the checkpoint is missing or does not fit the config.
    """
    from mmseg.registry import MODELS
    if not osp.isfile(checkpoint):
        raise AnalysisError(f'checkpoint {checkpoint!r} does not exist; tools/train.py writes them into the work '
                            'dir (e.g. work_dirs/esl_demo/ESL/iter_600.pth after make demo)')
    model = MODELS.build(cfg.model)
    try:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
    except RuntimeError as error:
        raise AnalysisError(
            f'checkpoint {checkpoint} does not fit the model of {config} ({_mismatch_summary(str(error))}). Give the '
            'config the checkpoint was trained with (its work dir holds a copy); an ESL config needs an ESL '
            'checkpoint (student.*, teacher.*, and contrast_loss.* when num_parts > 0).') from None
    return model.to(device).eval()


def _mismatch_summary(message: str) -> str:
    """``missing keys: student.projector.* (10), ...`` from the message of a failed strict load."""
    summary = []
    for line in message.splitlines():
        for kind in ('missing keys', 'unexpected key'):
            if line.startswith(f'{kind} in source state_dict: '):
                keys = [k.strip() for k in line.split(': ', 1)[1].split(',') if k.strip()]
                groups = Counter('.'.join(k.split('.')[:2]) for k in keys)
                summary.append(f'{kind}: ' + ', '.join(f'{g}.* ({n})' for g, n in groups.items()))
        if line.startswith('size mismatch'):
            summary.append(line.strip()[:300])
    return '; '.join(summary) or message.strip().splitlines()[0]


def class_names(cfg: Config, num_classes: int) -> List[str]:
    """Class names of the config's datasets, else ``class 0`` ... ``class C-1``.

    Looks at ``metainfo.classes`` of the val / test / train datasets (and ConcatDataset members), then at the
    ``METAINFO`` of their registered dataset classes (e.g. ``CityscapesDataset``); only a list of ``num_classes``
    names is used.
    """
    from mmseg.registry import DATASETS
    candidates = []
    for key in ('val_dataloader', 'test_dataloader', 'train_dataloader'):
        dataset = (cfg.get(key) or {}).get('dataset') or {}
        candidates += [dataset, *dataset.get('datasets', [])]
    for candidate in candidates:
        classes = (candidate.get('metainfo') or {}).get('classes')
        if classes and len(classes) == num_classes:
            return list(classes)
    for candidate in candidates:
        dataset_cls = DATASETS.get(candidate['type']) if isinstance(candidate.get('type'), str) else None
        classes = getattr(dataset_cls, 'METAINFO', {}).get('classes')
        if classes and len(classes) == num_classes:
            return list(classes)
    return [f'class {i}' for i in range(num_classes)]


def select_classes(names: Sequence[str], wanted: Optional[Sequence[str]]) -> np.ndarray:
    """Indices of the classes named by ``--classes`` (names or indices), sorted; all classes when not given.

    Raises:
        AnalysisError: For an unknown name or index (the message lists the classes).
    """
    if not wanted:
        return np.arange(len(names))
    chosen = []
    for item in wanted:
        if item in names:
            chosen.append(list(names).index(item))
        elif item.isdigit() and int(item) < len(names):
            chosen.append(int(item))
        else:
            raise AnalysisError(f'--classes: unknown class {item!r}; the classes are {list(names)}')
    return np.array(sorted(set(chosen)))


def _test_pipeline(cfg: Config) -> List[dict]:
    """The config's test pipeline with label loading made optional (deterministic, whole images)."""
    pipeline = None
    for key in ('test_dataloader', 'val_dataloader'):
        pipeline = ((cfg.get(key) or {}).get('dataset') or {}).get('pipeline')
        if pipeline:
            break
    pipeline = pipeline or cfg.get('test_pipeline')
    if not pipeline:
        raise AnalysisError('the config has no test pipeline (test_dataloader.dataset.pipeline); add one, e.g. '
                            "[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), "
                            "dict(type='PackSegInputs')]")
    pipeline = copy.deepcopy(list(pipeline))
    for step in pipeline:
        if step.get('type') in ('LoadAnnotations', 'mmseg.LoadAnnotations'):
            step['type'] = 'LoadOptionalAnnotations'
    return pipeline


def _split_dataset_cfg(cfg: Config, split: str) -> dict:
    if split in ('val', 'test'):
        dataset = (cfg.get(f'{split}_dataloader') or {}).get('dataset')
        if not dataset:
            raise AnalysisError(f'the config has no {split}_dataloader.dataset; choose another --split or --img-dir')
        return copy.deepcopy(dataset)
    train = (cfg.get('train_dataloader') or {}).get('dataset') or {}
    members = train.get('datasets') if 'datasets' in train else [train]
    wanted = split == 'labeled'
    for member in members:
        if bool(member.get('with_labels', True)) == wanted:
            return copy.deepcopy(member)
    raise AnalysisError(
        f'the config\'s train_dataloader.dataset has no {split} member (a SplitSegDataset with '
        f"with_labels={wanted}); use --split val, or --img-dir with a folder of images")


class ImageSource:
    """The images a tool reads: a split of the config or a folder, through the config's test pipeline.

    Args:
        cfg: Loaded config (:func:`load_config`), for the pipeline and the datasets.
        split: One of :data:`SPLITS` (ignored when ``img_dir`` is given).
        img_dir: Folder of images instead of a split.
        num_images: Keep the first N images (None: all).
        ids: Keep these ids instead (in the given order).

    Raises:
        AnalysisError: If the folder does not exist or holds no image, the split's files are missing, an id is
            unknown, or no image is left.
    """

    def __init__(self, cfg: Config, *, split: str = 'unlabeled', img_dir: Optional[str] = None,
                 num_images: Optional[int] = None, ids: Optional[Sequence[str]] = None) -> None:
        if num_images is not None and num_images < 1:
            raise AnalysisError(f'--num-images must be >= 1, got {num_images}')
        self.pipeline = Compose(_test_pipeline(cfg))
        if img_dir is not None:
            if not osp.isdir(img_dir):
                raise AnalysisError(f'--img-dir {img_dir!r} is not a directory; give a folder of images '
                                    f'({", ".join(IMAGE_SUFFIXES)}) or use --split {"/".join(SPLITS)}')
            paths = sorted(p for p in glob.glob(osp.join(img_dir, '*')) if p.lower().endswith(IMAGE_SUFFIXES))
            if not paths:
                raise AnalysisError(f'--img-dir {img_dir!r} holds no image ({", ".join(IMAGE_SUFFIXES)})')
            self.description = f'folder {img_dir}'
            self._infos = [dict(img_path=p, seg_map_path=None, reduce_zero_label=False, seg_fields=[])
                           for p in paths]
        else:
            from mmseg.registry import DATASETS
            dataset_cfg = _split_dataset_cfg(cfg, split)
            dataset_cfg['pipeline'] = []
            try:
                dataset = DATASETS.build(dataset_cfg)
            except (FileNotFoundError, OSError) as error:
                raise AnalysisError(f'the {split} split of the config cannot be read: {error}. Point the config '
                                    'at your data with --cfg-options (e.g. data_root=...), or use --img-dir') from None
            self.description = f'{split} split ({dataset_cfg.get("data_root", "")})'
            self._infos = [dataset.get_data_info(i) for i in range(len(dataset))]
            if not self._infos:
                raise AnalysisError(f'the {split} split of the config is empty; choose another --split or --img-dir')
        self.ids_all = [osp.splitext(osp.basename(info['img_path']))[0] for info in self._infos]
        if ids:
            index = {sample_id: i for i, sample_id in enumerate(self.ids_all)}
            unknown = [i for i in ids if i not in index]
            if unknown:
                raise AnalysisError(f'unknown image ids {unknown[:5]} in the {self.description}')
            self._order = [index[i] for i in ids]
        else:
            self._order = list(range(len(self._infos)))[:num_images]

    def __len__(self) -> int:
        return len(self._order)

    @property
    def ids(self) -> List[str]:
        """Ids of the selected images, in order."""
        return [self.ids_all[i] for i in self._order]

    def packed(self, index: int) -> dict:
        """The test pipeline's output (``inputs`` uint8 (3, H, W) BGR, ``data_samples``) of image ``index``."""
        info = copy.deepcopy(self._infos[self._order[index]])
        info.setdefault('seg_fields', [])
        return self.pipeline(info)

    def samples(self, model: nn.Module) -> Iterator[AnalysisSample]:
        """Yields every selected image, preprocessed by ``model.data_preprocessor`` (one image per batch)."""
        for i in range(len(self)):
            packed = self.packed(i)
            data = model.data_preprocessor(pseudo_collate([packed]), False)
            image = packed['inputs'].numpy()[::-1].transpose(1, 2, 0).copy()  # LoadImageFromFile gives BGR
            sample = packed['data_samples']
            gt = sample.gt_sem_seg.data[0].numpy().astype(np.int64) if 'gt_sem_seg' in sample else None
            yield AnalysisSample(id=self.ids[i], image=image, inputs=data['inputs'], gt=gt)
