"""Fixtures shared by test files."""
import subprocess, sys

import pytest

from test_project import copy_of_repo

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
