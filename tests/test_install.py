"""What `pip install minddpm` users and Colab students get: a wheel that carries the bundled data once,
and a package that works from any folder in a fresh virtual environment, without nbdev or fastcore."""
import json, re, os, runpy, subprocess, sys, venv, zipfile

import pytest
import torch

from test_project import ROOT, copy_of_repo, settings

pytestmark = pytest.mark.xdist_group('fresh_venv')   # its slow setup is made once, on one worker

@pytest.fixture(scope='module')
def source(tmp_path_factory):
    "A copy of the repo as a clone would have it, so building leaves the working tree alone."
    return copy_of_repo(tmp_path_factory.mktemp('src')/'minddpm')

def test_wheel_carries_the_bundled_data_once(source, tmp_path):
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', str(tmp_path), str(source)],
                   check=True, capture_output=True)
    names = zipfile.ZipFile(next(tmp_path.glob('minddpm-*.whl'))).namelist()
    assert 'minddpm/assets/digits.pt' in names
    assert sorted(n for n in names if n.endswith('.pt')) == ['minddpm/assets/digits.pt', 'minddpm/assets/digits_tiny.pt']
    assert {n.split('/')[0] for n in names} == {'minddpm', *[n.split('/')[0] for n in names if '.dist-info/' in n]}

CHECK = """
import sys
import minddpm, minddpm.data
from minddpm.all import get_dataloaders
assert 'fastcore' not in sys.modules and 'nbdev' not in sys.modules, 'the runtime imported fastcore or nbdev'
from minddpm.training import load_model

train, val = get_dataloaders('digits', size=16)
x, y = next(iter(train))
assert load_model().shape == (1, 16, 16)   # the shipped model, read from the installed package
print(minddpm.__version__, minddpm.data.__file__, tuple(x.shape), len(val.dataset), sep='|')
"""

@pytest.fixture(scope='module')
def fresh_venv(source, tmp_path_factory):
    "A new venv with `pip install .` (no extras) of the clone."
    env = tmp_path_factory.mktemp('venv')
    venv.create(env, with_pip=True)
    r = subprocess.run([env/'bin'/'python', '-m', 'pip', 'install', '-q', str(source)], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    return env

def test_fresh_venv_non_editable_install(fresh_venv, tmp_path):
    "`pip install .` (no extras) in a new venv; the bundled data then loads from a folder far from the repo."
    env, py = fresh_venv, fresh_venv/'bin'/'python'
    elsewhere = tmp_path/'elsewhere'
    elsewhere.mkdir()
    r = subprocess.run([py, '-c', CHECK], cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    version, module_file, shape, n_val = r.stdout.strip().split('|')
    assert version == settings()['version']
    assert module_file.startswith(str(env)) and str(ROOT) not in module_file  # the installed copy, not the repo
    assert shape == '(64, 1, 16, 16)' and n_val == '180'
    r = subprocess.run([env/'bin'/'minddpm_data', '--size', '16', '--out', 'grid.png'], cwd=elsewhere,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and (elsewhere/'grid.png').stat().st_size > 1000, r.stderr[-3000:]
    extras = subprocess.run([py, '-m', 'pip', 'list', '--format=freeze'], capture_output=True, text=True).stdout
    assert 'fastcore' not in extras and 'nbdev' not in extras and 'wandb' not in extras

def test_bundled_data_is_what_the_script_makes():
    "data/make_digits.py reproduces the committed digits.pt from scikit-learn's copy of the UCI digits."
    made = runpy.run_path(str(ROOT/'data'/'make_digits.py'))['make_digits']()
    committed = torch.load(ROOT/'data'/'digits.pt', weights_only=True)
    assert torch.equal(made['images'], committed['images']) and torch.equal(made['labels'], committed['labels'])
    assert made['classes'] == committed['classes']
    assert (ROOT/'data'/'digits.pt').stat().st_size < 1_000_000

def install_cells():
    "Each numbered lesson's install cell: the code cell that runs pip when minddpm is missing."
    cells = {}
    for nb in sorted((ROOT/'nbs').glob('[0-9][0-9]_*.ipynb')):
        code = [''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']
        cells[nb.name] = [c for c in code[:4] if "'pip', 'install'" in c]
    return cells

def test_every_lesson_opens_for_colab():
    "Badge, install cell and device line come first in every numbered lesson, and the install cell is the same everywhere."
    for nb in sorted((ROOT/'nbs').glob('[0-9][0-9]_*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        first_md = ''.join(''.join(c['source']) for c in cells[:3] if c['cell_type'] == 'markdown')
        assert f'colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/{nb.name}' in first_md, nb.name
        assert 'On a free Colab T4' in first_md or 'no GPU-only cells' in first_md, f"{nb.name}: no time estimate"
        assert re.search(r'(\d[\d½]* (seconds?|minutes?)|a minute) on (an idle )?a? ?2-core CPU', first_md), \
            f"{nb.name}: its CPU time is not stated (the test command's budget counts it)"
        code = [''.join(c['source']) for c in cells if c['cell_type'] == 'code'][:6]
        assert any('pick_device()' in c and 'pick_preset()' in c for c in code), f"{nb.name}: no device and preset line"
    assert len({c[0] for c in install_cells().values() if c}) == 1 and all(install_cells().values())

def test_install_cell_installs_minddpm_where_it_is_missing(fresh_venv, source, tmp_path):
    "In a Python without minddpm the cell pip-installs it (from the index pip is given); where it is installed it does nothing."
    cell = next(iter(install_cells().values()))[0]
    py = fresh_venv/'bin'/'python'
    wheels = tmp_path/'wheels'
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', str(wheels), str(source)], check=True)
    subprocess.run([py, '-m', 'pip', 'uninstall', '-y', '-q', 'minddpm'], check=True)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}              # nothing but the venv's own packages
    env.update(PIP_NO_INDEX='1', PIP_FIND_LINKS=str(wheels))                     # the wheel stands in for the package index
    r = subprocess.run([py, '-c', cell + '\nimport minddpm; print(minddpm.__file__)'], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and str(fresh_venv) in r.stdout, r.stderr[-3000:]
    forbid = 'import subprocess\ndef refuse(*a, **k): raise AssertionError(f"ran {a}")\nsubprocess.run = refuse\n'
    r = subprocess.run([py, '-c', forbid + cell], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]     # installed: pip is not run

def test_install_cell_falls_back_to_the_course_repository(fresh_venv, source, tmp_path):
    "Where PyPI has no minddpm, the cell installs it from the repository the Colab badges point at, and says so."
    py, wheels = fresh_venv/'bin'/'python', tmp_path/'wheels'
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', str(wheels), str(source)], check=True)
    repository = 'git+https://github.com/minddpm/minddpm'
    cell = next(iter(install_cells().values()))[0]
    assert repository in cell
    cell = cell.replace(repository, str(next(wheels.glob('minddpm-*.whl'))))   # the repository's package, without a network
    subprocess.run([py, '-m', 'pip', 'uninstall', '-y', '-q', 'minddpm'], check=True)
    empty = tmp_path/'empty'; empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(PIP_NO_INDEX='1', PIP_FIND_LINKS=str(empty))                      # an index without minddpm
    r = subprocess.run([py, '-c', cell + '\nimport minddpm; print(minddpm.__file__)'], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and str(fresh_venv) in r.stdout, r.stderr[-3000:]
    assert "pip could not install minddpm, trying the course's repository" in r.stdout and 'installed minddpm from' in r.stdout
