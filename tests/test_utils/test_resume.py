"""use_checkpoint_seed: a resumed run takes the checkpoint's seed before the runner builds its data loaders."""
import torch
from mmengine.config import Config

from mmseg_esl.utils.resume import checkpoint_to_resume, use_checkpoint_seed


def write_checkpoint(path, seed):
    torch.save(dict(meta=dict(seed=seed, iter=4), state_dict={'w': torch.zeros(2)}), path)
    return str(path)


def test_resume_from_a_given_checkpoint_takes_its_seed(tmp_path):
    path = write_checkpoint(tmp_path / 'iter_4.pth', seed=1234)
    cfg = Config(dict(resume=True, load_from=path, work_dir=str(tmp_path), randomness=dict(seed=None)))
    assert use_checkpoint_seed(cfg) == 1234
    assert cfg.randomness.seed == 1234


def test_a_configured_seed_is_replaced_by_the_checkpoints(tmp_path):
    path = write_checkpoint(tmp_path / 'iter_4.pth', seed=7)
    cfg = Config(dict(resume=True, load_from=path, work_dir=str(tmp_path), randomness=dict(seed=0, deterministic=True)))
    assert use_checkpoint_seed(cfg) == 7
    assert cfg.randomness == dict(seed=7, deterministic=True)


def test_bare_resume_reads_the_work_dirs_latest_checkpoint(tmp_path):
    write_checkpoint(tmp_path / 'iter_8.pth', seed=99)
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_8.pth'))
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(tmp_path)))
    assert checkpoint_to_resume(cfg) == str(tmp_path / 'iter_8.pth')
    assert use_checkpoint_seed(cfg) == 99 and cfg.randomness.seed == 99


def test_nothing_changes_without_resume_or_without_a_checkpoint(tmp_path):
    path = write_checkpoint(tmp_path / 'iter_4.pth', seed=5)
    fine_tune = Config(dict(resume=False, load_from=path, work_dir=str(tmp_path), randomness=dict(seed=1)))
    assert use_checkpoint_seed(fine_tune) is None and fine_tune.randomness.seed == 1
    first_run = Config(dict(resume=True, load_from=None, work_dir=str(tmp_path / 'empty')))
    assert use_checkpoint_seed(first_run) is None and 'randomness' not in first_run
