"""tools/make_config.py: the common variations of a user's own dataset, handled or refused with a clear message.

The tool's main() runs in-process (as a shell would run it: exit code and output), on small generated datasets.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os.path as osp
import subprocess

import numpy as np
from conftest import REPO_ROOT
from mmengine.config import Config
from PIL import Image

from mmseg_esl.datasets import folder_splits, write_split
from mmseg_esl.testing.own_dataset import make_own_dataset

_spec = importlib.util.spec_from_file_location('make_config_tool', osp.join(REPO_ROOT, 'tools', 'make_config.py'))
TOOL = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(TOOL)


def make_config(*args: str) -> subprocess.CompletedProcess:
    out, code = io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            TOOL.main(list(args))
        except SystemExit as exit_:
            if isinstance(exit_.code, str):
                out.write(exit_.code + '\n')
            code = exit_.code if isinstance(exit_.code, int) else (1 if exit_.code else 0)
    return subprocess.CompletedProcess(['make_config.py', *args], code, out.getvalue())


def dataset(tmp_path, **kwargs) -> str:
    root = make_own_dataset(str(tmp_path / 'mine'), num_images=16, num_masked=10, **kwargs)
    suffix = kwargs.get('img_suffix', '.png')
    splits = folder_splits(img_dir=osp.join(root, 'images'), img_suffix=suffix, ann_dir=osp.join(root, 'masks'),
                           seg_map_suffix='_mask.png', num_labeled=4, num_val=3)
    for name in ('labeled', 'unlabeled', 'val'):
        write_split(osp.join(root, 'splits', f'{name}.txt'), getattr(splits, name))
    return root


def args(root: str, out: str, *extra: str) -> list:
    return ['--data-root', root, '--seg-map-suffix', '_mask.png', '--model', 'effnet-lite0', '--crop-size', '64',
            '--iters', '16', '--out', out, *extra]


def test_jpg_images_class_names_on_the_command_line_and_0_1_masks_for_two_classes(tmp_path):
    root = dataset(tmp_path, img_suffix='.jpg', binary_255=True)
    for path in sorted((tmp_path / 'mine' / 'masks').iterdir()):
        label = np.array(Image.open(path))
        Image.fromarray((label == 255).astype(np.uint8)).save(path)  # 0/255 -> 0/1: the right encoding
    out = str(tmp_path / 'cfg' / 'esl.py')
    proc = make_config(*args(root, out, '--classes', 'background', 'weed'))
    assert proc.returncode == 0, proc.stdout
    assert 'effnet-lite0 on 2 classes; 4 labeled, 9 unlabeled, 3 validation images' in proc.stdout
    assert 'checked: 16 images and 7 masks read without a problem' in proc.stdout
    assert 'weed' in proc.stdout and 'no labeled pixel' not in proc.stdout
    cfg = Config.fromfile(out)
    assert cfg.model.segmentor.decode_head.num_classes == 2
    assert cfg.train_dataloader.dataset.datasets[0].img_suffix == '.jpg'


def test_binary_masks_saved_as_0_255_are_refused_with_the_conversion(tmp_path):
    root = dataset(tmp_path, binary_255=True)
    proc = make_config(*args(root, str(tmp_path / 'esl.py'), '--img-suffix', '.png', '--classes-file',
                             osp.join(root, 'classes.txt')))
    assert proc.returncode == 1
    assert 'was written, but it does not fit the data' in proc.stdout
    assert 'Binary masks saved as 0/255' in proc.stdout and 'label[label == 255] = 1' in proc.stdout
    assert 'Nothing was written' not in proc.stdout and 'Traceback' not in proc.stdout


def test_a_class_file_with_too_few_names_is_refused_by_the_mask_values(tmp_path):
    root = dataset(tmp_path)
    names = tmp_path / 'three.txt'
    names.write_text('soil\nstone\nleaf\n')  # the masks hold 0..3
    proc = make_config(*args(root, str(tmp_path / 'esl.py'), '--img-suffix', '.png', '--classes-file', str(names)))
    assert proc.returncode == 1 and 'does not fit the data' in proc.stdout
    assert '_mask.png has values [3] outside [0, 3)' in proc.stdout
    assert f'3 classes (from {names})' in proc.stdout and '--check off skips' in proc.stdout


def test_an_existing_config_is_kept_unless_forced_and_missing_splits_are_named(tmp_path):
    root = dataset(tmp_path)
    out = tmp_path / 'esl.py'
    out.write_text('# mine\n')
    common = args(root, str(out), '--img-suffix', '.png', '--classes-file', osp.join(root, 'classes.txt'),
                  '--check', 'off')
    proc = make_config(*common)
    assert proc.returncode == 1 and 'exists; pass --force' in proc.stdout and out.read_text() == '# mine\n'
    assert make_config(*common, '--force').returncode == 0 and out.read_text() != '# mine\n'
    proc = make_config(*common, '--force', '--splits', 'nowhere')
    assert proc.returncode == 1 and 'the labeled split' in proc.stdout and 'nowhere' in proc.stdout
