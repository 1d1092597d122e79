"""Issue 18 through the tools: the data and command-line mistakes users make stop ``tools/train.py`` with one
clear message (exit code 1, no traceback) before anything is written, or give a warning where the input can be
deliberate. The checks themselves are tested case by case in ``tests/test_utils/test_preflight.py`` and
``tests/test_utils/test_resume.py``; these tests check what the user sees."""
import os.path as osp

import pytest
import torch
from conftest import run, tiny_data_options
from test_bad_input import ESL_CONFIG, TOOLS, tool, work_dir_args

from mmseg_esl.testing import make_tiny_voc


@pytest.fixture
def data(tmp_path) -> dict:
    root = str(tmp_path / 'tiny')
    return dict(root=root, ids=make_tiny_voc(root, num_train=8, num_val=4, seed=0))


def train_refused(python: str, data: dict, tmp_path, *args: str, options=()) -> str:
    return tool(python, 'train.py', ESL_CONFIG, *args, '--cfg-options',
                *tiny_data_options(data['root'], semi=True), *options, cwd=str(tmp_path))


@pytest.mark.slow
def test_train_refuses_a_negative_contrastive_weight(data, tmp_path, python):
    out = train_refused(python, data, tmp_path, *work_dir_args(tmp_path),
                        options=['model.semi_train_cfg.loss_contrast.loss_weight=-0.1'])
    assert 'InputConfigError' in out and 'model.semi_train_cfg.loss_contrast.loss_weight=-0.1' in out
    assert not osp.exists(tmp_path / 'work')


@pytest.mark.slow
def test_train_refuses_an_unwritable_work_dir_before_scanning_the_data(data, tmp_path, python):
    blocker = tmp_path / 'work'
    blocker.write_text('not a folder')
    out = train_refused(python, data, tmp_path, '--work-dir', str(blocker))
    assert f'The work dir {blocker} is a file. Pass another --work-dir' in out
    assert 'Pre-flight check' not in out  # refused before the data scan
    assert blocker.read_text() == 'not a folder'


@pytest.mark.slow
def test_train_refuses_a_truncated_checkpoint_to_resume_from(data, tmp_path, python):
    checkpoint = tmp_path / 'iter_3.pth'
    torch.save(dict(meta=dict(seed=0), state_dict={'w': torch.zeros(1000)}), checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:300])  # what kill -9 during a save used to leave
    out = train_refused(python, data, tmp_path, *work_dir_args(tmp_path), '--resume', str(checkpoint))
    assert f'The checkpoint {checkpoint} cannot be read' in out and 'truncated or not a checkpoint' in out
    assert not osp.exists(tmp_path / 'work')


@pytest.mark.slow
def test_train_warns_about_an_image_in_both_splits(data, tmp_path, python):
    overlap = data['ids']['labeled'][0]
    with open(osp.join(data['root'], 'ImageSets', 'Segmentation', 'unlabeled.txt'), 'a') as f:
        f.write(f'{overlap}\n')
    broken = osp.join(data['root'], 'JPEGImages', f'{data["ids"]["unlabeled"][2]}.jpg')
    open(broken, 'wb').close()  # stops the run after the warning, so that the test does not train
    out = train_refused(python, data, tmp_path, *work_dir_args(tmp_path))
    assert '1 image(s) are in both the labeled and the unlabeled training split' in out and f'{overlap}.jpg' in out
    assert 'DataFileError' in out


@pytest.mark.slow
def test_train_drops_rgb_label_maps_of_the_unlabeled_set_instead_of_crashing(data, tmp_path, python):
    """Unlabeled label maps only feed the logged pseudo-label accuracy: colour maps must not stop the run."""
    import numpy as np
    from PIL import Image
    for sample_id in data['ids']['unlabeled']:
        path = osp.join(data['root'], 'SegmentationClass', f'{sample_id}.png')
        Image.fromarray(np.stack([np.array(Image.open(path))] * 3, axis=-1)).save(path)  # (H, W, 3)
    work = tmp_path / 'work'
    proc = run([python, osp.join(TOOLS, 'train.py'), ESL_CONFIG, '--work-dir', str(work), '--cfg-options',
                *tiny_data_options(data['root'], semi=True)], cwd=str(tmp_path))
    assert 'has shape' in proc.stdout and 'not (H, W)' in proc.stdout and 'it is dropped' in proc.stdout
    assert osp.isfile(work / 'iter_2.pth')


