"""Split-file readers and writer, checked on synthetic files and on the published splits in ../shared/splits."""
from __future__ import annotations

import os
import os.path as osp
import re
from typing import List

import pytest
from conftest import REPO_ROOT

from mmseg_esl.datasets import (
    SPLIT_FORMATS,
    SplitFileError,
    SplitFileNotFoundError,
    detect_split_format,
    draw_labeled,
    read_split,
    write_split,
)

# Published split files of UniMatch, U2PL and CPS; they live next to the repository, never inside it.
SHARED_SPLITS = osp.normpath(osp.join(REPO_ROOT, '..', 'shared', 'splits'))
_SKIP_REASON = (f'published split files not found at {SHARED_SPLITS}: they are test data kept outside the '
                'repository (see the split files of the UniMatch, U2PL and CPS repositories)')
needs_shared = pytest.mark.skipif(not osp.isdir(SHARED_SPLITS), reason=_SKIP_REASON)


def _shared_files() -> List[str]:
    """Paths (relative to SHARED_SPLITS) of every published split file, or [] without the folder."""
    found = []
    for root, _, files in os.walk(SHARED_SPLITS):
        found += [osp.relpath(osp.join(root, f), SHARED_SPLITS) for f in files if f.endswith('.txt')]
    return sorted(found)


def shared(*parts: str) -> str:
    return osp.join(SHARED_SPLITS, *parts)


def write_lines(path, lines: List[str], end: str = '\n') -> str:
    path.write_text(end.join(lines) + end, encoding='utf-8')
    return str(path)


# ---------------------------------------------------------------------------------------------------------------
# Each format, on one synthetic line
# ---------------------------------------------------------------------------------------------------------------
LINES = [
    ('plain', '2007_000032', '2007_000032'),
    ('plain', 'aachen/aachen_000000_000019', 'aachen/aachen_000000_000019'),
    ('unimatch_voc', 'JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png', '2007_000032'),
    ('unimatch_cityscapes', 'leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png '
     'gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png', 'aachen/aachen_000000_000019'),
    ('u2pl_cityscapes', 'leftImg8bit/val/lindau/lindau_000035_000019_leftImg8bit.png', 'lindau/lindau_000035_000019'),
    ('cps_cityscapes', '/images/train/jena_000078_000019.png\t/segmentation/train/jena_000078_000019_gtFine.png',
     'jena/jena_000078_000019'),
    ('cps_cityscapes', '/images/train_extra/muhlheim-ruhr_000000_000060.png\t'
     '/segmentation/train_extra/muhlheim-ruhr_000000_000060_gtCoarse.png', 'muhlheim-ruhr/muhlheim-ruhr_000000_000060'),
]


@pytest.mark.parametrize('fmt,line,expected', LINES, ids=[f'{f}-{i}' for i, (f, _, _) in enumerate(LINES)])
def test_each_format_reads_to_canonical_id(tmp_path, fmt, line, expected):
    path = write_lines(tmp_path / 'split.txt', [line])
    assert detect_split_format([line]) == fmt
    assert read_split(path) == [expected]


def test_split_formats_lists_every_format():
    assert set(SPLIT_FORMATS) == {f for f, _, _ in LINES}


def test_blank_lines_crlf_bom_and_trailing_whitespace_are_tolerated(tmp_path):
    path = tmp_path / 'split.txt'
    path.write_bytes('\ufeff2007_000032  \r\n\r\n   \r\n2007_000039\t\r\n2007_000063'.encode())
    assert read_split(str(path)) == ['2007_000032', '2007_000039', '2007_000063']


def test_write_split_round_trip_keeps_order(tmp_path):
    ids = ['b_2', 'aachen/aachen_000000_000019', 'a_1']
    path = str(tmp_path / 'sub' / 'dir' / 'split.txt')
    write_split(path, ids)
    assert read_split(path) == ids
    assert open(path).read() == 'b_2\naachen/aachen_000000_000019\na_1\n'


@pytest.mark.parametrize('ids,match', [([], 'empty'), (['a', 'a'], 'duplicate'), (['a b'], 'invalid'),
                                       (['x.jpg'], 'invalid')])
def test_write_split_rejects_what_read_split_would_not_read(tmp_path, ids, match):
    with pytest.raises(ValueError, match=match):
        write_split(str(tmp_path / 'split.txt'), ids)


# ---------------------------------------------------------------------------------------------------------------
# Errors: each says what is wrong, where, and how to fix it
# ---------------------------------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    path = str(tmp_path / 'nope' / 'labeled.txt')
    with pytest.raises(SplitFileNotFoundError) as info:
        read_split(path)
    message = str(info.value)
    assert path in message and 'UniMatch' in message and 'U2PL' in message and 'tools/make_splits.py' in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(SplitFileError, match='is a directory'):
        read_split(str(tmp_path))


@pytest.mark.parametrize('content', ['', '\n\n  \n'])
def test_empty_file(tmp_path, content):
    path = tmp_path / 'empty.txt'
    path.write_text(content)
    with pytest.raises(SplitFileError, match=re.escape(f'{path} is empty')):
        read_split(str(path))


