"""The datasets of a config, built one part at a time, and the checks of their consistency with the model."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import List, Optional, Tuple

from mmengine.config import Config
from mmengine.dataset import ConcatDataset
from mmseg.registry import DATASETS
from torch import nn

from ...models.losses.pixel_part_contrast_loss import CONFIG_KEY as CONTRAST_KEY
from ...models.losses.pixel_part_contrast_loss import PixelPartContrastLoss
from ...models.segmentors.esl_segmentor import ESLSegmentor
from .errors import _clean
from .model import model_num_classes

_SUPERVISED_HINT = ('to train on the labeled images only, use a supervised config instead (e.g. '
                    'configs/esl/sup_r101_voc_1-8.py, configs/esl/tiny_supervised_voc.py)')


@dataclass
class _Part:
    """One built dataset: its config key, the dataset, and whether its labels are used in training."""

    key: str
    dataset: object
    labeled: bool


def _dataset_parts(dataset_cfg: dict, key: str) -> List[Tuple[str, dict]]:
    """``[(config key, config)]``: the parts of a ConcatDataset one by one, else the dataset itself."""
    dataset_type = dataset_cfg.get('type')
    cls = DATASETS.get(dataset_type) if isinstance(dataset_type, str) else dataset_type
    if isinstance(cls, type) and issubclass(cls, ConcatDataset):
        return [(f'{key}.datasets.{i}', part) for i, part in enumerate(dataset_cfg['datasets'])]
    return [(key, dataset_cfg)]


def _build_parts(entries: List[Tuple[str, dict]], problems: List[str], is_esl: bool) -> List[_Part]:
    parts = []
    for key, part_cfg in entries:
        unlabeled = part_cfg.get('with_labels', True) is False
        try:
            dataset = DATASETS.build(copy.deepcopy(part_cfg))
            if hasattr(dataset, 'full_init'):
                dataset.full_init()  # lazy_init=True datasets load their data list here
        except (ValueError, TypeError, KeyError, OSError, AssertionError) as e:
            hint = (f' ESLSegmentor trains on unlabeled images: list them in this split (e.g. with '
                    f'tools/make_splits.py), or {_SUPERVISED_HINT}.' if is_esl and unlabeled else '')
            problems.append(f'{key} (type={part_cfg.get("type")!r}): {_clean(e)}{hint}')
            continue
        parts.append(_Part(key, dataset, not unlabeled))
    return parts


def _dataset_source(dataset: object) -> str:
    """The split file or ann_file a dataset reads its ids from, for messages."""
    split = getattr(dataset, '_split_path', None)
    if callable(split):
        return split()
    return getattr(dataset, 'ann_file', '') or '(the image folder)'


def _check_num_classes(model: nn.Module, parts: List[_Part]) -> List[str]:
    found = {f'{p.key} (len(metainfo["classes"]))': len(p.dataset.metainfo['classes']) for p in parts
             if p.dataset.metainfo.get('classes')}  # a dataset without classes takes the model's
    found.update(model_num_classes(model))
    if len(set(found.values())) <= 1:
        return []
    listed = ', '.join(f'{key}={value}' for key, value in found.items())
    contrast = (f' (and model.{CONTRAST_KEY}.num_classes, or leave that one out)'
                if isinstance(getattr(model, 'contrast_loss', None), PixelPartContrastLoss) else '')
    return [f'num_classes differs: {listed}. Set the heads\' num_classes{contrast} to the dataset\'s number of '
            "classes, or select the dataset's classes with metainfo=dict(classes=...)."]


def _check_unlabeled(train_parts: List[_Part], train_key: str) -> List[str]:
    unlabeled = [p for p in train_parts if not p.labeled]
    if sum(len(p.dataset) for p in unlabeled):
        return []
    if unlabeled:
        what = ', '.join(f'{p.key} lists 0 samples ({_dataset_source(p.dataset)})' for p in unlabeled)
    else:
        what = f'no part of {train_key} is an unlabeled set (SplitSegDataset with with_labels=False)'
    return [f'ESLSegmentor needs unlabeled images, but {what}. Set {train_key} to dict(type=\'ConcatDataset\', '
            'datasets=[labeled, unlabeled]) with a non-empty unlabeled split (e.g. from tools/make_splits.py), '
            f'or {_SUPERVISED_HINT}.']


def _image_paths(dataset: object) -> List[str]:
    return [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]


def labeled_unlabeled_overlap(train_parts: List[_Part]) -> Optional[str]:
    """A warning if an image is listed both as labeled and as unlabeled, else ``None``.

    Not an error: it can be deliberate (some papers train on every image as unlabeled), but usually it is a split
    made twice from the same list, and then the labeled share the run reports is wrong.
    """
    labeled = {path for p in train_parts if p.labeled for path in _image_paths(p.dataset)}
    both = [path for p in train_parts if not p.labeled for path in _image_paths(p.dataset) if path in labeled]
    if not both:
        return None
    shown = ', '.join(both[:5]) + (', ...' if len(both) > 5 else '')
    return (f'{len(both)} image(s) are in both the labeled and the unlabeled training split ({shown}); they are '
            'trained on with their label and again as unlabeled images. If that is not intended, make the splits '
            'disjoint (tools/make_splits.py does).')


def _check_negatives(model: nn.Module) -> List[str]:
    loss = getattr(model, 'contrast_loss', None)
    if not isinstance(loss, PixelPartContrastLoss) or loss.num_negatives <= loss.negative_pool_size:
        return []
    return [f'model.{CONTRAST_KEY}.num_negatives={loss.num_negatives} exceeds the {loss.negative_pool_size} bank '
            f'slots an anchor\'s negatives can come from ({loss.describe_negative_pool()}): every anchor '
            f'would repeat negatives. Lower num_negatives to <= {loss.negative_pool_size} or raise '
            f'model.{CONTRAST_KEY}.queue_size.']


def _check_batch_layout(cfg: Config, model: ESLSegmentor) -> List[str]:
    """``SemiSupervisedSampler`` and ``semi_train_cfg.cutmix.partner`` must agree on the batch layout.

    The model reads roles from positions (``ESLSegmentor.split_batch``): ``[labeled | unlabeled | partners]``
    with ``partner='extra'``, ``[labeled | unlabeled]`` with ``'batch'``. A disagreement does not crash: with
    ``cutmix_partners=False`` and ``'extra'``, half of the unlabeled images would silently be used as partners
    only; with ``cutmix_partners=True`` and ``'batch'``, the partners would be trained on as unlabeled images.
    """
    loader = cfg.get('train_dataloader') or {}
    sampler = loader.get('sampler') or {}
    if sampler.get('type') not in ('SemiSupervisedSampler', 'mmseg.SemiSupervisedSampler'):
        return []
    key = 'train_dataloader.sampler'
    num_labeled, num_unlabeled = sampler.get('num_labeled', 1), sampler.get('num_unlabeled', 1)
    partners = sampler.get('cutmix_partners', True)
    partner = model.semi_train_cfg.cutmix.partner
    problems = []
    if partner == 'extra' and not partners:
        problems.append(
            f"model.semi_train_cfg.cutmix.partner='extra' takes each unlabeled image's CutMix partner from the "
            f'extra images of {key}, but {key}.cutmix_partners=False: half of the unlabeled images would be used '
            f"only as partners. Set {key}.cutmix_partners=True, or cutmix.partner='batch'.")
    elif partner == 'batch' and partners:
        problems.append(
            f"model.semi_train_cfg.cutmix.partner='batch' pairs the unlabeled images of the batch with each other, "
            f'but {key}.cutmix_partners=True adds partner images that would be trained on as unlabeled images. '
            f"Set {key}.cutmix_partners=False, or cutmix.partner='extra'.")
    elif partner == 'batch' and num_unlabeled < 2:
        problems.append(
            f"model.semi_train_cfg.cutmix.partner='batch' needs >= 2 unlabeled images per process to pair, got "
            f"{key}.num_unlabeled={num_unlabeled}. Raise it, or use cutmix.partner='extra' with "
            f'{key}.cutmix_partners=True.')
    expected = num_labeled + num_unlabeled * (2 if partners else 1)
    batch_size = loader.get('batch_size')
    if batch_size != expected:
        problems.append(
            f'train_dataloader.batch_size={batch_size} does not match {key}: num_labeled={num_labeled} + '
            f'num_unlabeled={num_unlabeled} * {2 if partners else 1} (cutmix_partners={partners}) = {expected}. '
            f'Set train_dataloader.batch_size={expected}.')
    return problems
