"""The file scan: every image and label map decoded by the dataset's own loading transforms, in threads."""
from __future__ import annotations

import copy
import io
import os
import os.path as osp
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio
from mmseg.datasets.transforms import LoadAnnotations
from PIL import Image
from torch import nn

from .datasets import _dataset_source, _Part
from .errors import MAX_LISTED, _reader_error
from .model import _ignore_index, model_num_classes

#: Modes of the file scan, see the module docstring.
SCAN_MODES: Tuple[str, ...] = ('full', 'labels', 'off')


@dataclass(frozen=True)
class _Sample:
    key: str  # config key of its dataset
    img_path: str
    seg_map_path: Optional[str]  # None: its label is not checked
    reduce_zero_label: bool
    label_map: Optional[tuple]


@dataclass
class _Loaders:
    image: LoadImageFromFile
    annotations: Optional[LoadAnnotations]
    num_classes: int
    ignore_index: int
    source: str


def _pipeline_transform(dataset: object, cls: type) -> Optional[object]:
    for transform in getattr(getattr(dataset, 'pipeline', None), 'transforms', []):
        if isinstance(transform, cls):
            return transform
    return None


def _loaders(part: _Part, num_classes: int, ignore_index: int) -> _Loaders:
    """The dataset's own loading transforms (copies), or mmcv's / mmseg's defaults if its pipeline has none."""
    image = _pipeline_transform(part.dataset, LoadImageFromFile)
    annotations = _pipeline_transform(part.dataset, LoadAnnotations) if part.labeled else None
    backend_args = getattr(part.dataset, 'backend_args', None)
    if image is None:
        image = LoadImageFromFile(backend_args=backend_args)
    if annotations is None and part.labeled:
        annotations = LoadAnnotations(backend_args=backend_args)
    return _Loaders(copy.deepcopy(image), copy.deepcopy(annotations),
                    len(part.dataset.metainfo.get('classes') or ()) or num_classes, ignore_index,
                    _dataset_source(part.dataset))


def _samples(part: _Part) -> List[_Sample]:
    samples = []
    for index in range(len(part.dataset)):
        info = part.dataset.get_data_info(index)
        label_map = info.get('label_map')
        samples.append(_Sample(part.key, info['img_path'], info.get('seg_map_path') if part.labeled else None,
                               bool(info.get('reduce_zero_label', False)),
                               tuple(sorted(label_map.items())) if label_map else None))
    return samples


def _image_size(sample: _Sample, loaders: _Loaders, mode: str) -> Tuple[Optional[Tuple[int, int]], Optional[str]]:
    """``((H, W), None)``, or ``(None, problem)`` if the image cannot be read."""
    try:
        if mode == 'full':
            results = loaders.image.transform({'img_path': sample.img_path})
            if results is None or results.get('img') is None:
                raise ValueError('the decoder returned no image')
            return tuple(results['img'].shape[:2]), None
        data = fileio.get(sample.img_path, backend_args=loaders.image.backend_args)
        with Image.open(io.BytesIO(data)) as img:
            return (img.height, img.width), None
    except Exception as e:  # noqa: BLE001  (every reader error is a problem of this file)
        empty = osp.isfile(sample.img_path) and osp.getsize(sample.img_path) == 0
        reason = 'the file is empty, 0 bytes' if empty else _reader_error(e)
        return None, (f'image {sample.img_path} cannot be read ({reason}); replace the file, or remove its id from '
                      f'{loaders.source} ({sample.key})')


#: Why a JPEG label map has values between the classes, and the fix.
_JPEG_LABELS = ('it is a JPEG file: JPEG compression is lossy and changes the values near every edge, so label maps '
                "must be saved losslessly: re-export them as PNG (and set seg_map_suffix='.png'); otherwise ")


def _label_problems(sample: _Sample, loaders: _Loaders, size: Optional[Tuple[int, int]]
                    ) -> Tuple[List[str], Optional[np.ndarray]]:
    """The problems of one label map, and its pixel count per value (``(256,)``; None if it cannot be read)."""
    results = {'seg_map_path': sample.seg_map_path, 'reduce_zero_label': sample.reduce_zero_label,
               'label_map': dict(sample.label_map) if sample.label_map else None, 'seg_fields': []}
    try:
        loaders.annotations._load_seg_map(results)
        label = results['gt_seg_map']
    except Exception as e:  # noqa: BLE001
        return [f'label map {sample.seg_map_path} cannot be read ({_reader_error(e)}); replace the file, or remove '
                f'its id from {loaders.source} ({sample.key})'], None
    if label.ndim != 2:
        return [f'label map {sample.seg_map_path} has shape {label.shape}, not (H, W): a label map holds one class '
                'index per pixel (a palette or grayscale PNG), not RGB colours; convert it (mmseg\'s '
                'tools/dataset_converters)'], None
    problems = []
    if size is not None and tuple(label.shape) != tuple(size):
        problems.append(f'image {sample.img_path} is {size[0]}×{size[1]} (H×W) but its label map '
                        f'{sample.seg_map_path} is {label.shape[0]}×{label.shape[1]}; the label must have the '
                        f'image\'s size: replace one of them or remove the id from {loaders.source} ({sample.key})')
    counts = np.bincount(label.ravel(), minlength=256)  # uint8 (LoadAnnotations): faster than unique
    values = np.flatnonzero(counts)
    bad = values[(values >= loaders.num_classes) & (values != loaders.ignore_index)]
    if bad.size:
        jpeg = str(sample.seg_map_path).lower().endswith(('.jpg', '.jpeg'))
        problems.append(
            f'label map {sample.seg_map_path} has values {bad[:8].tolist()} outside [0, {loaders.num_classes}) ∪ '
            f'{{{loaders.ignore_index}}} (after reduce_zero_label={sample.reduce_zero_label}, label_map='
            f'{dict(sample.label_map) if sample.label_map else None}); '
            + (_JPEG_LABELS if jpeg else '') + 'convert the labels to class indices, set '
            f'reduce_zero_label=True on {sample.key} if 0 means "ignore", or fix its metainfo classes / the '
            'heads\' num_classes')
    return problems, counts


