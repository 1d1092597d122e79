"""tools/setup_env.sh: idempotent, and failures end in a clear message instead of a traceback."""
import os
import os.path as osp
import re
import sys
import time

from conftest import REPO_ROOT, clean_env, run

SETUP = osp.join(REPO_ROOT, 'tools', 'setup_env.sh')


def test_second_setup_is_fast_and_changes_nothing(tmp_path):
    start = time.monotonic()
    proc = run(['bash', SETUP], cwd=str(tmp_path))
    elapsed = time.monotonic() - start
    assert elapsed < 120, f'a repeated setup took {elapsed:.0f} s'
    for step in ('build tools', 'torch', 'mmcv', 'packages', 'mmseg_esl'):
        assert re.search(rf'\[setup_env\] {step}: .*(already|kept)', proc.stdout), proc.stdout
    assert '[setup_env] ready: torch' in proc.stdout


def test_missing_interpreter_is_a_clear_error(tmp_path):
    proc = run(['bash', SETUP], cwd=str(tmp_path), check=False,
               env=clean_env({'PYTHON': '/nonexistent/python3'}))
    assert proc.returncode == 1
    assert "ERROR: python interpreter '/nonexistent/python3' not found" in proc.stdout
    assert 'how to fix:' in proc.stdout and 'Traceback' not in proc.stdout


def test_unwritable_cache_is_a_clear_error(tmp_path):
    proc = run(['bash', SETUP], cwd=str(tmp_path), check=False,
               env=clean_env({'MMSEG_ESL_CACHE_DIR': '/proc/mmseg-esl-cache'}))
    assert proc.returncode == 1
    assert 'cannot create the cache directory /proc/mmseg-esl-cache' in proc.stdout
    assert 'MMSEG_ESL_CACHE_DIR' in proc.stdout


def test_unreachable_index_is_a_clear_error(tmp_path, python):
    """A pip failure shows the end of the step's log and a hint, not pip's traceback."""
    venv = tmp_path / 'venv'
    run([python, '-m', 'venv', str(venv)], cwd=str(tmp_path))
    offline = {'PYTHON': str(venv / 'bin' / 'python'), 'PIP_CONFIG_FILE': os.devnull, 'PIP_FIND_LINKS': '',
               'PIP_INDEX_URL': 'http://127.0.0.1:9/simple', 'PIP_EXTRA_INDEX_URL': '', 'PIP_RETRIES': '0',
               'PIP_TIMEOUT': '2', 'MMSEG_ESL_CACHE_DIR': str(tmp_path / 'cache')}
    proc = run(['bash', SETUP], cwd=str(tmp_path), check=False, env=clean_env(offline))
    assert proc.returncode == 1
    assert 'ERROR: could not install setuptools/wheel/ninja' in proc.stdout
    assert f'full log: {tmp_path}/cache/logs/build-tools.log' in proc.stdout
    assert 'how to fix: check that PyPI is reachable' in proc.stdout and 'Traceback' not in proc.stdout


def test_ci_runs_the_readme_test_command():
    readme = open(osp.join(REPO_ROOT, 'README.md')).read()
    ci = open(osp.join(REPO_ROOT, '.ci', 'run')).read()
    assert '```bash\nmake test\n```' in readme
    assert [line for line in ci.splitlines() if line and not line.startswith(('#', 'set ', 'cd '))] == ['make test']


def test_the_other_stack_in_this_environment_is_refused_before_anything_is_installed(tmp_path):
    """Both stacks install the modules mmcv, mmengine and mmseg: one environment holds one of them."""
    from importlib import metadata
    try:
        installed, other, dist = 'onedl', 'upstream', f'onedl-mmcv {metadata.version("onedl-mmcv")}'
    except metadata.PackageNotFoundError:
        installed, other, dist = 'upstream', 'onedl', f'mmcv {metadata.version("mmcv")}'
    proc = run(['bash', SETUP], cwd=str(tmp_path), check=False,
               env=clean_env({'MMSEG_STACK': other, 'PYTHON': sys.executable}))
    assert proc.returncode == 1
    assert f"ERROR: {dist} of the '{installed}' stack is installed in this environment" in proc.stdout
    assert 'use a separate environment' in proc.stdout and 'installing' not in proc.stdout


def test_an_unknown_stack_is_refused(tmp_path):
    proc = run(['bash', SETUP], cwd=str(tmp_path), check=False, env=clean_env({'MMSEG_STACK': 'openmmlab'}))
    assert proc.returncode == 1
    assert "MMSEG_STACK='openmmlab' is not a stack" in proc.stdout and 'MMSEG_STACK=onedl' in proc.stdout
