"""Readers and writers of semi-supervised split files (the partitions UniMatch, U2PL and CPS publish).

A split file lists samples one per line. Every supported line format is normalised to a *canonical sample
id*, the name mmseg's :class:`~mmseg.datasets.BaseSegDataset` scheme understands: the image of sample ``id``
is ``data_prefix['img_path'] / id + img_suffix`` and its label ``data_prefix['seg_map_path'] / id +
seg_map_suffix``.

Supported line formats (name: origin, example line -> canonical id):

- ``plain``: U2PL / CPS Pascal VOC and :func:`write_split`; ``2007_000032`` -> ``2007_000032`` (an id may contain
  ``/``, as canonical Cityscapes ids do: ``aachen/aachen_000000_000019``, and dots inside a name: ``scene.0001``;
  an id that ends in an image extension, ``0001.jpg``, is refused with a hint to drop the extension).
- ``unimatch_voc``: UniMatch Pascal VOC; ``JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png``
  -> ``2007_000032``.
- ``unimatch_cityscapes``: UniMatch Cityscapes; ``leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png
  gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png`` -> ``aachen/aachen_000000_000019``.
- ``u2pl_cityscapes``: U2PL Cityscapes; ``leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png``
  -> ``aachen/aachen_000000_000019``.
- ``cps_cityscapes``: CPS/TorchSemiSeg Cityscapes; ``/images/train/aachen_000000_000019.png<TAB>/segmentation/
  train/aachen_000000_000019_gtFine.png`` (or ``_gtCoarse.png``) -> ``aachen/aachen_000000_000019``.

The format is detected per file, and a file must use one format throughout. For Cityscapes the subset folder
(``train``, ``val``, ``train_extra``) is dropped from the id: it belongs in ``data_prefix`` (e.g.
``leftImg8bit/train``), so a file that mixes subsets (CPS ``train_val.txt``) cannot be served by one dataset
with one ``data_prefix``. CPS lines name no city folder; the city is the file name's prefix before the first
underscore (``muhlheim-ruhr_000000_000060`` -> ``muhlheim-ruhr``). Blank lines, surrounding whitespace,
Windows line ends and a UTF-8 byte-order mark are tolerated.

This module depends on the standard library and numpy only (it is plain text handling).
"""
from __future__ import annotations

import os
import os.path as osp
import re
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

__all__ = ['SPLIT_FORMATS', 'SplitFileError', 'SplitFileNotFoundError', 'detect_split_format', 'draw_labeled',
           'read_split', 'write_split']

#: How many offending entries an error message lists.
_MAX_LISTED = 5
_HOW_TO_GET_SPLITS = ('Published splits come from the UniMatch (splits/), U2PL (data/splits/) and CPS/TorchSemiSeg '
                      '(DATA/) repositories; to draw your own, run `python tools/make_splits.py --train-list LIST '
                      '--num-labeled N --out-dir DIR`.')


class SplitFileError(ValueError):
    """A split file is missing, empty or malformed; the message names the file, the line and the fix."""


class SplitFileNotFoundError(SplitFileError, FileNotFoundError):
    """The split file does not exist (also a :class:`FileNotFoundError`)."""


class _LineError(Exception):
    """A line matches a format's pattern but is inconsistent (e.g. image and label of different samples)."""


def _same_sample(image: str, label: str) -> None:
    if image != label:
        raise _LineError(f'its image and label name different samples ({image!r} vs {label!r})')


def _plain_id(m: re.Match) -> str:
    return m['id']


def _unimatch_voc_id(m: re.Match) -> str:
    _same_sample(m['id'], m['label'])
    return m['id']


def _city_id(city: str, name: str) -> str:
    if not name.startswith(city + '_'):
        raise _LineError(f'the file name {name!r} does not start with its city folder {city!r} + "_"')
    return f'{city}/{name}'


def _unimatch_cityscapes_id(m: re.Match) -> str:
    _same_sample(f"{m['subset']}/{m['city']}/{m['name']}", f"{m['label_subset']}/{m['label_city']}/{m['label']}")
    return _city_id(m['city'], m['name'])


def _u2pl_cityscapes_id(m: re.Match) -> str:
    return _city_id(m['city'], m['name'])