@pytest.mark.parametrize('bad', ['2007_000039.jpg', 'JPEGImages/2007_000039.jpg', 'two ids', 'a/../b'])
def test_garbage_line_names_file_line_and_formats(tmp_path, bad):
    path = write_lines(tmp_path / 'split.txt', ['2007_000032', '', bad])
    with pytest.raises(SplitFileError) as info:
        read_split(path)
    message = str(info.value)
    assert f'{path}, line 3' in message and repr(bad) in message and 'matches no supported split format' in message
    assert all(name in message for name in SPLIT_FORMATS)


def test_duplicate_names_id_and_both_lines(tmp_path):
    path = write_lines(tmp_path / 'split.txt', ['2007_000032', '2007_000039', '', '2007_000032'])
    with pytest.raises(SplitFileError, match=r"line 4: duplicate id '2007_000032' \(already on line 1\)"):
        read_split(path)


def test_duplicate_after_normalisation(tmp_path):
    """The same sample from the train and the val folder is one canonical id: listed twice."""
    path = write_lines(tmp_path / 'split.txt', ['leftImg8bit/train/ulm/ulm_000001_000019_leftImg8bit.png',
                                               'leftImg8bit/val/ulm/ulm_000001_000019_leftImg8bit.png'])
    with pytest.raises(SplitFileError, match="line 2: duplicate id 'ulm/ulm_000001_000019'"):
        read_split(path)


def test_mixed_formats(tmp_path):
    path = write_lines(tmp_path / 'split.txt', ['JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png',
                                               '2007_000039'])
    with pytest.raises(SplitFileError, match=r"line 2: mixed formats: this line is 'plain'.*line 1 is 'unimatch_voc'"):
        read_split(path)
    with pytest.raises(SplitFileError, match='mixed formats'):
        detect_split_format(['2007_000039', 'JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png'])


@pytest.mark.parametrize('line,match', [
    ('JPEGImages/2007_000032.jpg SegmentationClass/2007_000039.png', 'different samples'),
    ('leftImg8bit/train/ulm/ulm_000001_000019_leftImg8bit.png '
     'gtFine/val/ulm/ulm_000001_000019_gtFine_labelTrainIds.png', 'different samples'),
    ('leftImg8bit/train/ulm/aachen_000001_000019_leftImg8bit.png', 'does not start with its city folder'),
    ('/images/train/jena_000078_000019.png\t/segmentation/train/jena_000079_000019_gtFine.png', 'different samples'),
])
def test_inconsistent_line(tmp_path, line, match):
    path = write_lines(tmp_path / 'split.txt', [line])
    with pytest.raises(SplitFileError, match=f'line 1: .*{match}'):
        read_split(path)


# ---------------------------------------------------------------------------------------------------------------
# draw_labeled
# ---------------------------------------------------------------------------------------------------------------
POOL = [f'img_{i:03d}' for i in range(50)]


def test_draw_labeled_is_deterministic_sorted_and_partitions_the_pool():
    labeled, unlabeled = draw_labeled(POOL, 10, 0)
    assert (labeled, unlabeled) == draw_labeled(POOL, 10, 0)
    assert (labeled, unlabeled) == draw_labeled(POOL[::-1], 10, 0), 'the draw must not depend on the line order'
    assert len(labeled) == 10 and len(unlabeled) == 40
    assert labeled == sorted(labeled) and unlabeled == sorted(unlabeled)
    assert sorted(labeled + unlabeled) == POOL
    assert draw_labeled(POOL, 10, 1)[0] != labeled


def test_draw_labeled_nested_for_one_seed():
    small, large = draw_labeled(POOL, 5, 3)[0], draw_labeled(POOL, 20, 3)[0]
    assert set(small) < set(large)


def test_draw_labeled_from_labeled_pool():
    fine = POOL[::5]
    labeled, unlabeled = draw_labeled(POOL, 4, 0, labeled_pool=fine)
    assert set(labeled) <= set(fine) and len(labeled) == 4
    assert set(unlabeled) == set(POOL) - set(labeled)
    assert draw_labeled(POOL, 10, 0, labeled_pool=fine)[0] == sorted(fine)


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_labeled=0), 'must be positive'),
    (dict(num_labeled=-3), 'must be positive'),
    (dict(num_labeled=51), 'exceeds the 50 ids available'),
    (dict(num_labeled=50), 'leaves no unlabeled'),
    (dict(num_labeled=11, labeled_pool=POOL[::5]), 'exceeds the 10 ids available in labeled_pool'),
    (dict(num_labeled=1, labeled_pool=['img_000', 'other']), "not in the pool of 50 ids, e.g. \\['other'\\]"),
    (dict(num_labeled=2.0), 'must be an integer'),
])
def test_draw_labeled_errors(kwargs, match):
    kwargs = dict(dict(pool=POOL, seed=0), **kwargs)
    with pytest.raises(ValueError, match=match):
        draw_labeled(**kwargs)


def test_draw_labeled_rejects_duplicates_in_pool():
    with pytest.raises(ValueError, match='duplicate'):
        draw_labeled(POOL + ['img_000'], 3, 0)


