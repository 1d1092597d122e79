"""A segmentation dataset whose samples come from a semi-supervised split file (UniMatch, U2PL, CPS, ours)."""
from __future__ import annotations

import os.path as osp
from typing import List, Optional

from mmengine import fileio
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .splits import SplitFileNotFoundError, read_split

#: How many missing paths the error of a dataset with missing files lists.
_MAX_LISTED = 5


@DATASETS.register_module()
class SplitSegDataset(BaseSegDataset):
    """``BaseSegDataset`` reading its samples from a split file, for the labeled or the unlabeled set.

    The split file (any format :func:`~mmseg_esl.datasets.splits.read_split` reads) gives canonical ids; sample
    ``id`` is the image ``data_prefix['img_path']/id + img_suffix`` and the label
    ``data_prefix['seg_map_path']/id + seg_map_suffix``, exactly as in ``BaseSegDataset`` with an ``ann_file``.
    Each data info is the one ``BaseSegDataset`` builds (``img_path``, ``seg_map_path``, ``label_map``,
    ``reduce_zero_label``, ``seg_fields``) plus ``is_labeled``; add ``'is_labeled'`` to
    ``PackSegInputs(meta_keys=...)`` to carry it to the segmentor.

    - ``with_labels=True`` (labeled set): every image and label file must exist; all ids are checked when the
      dataset is built and one ``FileNotFoundError`` reports the missing ones. ``is_labeled=True``.
    - ``with_labels=False`` (unlabeled set): only the images must exist. ``seg_map_path`` is set when the label
      file happens to exist (VOC ``train_aug``, Cityscapes ``train``), else None; such a label may be used for
      a logged pseudo-label accuracy, never in a loss (load it with ``LoadOptionalAnnotations``).
      ``is_labeled=False``.

    Config examples (``metainfo``: the classes and palette, e.g. those of mmseg's ``PascalVOCDataset.METAINFO`` or
    ``CityscapesDataset.METAINFO``)::

        # Pascal VOC 2012 with the augmented labels (SegmentationClassAug; UniMatch names that folder
        # SegmentationClass), classic 92-label split of UniMatch
        voc_labeled = dict(
            type='SplitSegDataset',
            data_root='data/VOCdevkit/VOC2012',
            split_file='splits/unimatch/pascal/92/labeled.txt',  # relative to data_root, or absolute
            data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
            img_suffix='.jpg',
            seg_map_suffix='.png',
            metainfo=voc_metainfo,
            pipeline=labeled_pipeline)
        voc_unlabeled = dict(voc_labeled, split_file='splits/unimatch/pascal/92/unlabeled.txt', with_labels=False,
                             pipeline=unlabeled_pipeline)

        # Cityscapes (labelTrainIds made by mmseg's tools/dataset_converters/cityscapes.py), 1/16 split of U2PL
        city_labeled = dict(
            type='SplitSegDataset',
            data_root='data/cityscapes',
            split_file='splits/u2pl/cityscapes/186/labeled.txt',
            data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
            img_suffix='_leftImg8bit.png',
            seg_map_suffix='_gtFine_labelTrainIds.png',
            metainfo=cityscapes_metainfo,
            pipeline=labeled_pipeline)

    Args:
        split_file: Path of the split file, absolute or relative to ``data_root`` (it replaces ``ann_file``).
        with_labels: Whether the samples are labeled (see above).
        **kwargs: ``BaseSegDataset`` arguments: ``data_root``, ``data_prefix``, ``img_suffix``,
            ``seg_map_suffix``, ``metainfo``, ``pipeline``, ``reduce_zero_label``, ``lazy_init``, ... but not
            ``ann_file``.

    Raises:
        SplitFileError: If the split file is missing, empty or malformed (when the data list is loaded).
        FileNotFoundError: If files of listed samples are missing (when the data list is loaded).
    """

    def __init__(self, *, split_file: str, with_labels: bool = True, **kwargs) -> None:
        if 'ann_file' in kwargs:
            raise TypeError('SplitSegDataset reads its samples from split_file; remove ann_file='
                            f'{kwargs["ann_file"]!r} from its arguments.')
        if not split_file:
            raise ValueError('SplitSegDataset needs split_file: the path of a split file listing its samples.')
        self.split_file = split_file
        self.with_labels = with_labels
        super().__init__(**kwargs)

    def _split_path(self) -> str:
        """The split file's path: ``split_file`` joined with ``data_root`` unless it is absolute."""
        if self.data_root and not osp.isabs(self.split_file):
            return osp.join(self.data_root, self.split_file)
        return self.split_file

    def _exists(self, path: str) -> bool:
        return fileio.exists(path, backend_args=self.backend_args)

    def load_data_list(self) -> List[dict]:
        """Reads the split file and builds one data info per listed sample.

        Returns:
            The data infos, in split-file order.

        Raises:
            SplitFileError: If the split file is missing, empty or malformed.
            ValueError: If ``data_prefix`` lacks ``img_path``, or ``seg_map_path`` with ``with_labels=True``.
            FileNotFoundError: If images (or, with ``with_labels=True``, labels) of listed samples are missing.
        """
        path = self._split_path()
        try:
            ids = read_split(path)
        except SplitFileNotFoundError as e:
            raise SplitFileNotFoundError(f'{e} (SplitSegDataset: split_file={self.split_file!r} with '
                                         f'data_root={self.data_root!r}; a relative split_file is joined with '
                                         'data_root.)') from None
        img_dir: Optional[str] = self.data_prefix.get('img_path')
        ann_dir: Optional[str] = self.data_prefix.get('seg_map_path')
        if img_dir is None:
            raise ValueError("SplitSegDataset needs data_prefix['img_path'] (the image folder, e.g. 'JPEGImages').")
        if self.with_labels and ann_dir is None:
            raise ValueError("SplitSegDataset(with_labels=True) needs data_prefix['seg_map_path'] (the label folder, "
                             "e.g. 'SegmentationClassAug'); for an unlabeled set pass with_labels=False.")

        data_list, missing_images, missing_labels = [], [], []
        for sample_id in ids:
            img_path = osp.join(img_dir, sample_id + self.img_suffix)
            if not self._exists(img_path):
                missing_images.append(img_path)
            seg_map_path = None if ann_dir is None else osp.join(ann_dir, sample_id + self.seg_map_suffix)
            if seg_map_path is not None and not self._exists(seg_map_path):
                if self.with_labels:
                    missing_labels.append(seg_map_path)
                seg_map_path = None
            data_list.append(dict(img_path=img_path, seg_map_path=seg_map_path, label_map=self.label_map,
                                  reduce_zero_label=self.reduce_zero_label, seg_fields=[],
                                  is_labeled=self.with_labels))
        if missing_images or missing_labels:
            self._raise_missing(path, len(ids), missing_images, missing_labels)
        return data_list

    def _raise_missing(self, path: str, num_ids: int, missing_images: List[str], missing_labels: List[str]) -> None:
        """Raises one FileNotFoundError that counts the missing files and lists the first few."""
        missing = missing_images + missing_labels
        listed = '\n'.join(f'  {p}' for p in missing[:_MAX_LISTED])
        more = f'\n  ... and {len(missing) - _MAX_LISTED} more' if len(missing) > _MAX_LISTED else ''
        labels_note = ('' if not missing_labels else
                       ' If the label files are absent on purpose (an unlabeled set), pass with_labels=False.')
        raise FileNotFoundError(
            f'SplitSegDataset: {len(missing)} file(s) of the {num_ids} samples listed in {path} are missing '
            f'({len(missing_images)} image(s), {len(missing_labels)} label map(s)):\n{listed}{more}\n'
            f'Sample id X is read as data_prefix/X + suffix: check data_root={self.data_root!r}, '
            f'data_prefix={self.data_prefix!r}, img_suffix={self.img_suffix!r} and '
            f'seg_map_suffix={self.seg_map_suffix!r}, and that the split belongs to this dataset.{labels_note}')


__all__ = ['SplitSegDataset']
