"""use_checkpoint_seed: a resumed run takes the checkpoint's seed before the runner builds its data loaders;
resolve_resume: which file it resumes from, and a clear error when that file cannot be read."""
import pytest
import torch
from mmengine.config import Config

from mmseg_esl.utils import InputConfigError
from mmseg_esl.utils.resume import checkpoint_to_resume, resolve_resume, use_checkpoint_seed


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


# ------------------------------------------------- resolve_resume: the file a resumed run starts from (issue 18)


def test_bare_resume_in_a_copied_work_dir_uses_the_copy_not_the_original(tmp_path):
    import shutil
    original = tmp_path / 'work'
    original.mkdir()
    write_checkpoint(original / 'iter_2.pth', seed=3)
    (original / 'last_checkpoint').write_text(str(original / 'iter_2.pth'))  # absolute, as mmengine writes it
    copy = tmp_path / 'copy'
    shutil.copytree(original, copy)
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(copy)))
    assert resolve_resume(cfg) == str(copy / 'iter_2.pth') == cfg.load_from


def test_bare_resume_in_a_moved_work_dir_finds_its_checkpoint(tmp_path):
    original = tmp_path / 'work'
    original.mkdir()
    write_checkpoint(original / 'iter_2.pth', seed=3)
    (original / 'last_checkpoint').write_text(str(original / 'iter_2.pth'))
    moved = tmp_path / 'moved'
    original.rename(moved)
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(moved)))
    assert resolve_resume(cfg) == str(moved / 'iter_2.pth')
    assert use_checkpoint_seed(cfg) == 3


def test_bare_resume_whose_recorded_checkpoint_is_gone_is_refused(tmp_path):
    (tmp_path / 'last_checkpoint').write_text('/elsewhere/iter_6.pth')
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(tmp_path)))
    with pytest.raises(InputConfigError, match=r'names /elsewhere/iter_6.pth, but iter_6.pth is not in the work dir'):
        resolve_resume(cfg)


def test_resume_from_a_missing_or_truncated_checkpoint_is_refused(tmp_path):
    missing = Config(dict(resume=True, load_from=str(tmp_path / 'iter_9.pth'), work_dir=str(tmp_path)))
    with pytest.raises(InputConfigError, match=r'iter_9.pth: no such file'):
        resolve_resume(missing)
    whole = write_checkpoint(tmp_path / 'iter_4.pth', seed=1)
    truncated = tmp_path / 'iter_5.pth'
    truncated.write_bytes(open(whole, 'rb').read()[:200])  # what kill -9 during a save leaves
    cfg = Config(dict(resume=True, load_from=str(truncated), work_dir=str(tmp_path)))
    with pytest.raises(InputConfigError, match=r'cannot be read .*truncated or not a checkpoint'):
        resolve_resume(cfg)


def test_resolve_resume_changes_nothing_without_resume_or_before_the_first_save(tmp_path):
    assert resolve_resume(Config(dict(resume=False, load_from='any.pth', work_dir=str(tmp_path)))) is None
    first_run = Config(dict(resume=True, load_from=None, work_dir=str(tmp_path / 'new')))
    assert resolve_resume(first_run) is None and first_run.load_from is None


def test_an_empty_last_checkpoint_resumes_from_the_newest_checkpoint_and_stale_temporaries_go(tmp_path):
    for it in (2, 10, 9):
        write_checkpoint(tmp_path / f'iter_{it}.pth', seed=it)
    (tmp_path / 'last_checkpoint').write_text('')  # killed while mmengine wrote it
    (tmp_path / '.iter_11.pth.x1y2.tmp').write_bytes(b'half')  # killed while saving iteration 11
    cfg = Config(dict(resume=True, load_from=None, work_dir=str(tmp_path)))
    assert resolve_resume(cfg) == str(tmp_path / 'iter_10.pth')
    assert not (tmp_path / '.iter_11.pth.x1y2.tmp').exists()