def _cps_cityscapes_id(m: re.Match) -> str:
    _same_sample(f"{m['subset']}/{m['name']}", f"{m['label_subset']}/{m['label']}")
    return f"{m['name'].split('_', 1)[0]}/{m['name']}"


class _Format(NamedTuple):
    name: str
    origin: str
    example: str
    pattern: re.Pattern
    to_id: Callable[[re.Match], str]


_NAME = r'[\w-]+'  # a file or folder name without extension: letters, digits, '_' and '-'
#: A name of a plain id may also hold dots inside (``scene.0001``), but not end in an image or label extension:
#: ids are written without it (the dataset appends ``img_suffix`` / ``seg_map_suffix``).
_IMAGE_EXTENSION = r'\.(?:[jJ][pP][eE]?[gG]|[pP][nN][gG]|[bB][mM][pP]|[tT][iI][fF][fF]?)'
_PLAIN_NAME = r'[\w-]+(?:\.[\w-]+)*'
_FORMATS: Tuple[_Format, ...] = (
    _Format('plain', 'U2PL/CPS Pascal VOC, write_split()', '2007_000032, aachen/aachen_000000_000019 or scene.0001',
            re.compile(rf'(?!.*{_IMAGE_EXTENSION}$)(?P<id>{_PLAIN_NAME}(?:/{_PLAIN_NAME})*)'), _plain_id),
    _Format('unimatch_voc', 'UniMatch Pascal VOC', 'JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png',
            re.compile(rf'JPEGImages/(?P<id>{_NAME})\.jpg\s+SegmentationClass/(?P<label>{_NAME})\.png'),
            _unimatch_voc_id),
    _Format('unimatch_cityscapes', 'UniMatch Cityscapes',
            'leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png '
            'gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png',
            re.compile(rf'leftImg8bit/(?P<subset>\w+)/(?P<city>{_NAME})/(?P<name>{_NAME})_leftImg8bit\.png\s+'
                       rf'gtFine/(?P<label_subset>\w+)/(?P<label_city>{_NAME})/(?P<label>{_NAME})'
                       r'_gtFine_labelTrainIds\.png'),
            _unimatch_cityscapes_id),
    _Format('u2pl_cityscapes', 'U2PL Cityscapes', 'leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png',
            re.compile(rf'leftImg8bit/(?P<subset>\w+)/(?P<city>{_NAME})/(?P<name>{_NAME})_leftImg8bit\.png'),
            _u2pl_cityscapes_id),
    _Format('cps_cityscapes', 'CPS/TorchSemiSeg Cityscapes',
            '/images/train/aachen_000000_000019.png<TAB>/segmentation/train/aachen_000000_000019_gtFine.png',
            re.compile(rf'/images/(?P<subset>\w+)/(?P<name>{_NAME})\.png\s+'
                       rf'/segmentation/(?P<label_subset>\w+)/(?P<label>{_NAME})_gt(?:Fine|Coarse)\.png'),
            _cps_cityscapes_id),
)
#: Names of the supported line formats, as :func:`detect_split_format` returns them.
SPLIT_FORMATS: Tuple[str, ...] = tuple(f.name for f in _FORMATS)


def _supported_formats() -> str:
    return '\n'.join(f'  {f.name:<20} ({f.origin}): {f.example}' for f in _FORMATS)


def _extension_hint(line: str) -> str:
    """A hint for a line that is an id written with its file extension (``0001.jpg``), else ``''``."""
    if not re.fullmatch(rf'{_PLAIN_NAME}(?:/{_PLAIN_NAME})*', line) or not re.search(f'{_IMAGE_EXTENSION}$', line):
        return ''
    stem = re.sub(f'{_IMAGE_EXTENSION}$', '', line)
    return (f' It looks like a file name: write the id without its extension ({stem!r}; the dataset appends '
            'img_suffix and seg_map_suffix) and relative to data_prefix, without folders such as JPEGImages/.')