def _scan_one(sample: _Sample, loaders: _Loaders, mode: str) -> Tuple[List[str], Optional[np.ndarray]]:
    size, problem = _image_size(sample, loaders, mode)
    problems = [problem] if problem else []
    counts = None
    if sample.seg_map_path is not None and loaders.annotations is not None:
        label_problems, counts = _label_problems(sample, loaders, size)
        problems += label_problems
    return problems, counts


def _num_threads() -> int:
    local_world = int(os.environ.get('LOCAL_WORLD_SIZE', '1'))
    return max(1, min(8, (os.cpu_count() or 1) // max(1, local_world)))


@dataclass
class ScanShard:
    """What one process's shard of the scan found (gathered over the processes of a distributed run)."""

    problems: List[str]  # at most MAX_LISTED of them
    count: int  # all problems
    images: int  # images checked
    labels: int  # label maps checked
    class_pixels: np.ndarray  # (256,) pixel count per label value over the labeled training sets


def _scan(parts: List[_Part], model: nn.Module, mode: str, rank: int, world_size: int) -> ScanShard:
    """This process's shard of the scan."""
    num_classes = max(model_num_classes(model).values(), default=0)
    loaders = {p.key: _loaders(p, num_classes, _ignore_index(model)) for p in parts}
    unique: Dict[Tuple[str, Optional[str]], _Sample] = {}
    for part in parts:
        for sample in _samples(part):
            unique.setdefault((sample.img_path, sample.seg_map_path), sample)
    shard = list(unique.values())[rank::world_size]
    with ThreadPoolExecutor(max_workers=_num_threads()) as pool:
        found = list(pool.map(lambda s: _scan_one(s, loaders[s.key], mode), shard))
    problems = [p for sample_problems, _ in found for p in sample_problems]
    training = np.zeros(256, dtype=np.int64)
    for sample, (_, counts) in zip(shard, found):
        if counts is not None and sample.key.startswith('train_dataloader'):
            training += counts
    labels = sum(1 for s in shard if s.seg_map_path is not None and loaders[s.key].annotations is not None)
    return ScanShard(problems[:MAX_LISTED], len(problems), len(shard), labels, training)


#: Share of the labeled training pixels at the ignore index above which a class without pixels is an error.
IGNORED_SHARE_LIMIT = 0.25


def missing_classes_problem(counts: np.ndarray, model: nn.Module,
                            class_names: Optional[Tuple[str, ...]] = None) -> Optional[str]:
    """An error message if a class has no labeled training pixel while the ignore index covers a large share
    (more than :data:`IGNORED_SHARE_LIMIT`) or the labeled masks hold only 0 and the ignore index.

    The usual cause is binary masks saved as 0/255: 255 is the ignore index, so the whole foreground is ignored,
    training "succeeds" and validation reports mIoU 100 with IoU nan for the object class.

    Args:
        counts: Pixel count per label value over the labeled training sets, ``(256,)``.
        model: The model (its ``num_classes`` and its decode head's ignore index).
        class_names: The dataset's classes, for the message.
    """
    num_classes = max(model_num_classes(model).values(), default=0)
    ignore_index = _ignore_index(model)
    labeled = int(counts.sum())
    ignored = int(counts[ignore_index]) if 0 <= ignore_index < counts.size else 0
    missing = [c for c in range(num_classes) if counts[c] == 0]
    only_zero_and_ignored = bool(ignored) and set(np.flatnonzero(counts).tolist()) <= {0, ignore_index}
    if not labeled or not missing or (ignored / labeled <= IGNORED_SHARE_LIMIT and not only_zero_and_ignored):
        return None
    names = ''
    if class_names and len(class_names) >= num_classes:
        names = f' ({", ".join(class_names[c] for c in missing)})'
    share = 100 * ignored / labeled
    return (f'class(es) {missing}{names} have no pixel in the labeled training set, while {share:.0f} % of its '
            f'pixels are the ignore index {ignore_index}. Binary masks saved as 0/{ignore_index} are the likely '
            f'cause: {ignore_index} means "ignore", so the foreground is never trained on. Convert the masks to class '
            f'indices (e.g. label[label == {ignore_index}] = 1 with numpy), or pass --allow-missing-classes to '
            'tools/train.py if the class really has no labeled pixel.')
