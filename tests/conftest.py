"""Fixtures shared by test files, and the cores shared out among pytest-xdist's workers."""
import os, subprocess, sys

import pytest
import torch

from test_player_browser import chromium
from test_project import copy_of_repo

# The longest tests (minutes each on 2 cores; the run prints its slowest), started first. Under pytest-xdist tests are
# then handed out one at a time, so no worker is left running a long one alone at the end.
LONGEST = ('test_project.py::test_readme_main_job', 'test_lessons.py::test_outputs_are_fresh[09_',
           'test_lessons.py::test_outputs_are_fresh[11_', 'test_lessons.py::test_outputs_are_fresh[08_',
           'test_lessons.py::test_outputs_are_fresh[07_', 'test_lessons.py::test_outputs_are_fresh[13_',
           'test_lessons.py::test_outputs_are_fresh[14_', 'test_lessons.py::test_outputs_are_fresh[15_', 'test_lessons.py::test_outputs_are_fresh[16_', 'test_install.py',
           'test_docs.py', 'test_pages_browser.py', 'test_bench.py', 'test_training.py::test_train_then_sample')

def pytest_configure(config):
    "Under pytest-xdist each worker, and every process it starts, gets its share of the cores, not all of them."
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 0))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ.setdefault('OMP_NUM_THREADS', str(threads))   # lessons, commands and benchmarks run in subprocesses
        torch.set_num_threads(threads)
    if getattr(config.option, 'numprocesses', None) and getattr(config.option, 'maxschedchunk', 0) is None:
        config.option.maxschedchunk = 1   # the controller hands out one test at a time, in the order below
    # A setup that takes a minute (a venv, the docs pre-render) is made once: the tests that share it (`xdist_group`)
    # run on one worker. Workers read their options from the command line, so the controller tells them in the environment.
    if getattr(config.option, 'numprocesses', None) and getattr(config.option, 'dist', None) == 'load':
        config.option.dist, os.environ['MINDDPM_TEST_GROUPS'] = 'loadgroup', '1'
    if os.environ.get('PYTEST_XDIST_WORKER') and os.environ.get('MINDDPM_TEST_GROUPS'):
        config.option.loadgroup = True   # the worker names each grouped test `id@group`, for the controller's scheduler

def pytest_collection_modifyitems(config, items):
    "The longest tests first (`LONGEST`, in that order), the rest as collected."
    rank = lambda item: next((i for i, key in enumerate(LONGEST) if key in item.nodeid), len(LONGEST))
    items.sort(key=rank)

PRE_RENDER = """
import nbdev.quarto as q
q._ensure_quarto = lambda: None   # Quarto renders on instructors' machines; everything before it runs here
q.nbdev_proc_nbs.__wrapped__(n_workers=2)
"""

@pytest.fixture(scope='session')
def proc(tmp_path_factory):
    "The `_proc` folder of processed notebooks that `nbdev_docs` hands to Quarto, made from a copy of the repo."
    copy = copy_of_repo(tmp_path_factory.mktemp('docs')/'repo')
    r = subprocess.run([sys.executable, '-c', PRE_RENDER], cwd=copy, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"docs pre-render failed:\n{r.stdout}\n{r.stderr}"
    return copy/'_proc'

@pytest.fixture(scope='session')
def browser() -> str:
    "A Chromium or Chrome to drive, found before any costly fixture runs: none skips the test, or fails it under CI."
    return chromium()