def _parse_lines(lines: Iterable[str], source: str) -> Tuple[str, List[Tuple[int, str]]]:
    """Parses the lines of one split file.

    Args:
        lines: The file's lines (line ends and surrounding whitespace are stripped; blank lines skipped).
        source: The file's name, for error messages.

    Returns:
        The file's format name and ``[(line_number, canonical_id), ...]`` in file order (1-based numbers).

    Raises:
        SplitFileError: On an empty file, a line of no supported format or an inconsistent line, and on a line
            whose format differs from the first line's.
    """
    file_format: Optional[_Format] = None
    first_line = 0
    entries: List[Tuple[int, str]] = []
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        # The first line's format is tried first, so a regular file costs one match per line.
        candidates = _FORMATS if file_format is None else (file_format,) + _FORMATS
        match, fmt = None, None
        for fmt in candidates:
            match = fmt.pattern.fullmatch(line)
            if match:
                break
        if match is None:
            raise SplitFileError(
                f'{source}, line {lineno}: {line!r} matches no supported split format. Each line must be one of:\n'
                f'{_supported_formats()}\nFix or remove the line (a file must use one format throughout).'
                + _extension_hint(line))
        if file_format is None:
            file_format, first_line = fmt, lineno
        elif fmt is not file_format:
            raise SplitFileError(
                f'{source}, line {lineno}: mixed formats: this line is {fmt.name!r} ({fmt.origin}) but line '
                f'{first_line} is {file_format.name!r} ({file_format.origin}). A split file must use one format '
                'throughout; convert the odd lines or split the file.')
        try:
            entries.append((lineno, fmt.to_id(match)))
        except _LineError as e:
            raise SplitFileError(f'{source}, line {lineno}: {line!r} is a {fmt.name!r} line but {e}; fix the '
                                 'line or regenerate the file.') from None
    if file_format is None:
        raise SplitFileError(f'{source} is empty (no non-blank line). A split file lists one sample per line. '
                             + _HOW_TO_GET_SPLITS)
    return file_format.name, entries


def detect_split_format(lines: Iterable[str], *, source: str = '<lines>') -> str:
    """Returns the line format of a split file's lines, one of :data:`SPLIT_FORMATS`.

    Every non-blank line is checked, so this also validates the lines.

    Args:
        lines: The lines of one split file (with or without line ends).
        source: What the lines come from, for error messages (e.g. the file's path).

    Returns:
        The format name, e.g. ``'unimatch_voc'``.

    Raises:
        SplitFileError: If there is no non-blank line, a line matches no format or the formats are mixed.
    """
    return _parse_lines(lines, source)[0]


def read_split(path: str) -> List[str]:
    """Reads a split file of any supported format into canonical sample ids.

    Args:
        path: Path of the split file.

    Returns:
        The canonical ids (e.g. ``'2007_000032'`` or ``'aachen/aachen_000000_000019'``), in file order.

    Raises:
        SplitFileNotFoundError: If ``path`` does not exist (a :class:`FileNotFoundError` too).
        SplitFileError: If the file is a directory, not UTF-8 text, empty, has a line of no supported format,
            mixes formats or lists a sample twice.
    """
    path = os.fspath(path)
    if not osp.exists(path):
        raise SplitFileNotFoundError(f'Split file not found: {path}. ' + _HOW_TO_GET_SPLITS)
    if osp.isdir(path):
        raise SplitFileError(f'{path} is a directory; pass a split file inside it (e.g. {path}/labeled.txt).')
    try:
        with open(path, encoding='utf-8-sig') as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise SplitFileError(f'{path} is not a UTF-8 text file ({e}); a split file lists one sample per line.') \
            from None
    _, entries = _parse_lines(lines, path)
    first_seen: Dict[str, int] = {}
    for lineno, sample_id in entries:
        if sample_id in first_seen:
            raise SplitFileError(f'{path}, line {lineno}: duplicate id {sample_id!r} (already on line '
                                 f'{first_seen[sample_id]}). A split lists each sample once; remove one of the two '
                                 'lines.')
        first_seen[sample_id] = lineno
    return [sample_id for _, sample_id in entries]


def _check_ids(ids: Sequence[str], what: str) -> None:
    """Raises ValueError if ``ids`` holds an id that is not a plain canonical id or holds one twice."""
    plain = _FORMATS[0].pattern
    bad = [i for i in ids if not isinstance(i, str) or not plain.fullmatch(i)]
    if bad:
        raise ValueError(f'{what}: {len(bad)} invalid id(s), e.g. {bad[:_MAX_LISTED]}. A canonical id is a '
                         'relative name without extension or whitespace (letters, digits, "_", "-", "/", "." inside a '
                         "name), such as '2007_000032', 'aachen/aachen_000000_000019' or 'scene.0001'; read files "
                         'with read_split().')
    if len(set(ids)) != len(ids):
        seen, dups = set(), []
        for i in ids:
            if i in seen:
                dups.append(i)
            seen.add(i)
        raise ValueError(f'{what}: {len(dups)} duplicate id(s), e.g. {dups[:_MAX_LISTED]}; list each sample once.')