# ---------------------------------------------------------------------------------------------------------------
# The published splits
# ---------------------------------------------------------------------------------------------------------------
#: Expected format of each origin folder.
_EXPECTED_FORMAT = {('u2pl', 'pascal'): 'plain', ('cps', 'pascal_voc'): 'plain', ('unimatch', 'pascal'): 'unimatch_voc',
                    ('unimatch', 'cityscapes'): 'unimatch_cityscapes', ('u2pl', 'cityscapes'): 'u2pl_cityscapes',
                    ('cps', 'city'): 'cps_cityscapes'}
_SHARED_FILES = _shared_files()


@pytest.mark.parametrize('rel_path', _SHARED_FILES or [pytest.param(None, marks=needs_shared)],
                         ids=_SHARED_FILES or ['no-shared-splits'])
def test_every_published_split_is_read(rel_path):
    path = shared(rel_path)
    ids = read_split(path)
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    assert len(ids) == sum(1 for line in lines if line.strip())
    origin = tuple(rel_path.split(os.sep)[:2])
    assert detect_split_format(lines, source=path) == _EXPECTED_FORMAT[origin]
    if origin[1] in ('pascal', 'pascal_voc'):
        bad = [i for i in ids if not re.fullmatch(r'\d{4}_\d{6}', i)]
    else:
        bad = [i for i in ids
               if i.count('/') != 1 or '.' in i or not i.split('/')[1].startswith(i.split('/')[0] + '_')]
    assert not bad, f'non-canonical ids in {rel_path}: {bad[:5]}'


@needs_shared
def test_unimatch_and_u2pl_pascal_agree_after_normalisation():
    assert read_split(shared('unimatch/pascal/92/labeled.txt')) == read_split(shared('u2pl/pascal/92/labeled.txt'))
    assert (read_split(shared('unimatch/pascal/u2pl_1_16/labeled.txt'))
            == read_split(shared('u2pl/pascal/662/labeled.txt')))
    # UniMatch's 1_16 (CPS blender split) is CPS's own file
    assert (set(read_split(shared('unimatch/pascal/1_16/labeled.txt')))
            == set(read_split(shared('cps/pascal_voc/subset_train_aug/train_aug_labeled_1-16.txt'))))


@needs_shared
def test_classic_voc_protocol():
    train_aug = set(read_split(shared('unimatch/pascal/train_aug.txt')))
    fine = set(read_split(shared('u2pl/pascal/1464/labeled.txt')))
    labeled = set(read_split(shared('unimatch/pascal/92/labeled.txt')))
    unlabeled = set(read_split(shared('unimatch/pascal/92/unlabeled.txt')))
    assert len(train_aug) == 10582 and fine < train_aug
    assert labeled < fine and len(unlabeled) == 10490
    assert labeled | unlabeled == train_aug and not labeled & unlabeled
    # U2PL's blender 662 lies inside the fine set (U2PL issue #3)
    assert set(read_split(shared('u2pl/pascal/662/labeled.txt'))) < fine


@needs_shared
def test_cityscapes_splits_of_u2pl_and_cps_differ():
    u2pl = set(read_split(shared('u2pl/cityscapes/186/labeled.txt')))
    cps = set(read_split(shared('cps/city/config_new/subset_train/train_aug_labeled_1-16.txt')))
    unimatch = set(read_split(shared('unimatch/cityscapes/1_16/labeled.txt')))
    assert len(u2pl) == len(cps) == 186
    assert len(u2pl & cps) == 8
    assert unimatch == cps
    train = set(read_split(shared('cps/city/config_new/train.txt')))
    assert len(train) == 2975 and u2pl < train and cps < train


# ---------------------------------------------------------------------------------------------------------------
# ids with dots, ids written with their extension (issue 18, case 8)
# ---------------------------------------------------------------------------------------------------------------


def test_ids_with_dots_inside_a_name_are_read_and_written(tmp_path):
    ids = ['scene.0001', 'city.north/frame.0002_a', '2007_000032']
    path = write_lines(tmp_path / 'split.txt', ids)
    assert detect_split_format(ids) == 'plain' and read_split(path) == ids
    write_split(str(tmp_path / 'out.txt'), ids)
    assert read_split(str(tmp_path / 'out.txt')) == ids


@pytest.mark.parametrize('line,stem', [('0001.jpg', '0001'), ('scene.0001.PNG', 'scene.0001'),
                                       ('JPEGImages/2007_000039.jpeg', 'JPEGImages/2007_000039')])
def test_an_id_written_with_its_extension_gets_a_hint(tmp_path, line, stem):
    path = write_lines(tmp_path / 'split.txt', [line])
    with pytest.raises(SplitFileError, match='matches no supported split format') as info:
        read_split(path)
    assert f'write the id without its extension ({stem!r}; the dataset appends img_suffix' in str(info.value)


@pytest.mark.parametrize('bad', ['a/../b', '.hidden', 'trailing.', 'a..b'])
def test_dots_do_not_open_paths_outside_the_data_root(tmp_path, bad):
    with pytest.raises(SplitFileError, match='matches no supported split format'):
        read_split(write_lines(tmp_path / 'split.txt', [bad]))
