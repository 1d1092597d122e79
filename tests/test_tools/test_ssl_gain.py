"""tools/benchmarks/ssl_gain.py: paired statistics, the tables, derived configs for any dataset, skipping runs."""
import importlib.util
import json
import math
import os.path as osp

import pytest
from conftest import REPO_ROOT
from mmengine.config import Config

from mmseg_esl.utils.experiment import DEMO_METHODS, derive_config


@pytest.fixture(scope='module')
def ssl_gain():
    path = osp.join(REPO_ROOT, 'tools', 'benchmarks', 'ssl_gain.py')
    spec = importlib.util.spec_from_file_location('ssl_gain', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(name, seed, miou, seconds=60.0, teacher=None, student=None, history=None):
    final = {} if miou is None else dict(mIoU=miou, step=100.0)
    if teacher is not None:
        final.update({'teacher/mIoU': teacher, 'student/mIoU': student})
    return dict(name=name, seed=seed, seconds=seconds, max_iters=100, returncode=0,
                history=history if history is not None else ([final] if final else []))


def test_paired_interval_by_hand(ssl_gain):
    a, b = {0: 60.0, 1: 62.0, 2: 61.0}, {0: 55.0, 1: 58.0, 2: 59.0, 3: 70.0}
    stats = ssl_gain.paired_interval(a, b)  # differences 5, 4, 2 over the common seeds
    assert stats['n'] == 3 and stats['diffs'] == [5.0, 4.0, 2.0]
    assert stats['mean'] == pytest.approx(11 / 3)
    sd = math.sqrt(((5 - 11 / 3) ** 2 + (4 - 11 / 3) ** 2 + (2 - 11 / 3) ** 2) / 2)
    assert stats['std'] == pytest.approx(sd)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert stats['low'] == pytest.approx(11 / 3 - half) and stats['high'] == pytest.approx(11 / 3 + half)
    assert ssl_gain.paired_interval({0: 1.0}, {1: 2.0}) is None
    assert math.isnan(ssl_gain.paired_interval({0: 1.0}, {0: 0.5})['low'])  # one pair: no interval


def test_teacher_lag_after_the_first_quarter(ssl_gain):
    history = [{'step': 25.0, 'teacher/mIoU': 10.0, 'student/mIoU': 30.0},   # the first quarter: not counted
               {'step': 50.0, 'teacher/mIoU': 40.0, 'student/mIoU': 43.0},
               {'step': 100.0, 'teacher/mIoU': 61.0, 'student/mIoU': 60.0}]
    assert ssl_gain.teacher_lag(history, 100) == (pytest.approx(1.0), pytest.approx(3.0))
    assert ssl_gain.teacher_lag([{'step': 100.0, 'mIoU': 5.0}], 100) == (None, None)


def test_summary_tables(ssl_gain):
    runs = [run('Sup', 0, 50.0), run('Sup', 1, 52.0), run('Sup', 2, 54.0),
            run('ESL', 0, 60.0, 120, teacher=60.0, student=59.0), run('ESL', 1, 58.0, 120, teacher=58.0, student=57.0),
            run('ESL', 2, None, 120),
            run('Full', 0, 70.0), run('Full', 1, 72.0), run('Full', 2, 74.0)]
    table = ssl_gain.summarise(runs, ['Sup', 'ESL', 'Full'])
    assert '| Sup | 52.00 ± 2.00 | 50.00, 52.00, 54.00 | – | 1.0 min |' in table  # sample std of 50, 52, 54 is 2
    assert '| ESL | 59.00 ± 1.41 | 60.00, 58.00, failed | 59.00 / 58.00 | 2.0 min |' in table
    assert '| ESL − Sup | +8.00 | 2.83 | 2 |' in table  # seeds 0 and 1: differences 10 and 6
    # Gap Sup -> Full = 72 - 52 = 20; ESL closes (59 - 52) / 20 = 35 %.
    assert 'Sup → Full gap: 20.00 mIoU; fraction closed (from the means): ESL 35 %.' in table
    assert '- ESL: end +1.00, +1.00; worst trail after the first quarter -1.00 mIoU' in table


def test_markdown_section_is_replaced_in_place(ssl_gain, tmp_path):
    path = str(tmp_path / 'benchmarks.md')
    with open(path, 'w') as f:
        f.write('# Benchmarks\n\nintro\n')
    ssl_gain.write_markdown(path, 'first')
    ssl_gain.write_markdown(path, 'second')
    ssl_gain.write_markdown(path, 'dev', name='dev_runs')
    text = open(path).read()
    assert text.count('<!-- ssl_gain:start -->') == 1 and 'second' in text and 'first' not in text
    assert '<!-- dev_runs:start -->\ndev\n<!-- dev_runs:end -->' in text
    assert text.startswith('# Benchmarks\n\nintro\n')


def test_derived_config_moves_every_method_to_another_dataset(tmp_path):
    splits = dict(labeled='s/l.txt', unlabeled='s/u.txt', val='s/v.txt', train='/abs/all.txt')
    for name, config in DEMO_METHODS.items():
        cfg = derive_config(osp.join(REPO_ROOT, config), data_root='/data/mine', splits=splits, seed=7,
                            classes=['sky', 'road', 'car'], img_dir='images', ann_dir='masks', img_suffix='.png',
                            seg_map_suffix='_mask.png', iters=80, validations=4, options=['model.test_cfg.mode=whole'])
        path = str(tmp_path / f'{name}.py')
        with open(path, 'w') as f:
            f.write(cfg.pretty_text)
        loaded = Config.fromfile(path)  # the written config is what trains
        assert loaded.randomness.seed == 7 and loaded.train_cfg.max_iters == 80 and loaded.train_cfg.val_interval == 20
        assert loaded.param_scheduler[0].end == 80 and loaded.default_hooks.checkpoint.interval == 80
        assert loaded.val_dataloader.dataset.ann_file == 's/v.txt'
        assert loaded.val_dataloader.dataset.data_root == '/data/mine'
        assert tuple(loaded.val_dataloader.dataset.metainfo.classes) == ('sky', 'road', 'car')
        assert loaded.val_dataloader.dataset.data_prefix == dict(img_path='images', seg_map_path='masks')
        assert loaded.val_dataloader.dataset.seg_map_suffix == '_mask.png'
        segmentor = loaded.model if name in ('Sup', 'Full') else loaded.model.segmentor
        assert segmentor.decode_head.num_classes == 3
        train = loaded.train_dataloader.dataset
        if name == 'Sup':
            assert train.ann_file == 's/l.txt'
        elif name == 'Full':
            assert train.ann_file == '/abs/all.txt'
        else:
            assert [d.split_file for d in train.datasets] == ['s/l.txt', 's/u.txt']
            assert loaded.model.test_cfg.mode == 'whole'
            # The supervised-only phase keeps its share of the run: 125 of 1000 -> 10 of 80.
            assert loaded.custom_hooks[0].type == 'EMATeacherHook' and loaded.custom_hooks[0].sup_only_iters == 10
        if name == 'ESL':
            assert loaded.custom_hooks[1].dataloader.dataset.split_file == 's/l.txt'  # K-means on the labeled set


def fake_sup_runs(ssl_gain, tmp_path, monkeypatch):
    """A one-id dataset and a fake training (mIoU 42) for Sup: ``(data args, names of the trained runs)``."""
    data = tmp_path / 'data'
    (data / 'sets').mkdir(parents=True)
    for split in ('l', 'u', 'v'):
        (data / 'sets' / f'{split}.txt').write_text('a\n')
    args = ['--seeds', '1', '--methods', 'Sup', '--data-root', str(data), '--labeled', 'sets/l.txt',
            '--unlabeled', 'sets/u.txt', '--val', 'sets/v.txt']
    trained = []

    def fake_training(name, config, work_dir, **kwargs):
        trained.append(name)
        result = run(name, 0, 42.0)
        return type('R', (), {'to_dict': lambda self: dict(result, log_file='log', config=config)})()

    monkeypatch.setattr(ssl_gain, 'run_training', fake_training)
    monkeypatch.setattr(ssl_gain, 'val_history', lambda work_dir: [dict(mIoU=42.0, step=10.0)])
    return args, trained


def test_finished_runs_are_reused_and_changed_ones_trained_again(ssl_gain, tmp_path, monkeypatch, capsys):
    data_args, trained = fake_sup_runs(ssl_gain, tmp_path, monkeypatch)
    args = data_args + ['--work-dir', str(tmp_path / 'work'), '--iters', '10', '--json', '', '--markdown', '']
    assert ssl_gain.main(args) == 0
    assert trained == ['Sup']
    saved = json.load(open(tmp_path / 'work' / 'Sup_seed0' / 'result.json'))
    assert saved['config_sha256'] and saved['history'] == [dict(mIoU=42.0, step=10.0)]
    assert ssl_gain.main(args) == 0
    assert trained == ['Sup'] and 'Sup seed 0: finished before, mIoU 42.00' in capsys.readouterr().out
    assert ssl_gain.main(args[:-6] + ['--iters', '20', '--json', '', '--markdown', '']) == 0
    assert trained == ['Sup', 'Sup']  # another schedule: a new run


def test_bad_arguments_are_refused(ssl_gain, tmp_path, capsys):
    with pytest.raises(SystemExit):
        ssl_gain.parse_args(['--seeds', '0'])
    assert '--seeds must be >= 1, got 0' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ssl_gain.parse_args(['--data-root', str(tmp_path), '--labeled', 'nope.txt'])
    assert '--labeled nope.txt: no such file under --data-root' in capsys.readouterr().err


def test_results_dir_lets_a_fresh_work_dir_reuse_the_runs(ssl_gain, tmp_path, monkeypatch):
    """--results-dir: result.json lives apart from the work dir, so another checkout / work dir reuses it."""
    data_args, trained = fake_sup_runs(ssl_gain, tmp_path, monkeypatch)
    common = data_args + ['--iters', '10', '--json', '', '--markdown', '', '--results-dir', str(tmp_path / 'kept')]
    assert ssl_gain.main(common + ['--work-dir', str(tmp_path / 'work_a')]) == 0
    assert (tmp_path / 'kept' / 'Sup_seed0' / 'result.json').is_file()
    assert not (tmp_path / 'work_a' / 'Sup_seed0' / 'result.json').exists()
    assert ssl_gain.main(common + ['--work-dir', str(tmp_path / 'work_b')]) == 0
    assert len(trained) == 1  # the second work dir reused the kept result


def test_config_digest_ignores_where_the_checkout_lies(ssl_gain):
    text = f"data_root = '{ssl_gain.REPO_ROOT}/data/esl_demo'"
    assert ssl_gain.config_digest(text) == ssl_gain.config_digest("data_root = '<repo>/data/esl_demo'")