def write_split(path: str, ids: Sequence[str]) -> None:
    """Writes canonical ids as a ``plain`` split file, one per line (parent folders are created).

    Args:
        path: Output path (overwritten if it exists).
        ids: Canonical ids, e.g. from :func:`read_split` or :func:`draw_labeled`; written in the given order.

    Raises:
        ValueError: If ``ids`` is empty, holds a duplicate or an id that :func:`read_split` would not read back.
    """
    path = os.fspath(path)
    ids = list(ids)
    if not ids:
        raise ValueError(f'Refusing to write an empty split to {path}: read_split() rejects empty files.')
    _check_ids(ids, f'write_split({path!r})')
    parent = osp.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(''.join(f'{i}\n' for i in ids))


def draw_labeled(pool: Sequence[str], num_labeled: int, seed: int,
                 labeled_pool: Optional[Sequence[str]] = None) -> Tuple[List[str], List[str]]:
    """Draws a labeled subset of a training pool; the rest of the pool is the unlabeled set.

    The draw depends only on the *set* of candidate ids, ``seed`` and ``num_labeled`` (not on the order of the
    input files): the candidates are sorted, permuted with ``numpy.random.default_rng(seed)`` and the first
    ``num_labeled`` of the permutation are taken. So, for one seed, a smaller labeled set is contained in a
    larger one (e.g. 92 in 183 in 366 ...). Both returned lists are sorted.

    Args:
        pool: All training ids (e.g. the 10,582 VOC ``train_aug`` ids).
        num_labeled: How many labeled ids to draw, ``1 <= num_labeled <= len(candidates)``.
        seed: Seed of the generator.
        labeled_pool: If given, labeled ids are drawn only from these ids (which must all be in ``pool``), e.g.
            the 1,464 finely annotated VOC ``train`` ids of the "classic" protocol; the unlabeled set is still
            ``pool`` minus the labeled ids.

    Returns:
        ``(labeled, unlabeled)``, each sorted; together they are ``pool``, and they are disjoint.

    Raises:
        ValueError: If ``num_labeled`` is not in range, no unlabeled id would remain, an id list holds a
            duplicate, or ``labeled_pool`` has ids that are not in ``pool``.
    """
    pool = list(pool)
    _check_ids(pool, 'pool')
    if labeled_pool is None:
        candidates, source = sorted(pool), 'the pool'
    else:
        labeled_pool = list(labeled_pool)
        _check_ids(labeled_pool, 'labeled_pool')
        outside = sorted(set(labeled_pool) - set(pool))
        if outside:
            raise ValueError(f'{len(outside)} of the {len(labeled_pool)} ids to draw labeled samples from are not in '
                             f'the pool of {len(pool)} ids, e.g. {outside[:_MAX_LISTED]}: the labeled candidates must '
                             'be a subset of the training pool (e.g. VOC train within train_aug).')
        candidates, source = sorted(labeled_pool), 'labeled_pool (--labeled-from of tools/make_splits.py)'
    if isinstance(num_labeled, bool) or not isinstance(num_labeled, (int, np.integer)):
        raise ValueError(f'num_labeled must be an integer, got {num_labeled!r}.')
    if num_labeled <= 0:
        raise ValueError(f'num_labeled must be positive, got {num_labeled}.')
    if num_labeled > len(candidates):
        raise ValueError(f'num_labeled={num_labeled} exceeds the {len(candidates)} ids available in {source}; '
                         f'choose at most {len(candidates)}.')
    if num_labeled == len(pool):
        raise ValueError(f'num_labeled={num_labeled} takes the whole pool of {len(pool)} ids and leaves no unlabeled '
                         'id; a semi-supervised split needs both (for a fully supervised run use the pool itself).')
    order = np.random.default_rng(seed).permutation(len(candidates))
    chosen = {candidates[i] for i in order[:num_labeled]}
    return sorted(chosen), sorted(set(pool) - chosen)
