"""tools/make_splits.py: its main() in-process (fast), and the command line itself in a subprocess."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os.path as osp
import re
import subprocess
import sys
from typing import List

import pytest
from conftest import REPO_ROOT, run

from mmseg_esl.datasets import read_split, write_split

SHARED_SPLITS = osp.normpath(osp.join(REPO_ROOT, '..', 'shared', 'splits'))
POOL = [f'2008_{i:06d}' for i in range(60)]
FINE = POOL[::4]  # 15 ids, the "finely annotated" subset of the pool


_spec = importlib.util.spec_from_file_location('make_splits_tool', osp.join(REPO_ROOT, 'tools', 'make_splits.py'))
TOOL = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(TOOL)


def make_splits(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs the tool's main() with ``args`` as a shell would (exit code and output as a subprocess gives them)."""
    out, code = io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            TOOL.main(list(args))
        except SystemExit as exit_:
            if isinstance(exit_.code, str):  # sys.exit('message') prints it and exits with 1
                out.write(exit_.code + '\n')
            code = exit_.code if isinstance(exit_.code, int) else (1 if exit_.code else 0)
    if check and code:
        pytest.fail(f'make_splits {" ".join(args)} exited with {code}:\n{out.getvalue()}')
    return subprocess.CompletedProcess(['make_splits.py', *args], code, out.getvalue())


@pytest.fixture
def pool_file(tmp_path) -> str:
    """The pool in UniMatch's two-column format (the tool reads any supported format)."""
    path = tmp_path / 'train_aug.txt'
    path.write_text(''.join(f'JPEGImages/{i}.jpg SegmentationClass/{i}.png\n' for i in POOL))
    return str(path)


def draw(pool_file: str, out_dir, *extra: str) -> List[List[str]]:
    make_splits('--train-list', pool_file, '--out-dir', str(out_dir), *extra)
    return [read_split(osp.join(out_dir, f'{name}.txt')) for name in ('labeled', 'unlabeled')]


def test_command_line_help_and_error():
    out = run([sys.executable, 'tools/make_splits.py', '--help'], cwd=REPO_ROOT).stdout
    assert '--train-list' in out and '--labeled-from' in out and 'default_rng' in out
    proc = run([sys.executable, 'tools/make_splits.py', '--train-list', 'nope.txt', '--num-labeled', '3',
                '--out-dir', 'out'], cwd=REPO_ROOT, check=False)
    assert proc.returncode == 1 and 'Split file not found' in proc.stdout and 'Traceback' not in proc.stdout


def test_same_seed_same_files_and_counts(pool_file, tmp_path):
    labeled, unlabeled = draw(pool_file, tmp_path / 'a', '--num-labeled', '12', '--seed', '3')
    draw(pool_file, tmp_path / 'b', '--num-labeled', '12', '--seed', '3')
    for name in ('labeled.txt', 'unlabeled.txt'):
        assert (tmp_path / 'a' / name).read_bytes() == (tmp_path / 'b' / name).read_bytes()
    assert len(labeled) == 12 and len(unlabeled) == 48
    assert labeled == sorted(labeled) and unlabeled == sorted(unlabeled)
    assert sorted(labeled + unlabeled) == POOL


def test_different_seed_different_draw(pool_file, tmp_path):
    first = draw(pool_file, tmp_path / 'a', '--num-labeled', '12', '--seed', '0')[0]
    second = draw(pool_file, tmp_path / 'b', '--num-labeled', '12', '--seed', '1')[0]
    assert first != second


def test_labeled_from(pool_file, tmp_path):
    fine = str(tmp_path / 'fine.txt')
    write_split(fine, FINE)
    labeled, unlabeled = draw(pool_file, tmp_path / 'out', '--num-labeled', '5', '--labeled-from', fine)
    assert len(labeled) == 5 and set(labeled) <= set(FINE)
    assert set(unlabeled) == set(POOL) - set(labeled) and len(unlabeled) == 55


@pytest.mark.parametrize('num,extra,message', [
    ('0', [], '--num-labeled must be positive'),
    ('-2', [], '--num-labeled must be positive'),
    ('61', [], 'exceeds the 60 ids available in the pool'),
    ('16', ['fine'], 'exceeds the 15 ids available in labeled_pool'),
])
def test_errors(pool_file, tmp_path, num, extra, message):
    if extra:
        write_split(str(tmp_path / 'fine.txt'), FINE)
        extra = ['--labeled-from', str(tmp_path / 'fine.txt')]
    proc = make_splits('--train-list', pool_file, '--num-labeled', num, '--out-dir', str(tmp_path / 'out'), *extra,
                       check=False)
    assert proc.returncode != 0 and message in proc.stdout
    assert not (tmp_path / 'out').exists()


