"""The images an analysis tool reads, deterministic and whole, through the config's test pipeline.

``LoadAnnotations`` is replaced by ``LoadOptionalAnnotations``, so images without a label file pass:

* ``--split unlabeled`` (default) / ``labeled``: the members of the config's semi-supervised training set
  (``train_dataloader.dataset``, a ``ConcatDataset`` of ``SplitSegDataset`` s; the unlabeled one has
  ``with_labels=False``);
* ``--split val`` / ``test``: the config's validation / test set;
* ``--img-dir DIR``: every ``.jpg`` / ``.jpeg`` / ``.png`` / ``.bmp`` in a folder (no labels).

Ground truth travels with an image when its label file exists; the tools use it where the paper does (classes of
labeled images in Eq. 7) and to report, never to compute pseudo labels.
"""
from __future__ import annotations

import copy
import glob
import os.path as osp
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from torch import Tensor, nn

from .errors import AnalysisError

SPLITS: Tuple[str, ...] = ('unlabeled', 'labeled', 'val', 'test')
IMAGE_SUFFIXES: Tuple[str, ...] = ('.jpg', '.jpeg', '.png', '.bmp')


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