@pytest.mark.slow
def test_train_refuses_binary_masks_saved_as_0_255_even_for_a_supervised_config(data, tmp_path, python):
    import numpy as np
    from PIL import Image
    from test_bad_input import PLAIN_CONFIG
    for sample_id in data['ids']['train']:
        path = osp.join(data['root'], 'SegmentationClass', f'{sample_id}.png')
        label = np.array(Image.open(path))
        label[:, : label.shape[1] // 2] = 1
        Image.fromarray(np.where(label > 0, 255, 0).astype(np.uint8)).save(path)
    out = tool(python, 'train.py', PLAIN_CONFIG, *work_dir_args(tmp_path), '--cfg-options',
               *tiny_data_options(data['root']), cwd=str(tmp_path))
    assert 'DataFileError: The labeled training set cannot teach every class' in out
    assert 'Binary masks saved as 0/255' in out and '--allow-missing-classes' in out
    assert not osp.exists(tmp_path / 'work')


@pytest.mark.slow
def test_train_refuses_a_sampler_that_lays_out_the_batch_otherwise_than_the_model_reads_it(data, tmp_path, python):
    """``cutmix_partners=False`` with ``cutmix.partner='extra'``: half of the unlabeled images would silently be
    used as partners only (issue 17)."""
    from mmengine.config import Config
    sampler = Config.fromfile(ESL_CONFIG).train_dataloader.sampler
    out = train_refused(python, data, tmp_path, *work_dir_args(tmp_path), options=[
        'train_dataloader.sampler.cutmix_partners=False',
        f'train_dataloader.batch_size={sampler.num_labeled + sampler.num_unlabeled}'])
    assert 'InputConfigError' in out and 'train_dataloader.sampler.cutmix_partners=False' in out
    assert 'half of the unlabeled images would be used only as partners' in out
    assert not osp.exists(tmp_path / 'work')


@pytest.mark.slow
def test_bare_resume_in_a_copied_work_dir_continues_from_the_copy(data, tmp_path, python):
    """mmengine followed the absolute path in last_checkpoint: a copy silently resumed from the original."""
    import shutil
    options = [*tiny_data_options(data['root'], semi=True), 'default_hooks.checkpoint.interval=1']
    original, copy = tmp_path / 'original', tmp_path / 'copy'
    run([python, osp.join(TOOLS, 'train.py'), ESL_CONFIG, '--work-dir', str(original), '--cfg-options', *options],
        cwd=str(tmp_path))
    shutil.copytree(original, copy)
    (original / 'iter_2.pth').write_bytes(b'the original must not be read')
    proc = run([python, osp.join(TOOLS, 'train.py'), ESL_CONFIG, '--work-dir', str(copy), '--resume',
                '--cfg-options', *options, 'train_cfg.max_iters=3'], cwd=str(tmp_path))
    assert f'Resuming from {copy / "iter_2.pth"}' in proc.stdout
    assert osp.isfile(copy / 'iter_3.pth')
    with open(copy / 'last_checkpoint') as f:
        assert f.read().strip() == str(copy / 'iter_3.pth')


@pytest.mark.slow
def test_train_names_jpeg_label_maps_as_the_cause(data, tmp_path, python):
    import numpy as np
    from PIL import Image
    for sample_id in data['ids']['labeled']:
        label = np.array(Image.open(osp.join(data['root'], 'SegmentationClass', f'{sample_id}.png')))
        label[: label.shape[0] // 2] = 255
        Image.fromarray(label).save(osp.join(data['root'], 'SegmentationClass', f'{sample_id}.jpg'), quality=75)
    out = train_refused(python, data, tmp_path, *work_dir_args(tmp_path),
                        options=["train_dataloader.dataset.datasets.0.seg_map_suffix='.jpg'"])
    assert 'DataFileError' in out and 'it is a JPEG file: JPEG compression is lossy' in out
    assert not osp.exists(tmp_path / 'work')
