"""The project stays in sync with itself: notebooks ↔ package, notebooks ↔ text twins,
settings.ini ↔ environment.yml, README's test command ↔ .ci/run."""
import configparser, filecmp, re, shlex, shutil, subprocess
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

def settings():
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT/'settings.ini')
    return cfg['DEFAULT']

def repo_files():
    "The files a clone would hold: tracked ones and untracked ones git does not ignore."
    out = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return sorted(f for f in set(out.split('\0')) if f and (ROOT/f).exists())

def copy_of_repo(dest: Path) -> Path:
    "The repo as a clone would have it, copied to `dest`, so work on it leaves the working tree alone."
    for f in repo_files():
        (dest/f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT/f, dest/f)
    return dest

def test_export_and_clean_change_nothing(tmp_path):
    "Running nbdev_export and nbdev_clean on a copy of the repo leaves every file as committed."
    copy = copy_of_repo(tmp_path/'repo')
    for cmd in ('nbdev_export', 'nbdev_clean'):
        subprocess.run([cmd], cwd=copy, check=True, capture_output=True)
    changed = [f for f in repo_files() if not filecmp.cmp(ROOT/f, copy/f, shallow=False)]
    made = sorted(str(p.relative_to(copy)) for p in (copy/'minddpm').rglob('*.py')
                  if not (ROOT/p.relative_to(copy)).exists())
    assert not changed, f"nbdev_export/nbdev_clean would change {changed}: run them and commit the result"
    assert not made, f"nbdev_export would create {made}: run it and commit the result"

def notebooks(): return sorted((ROOT/'nbs').glob('*.ipynb'))

@pytest.mark.parametrize('nb', notebooks(), ids=lambda p: p.name)
def test_text_twin_in_sync(nb):
    "Each notebook's py:percent twin in nbs_py/ says exactly what the notebook says."
    twin = ROOT/'nbs_py'/f'{nb.stem}.py'
    assert twin.exists(), f"{twin.relative_to(ROOT)} is missing: run `jupytext --sync {nb.relative_to(ROOT)}` from the repo root"
    def cells(path): return [(c.cell_type, c.source) for c in jupytext.read(path).cells]
    assert cells(twin) == cells(nb), (f"{twin.relative_to(ROOT)} and {nb.relative_to(ROOT)} differ: "
                                      f"run `jupytext --sync` on the one you edited, from the repo root")

def test_no_orphan_twins():
    stems = {p.stem for p in notebooks()}
    orphans = [p.name for p in (ROOT/'nbs_py').glob('*.py') if p.stem not in stems]
    assert not orphans, f"twins without a notebook: {orphans}"

def test_no_python_files_in_nbs():
    "Quarto would render .py files in nbs/ as (broken) pages, so the twins live in nbs_py/."
    assert not list((ROOT/'nbs').glob('*.py'))

def test_environment_yml_agrees_with_settings():
    cfg = settings()
    wanted = {k: shlex.split(cfg[k]) for k in ('requirements', 'wandb_requirements', 'dev_requirements')}
    env = yaml.safe_load((ROOT/'environment.yml').read_text())
    conda = [d for d in env['dependencies'] if isinstance(d, str)]
    pip = next(d['pip'] for d in env['dependencies'] if isinstance(d, dict))
    assert sorted(pip) == sorted(sum(wanted.values(), [])), "environment.yml's pip list differs from settings.ini"
    assert f"python>={cfg['min_python']}" in conda

def test_runtime_does_not_need_fastcore():
    "Colab pins its own fastcore for fastai, so the runtime requirements must leave it alone."
    reqs = shlex.split(settings()['requirements'])
    assert not [r for r in reqs if re.match(r'(fastcore|nbdev|execnb)\b', r)]
    assert any(r.startswith('ipywidgets>=7.7') for r in reqs)  # Colab ships 7.7.1

def readme_commands():
    block = re.search(r'```sh\n(.*?)```', (ROOT/'README.md').read_text(), re.S).group(1)
    return [line.split('#')[0].strip() for line in block.strip().splitlines()]

def test_readme_opens_with_the_two_commands():
    main_job, tests = readme_commands()
    assert main_job.startswith('pip install . && minddpm_train') and '&& minddpm_sample' in main_job
    assert tests.startswith('pip install -e ".[dev,wandb]" && pytest') and '--durations' in tests
    assert 'nbdev_test' not in tests   # tests/test_lessons.py runs every lesson once, as nbdev_test would, and checks its outputs

def test_readme_main_job_trains_and_leaves_a_grid(tmp_path):
    "README's main job as written, less the install (done already): minutes on the CPU, then a grid PNG."
    main_job, _ = readme_commands()
    steps = [c.strip() for c in main_job.split('&&')]
    assert steps[0] == 'pip install .'
    r = subprocess.run(' && '.join(steps[1:]), shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    out = re.search(r'saved \d+ samples to (\S+)', r.stdout).group(1)
    assert (tmp_path/out).stat().st_size > 10_000

def test_ci_runs_the_readme_test_command():
    ci = (ROOT/'.ci'/'run').read_text()
    _, tests = readme_commands()
    assert tests in [line.strip() for line in ci.splitlines()], ".ci/run must run README's test command as written"

def test_console_scripts_exist():
    import importlib
    for script in settings()['console_scripts'].split():
        name, target = script.split('=')
        module, func = target.split(':')
        assert callable(getattr(importlib.import_module(module), func)), script

def test_flat_api():
    import minddpm.all as everything, minddpm.data as data
    assert set(data.__all__) <= set(everything.__all__)
    ns = {}
    exec('from minddpm.all import *', ns)
    assert 'get_dataloaders' in ns and 'show_images' in ns

def test_readme_lists_every_lesson_with_its_colab_link_and_shows_small_pictures():
    readme = (ROOT/'README.md').read_text()
    for nb in sorted((ROOT/'nbs').glob('[0-9][0-9]_*.ipynb')):
        assert f'](nbs/{nb.name})' in readme, f"README's lesson list lacks {nb.name}"
        assert f'https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/{nb.name}' in readme, nb.name
    pictures = re.findall(r'<img src="([^"]+)"', readme)
    assert pictures
    for src in pictures: assert (ROOT/src).is_file() and (ROOT/src).stat().st_size < 100_000, src