def test_missing_train_list(tmp_path):
    missing = str(tmp_path / 'nope.txt')
    proc = make_splits('--train-list', missing, '--num-labeled', '3', '--out-dir', str(tmp_path / 'out'), check=False)
    assert proc.returncode == 1 and f'Split file not found: {missing}' in proc.stdout
    assert 'Traceback' not in proc.stdout


@pytest.mark.skipif(not osp.isdir(SHARED_SPLITS), reason=f'published split files not found at {SHARED_SPLITS}')
def test_classic_voc_protocol_on_published_files(tmp_path):
    """92 labeled ids from the 1,464 fine ones; unlabeled = the other 10,490 of train_aug, as UniMatch's split."""
    labeled, unlabeled = draw(osp.join(SHARED_SPLITS, 'unimatch', 'pascal', 'train_aug.txt'), tmp_path / 'out',
                              '--num-labeled', '92', '--labeled-from',
                              osp.join(SHARED_SPLITS, 'u2pl', 'pascal', '1464', 'labeled.txt'))
    assert len(labeled) == 92 and len(unlabeled) == 10490


def test_an_out_dir_that_is_a_file_is_an_error_without_traceback(tmp_path):
    pool = tmp_path / 'train.txt'
    pool.write_text('\n'.join(f'{i:04d}' for i in range(10)) + '\n')
    blocker = tmp_path / 'splits'
    blocker.write_text('x')
    proc = make_splits('--train-list', str(pool), '--num-labeled', '2', '--out-dir', str(blocker), check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stdout
    assert f'make_splits.py: error: cannot write the split files into --out-dir {blocker}' in proc.stdout
    assert blocker.read_text() == 'x'


def test_a_pool_with_dotted_ids_works_and_ids_with_extensions_get_the_hint(tmp_path):
    dotted = tmp_path / 'dotted.txt'
    dotted.write_text('\n'.join(f'scene.{i:04d}' for i in range(6)) + '\n')
    make_splits('--train-list', str(dotted), '--num-labeled', '2', '--out-dir', str(tmp_path / 'ok'))
    assert all(line.startswith('scene.') for line in (tmp_path / 'ok' / 'labeled.txt').read_text().split())
    with_ext = tmp_path / 'with_ext.txt'
    with_ext.write_text('0001.jpg\n0002.jpg\n')
    proc = make_splits('--train-list', str(with_ext), '--num-labeled', '1', '--out-dir', str(tmp_path / 'no'),
                       check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stdout
    assert "write the id without its extension ('0001'" in proc.stdout


def _own_dataset(tmp_path) -> str:
    from mmseg_esl.testing.own_dataset import make_own_dataset
    return make_own_dataset(str(tmp_path / 'mine'), num_images=12, num_masked=8, sizes=((20, 24),))


def test_own_folders_give_val_labeled_and_unlabeled_files(tmp_path):
    root = _own_dataset(tmp_path)
    out = make_splits('--data-root', root, '--img-dir', 'images', '--img-suffix', '.png', '--ann-dir', 'masks',
                      '--seg-map-suffix', '_mask.png', '--num-labeled', '3', '--num-val', '4', '--out-dir',
                      str(tmp_path / 'splits')).stdout
    assert '12 images' in out and 'val.txt: 4 ids' in out and 'unlabeled.txt: 5 ids' in out
    val, labeled, unlabeled = (read_split(str(tmp_path / 'splits' / f'{n}.txt')) for n in ('val', 'labeled',
                                                                                           'unlabeled'))
    masked = {f'plot_{i:04d}' for i in range(8)}
    assert set(val) | set(labeled) <= masked and len(set(val + labeled + unlabeled)) == 12


@pytest.mark.parametrize('args, message', [
    (['--ann-dir', 'masks', '--seg-map-suffix', '_mask.png'], '--img-dir needs --ann-dir'),
    (['--ann-dir', 'masks', '--num-val', '2', '--labeled-from', 'x.txt'], '--labeled-from works with --train-list'),
    (['--ann-dir', 'masks', '--num-val', '2', '--img-suffix', '.png'], 'pass --seg-map-suffix _mask.png'),
    (['--ann-dir', 'masks', '--num-val', '2', '--seg-map-suffix', '_mask.png'], "No image .* ends with '.jpg'"),
])
def test_own_folder_mistakes_are_named(tmp_path, args, message):
    root = _own_dataset(tmp_path)
    proc = make_splits('--data-root', root, '--img-dir', 'images', '--num-labeled', '3', '--out-dir',
                       str(tmp_path / 'splits'), *args, check=False)
    assert proc.returncode != 0 and re.search(message, proc.stdout), proc.stdout
    assert 'Traceback' not in proc.stdout
