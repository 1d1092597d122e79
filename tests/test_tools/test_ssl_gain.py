"""tools/benchmarks/ssl_gain.py: the summary table and the markdown section it (re)writes."""
import importlib.util
import os.path as osp

import pytest
from conftest import REPO_ROOT


@pytest.fixture(scope='module')
def ssl_gain():
    path = osp.join(REPO_ROOT, 'tools', 'benchmarks', 'ssl_gain.py')
    spec = importlib.util.spec_from_file_location('ssl_gain', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(name, seed, miou, seconds=60.0):
    return dict(name=name, seed=seed, metrics={} if miou is None else dict(mIoU=miou), seconds=seconds)


def test_summary_is_mean_and_sample_std_over_seeds(ssl_gain):
    runs = [run('Sup', 0, 50.0), run('Sup', 1, 52.0), run('Sup', 2, 54.0), run('ESL', 0, 60.0, 120),
            run('ESL', 1, None, 120)]
    table = ssl_gain.summarise(runs, ['Sup', 'ESL'], 3)
    assert '| Sup | 52.00 ± 2.00 | 50.00, 52.00, 54.00 | 1.0 min |' in table  # sample std of 50, 52, 54 is 2
    assert '| ESL | 60.00 ± 0.00 | 60.00, failed | 2.0 min |' in table


def test_markdown_section_is_replaced_in_place(ssl_gain, tmp_path):
    path = str(tmp_path / 'benchmarks.md')
    with open(path, 'w') as f:
        f.write('# Benchmarks\n\nintro\n')
    ssl_gain.write_markdown(path, 'first')
    ssl_gain.write_markdown(path, 'second')
    text = open(path).read()
    assert text.count(ssl_gain.START) == 1 and 'second' in text and 'first' not in text
    assert text.startswith('# Benchmarks\n\nintro\n')
