"""The docs site's pre-render step (what `nbdev_docs` runs before Quarto) succeeds on every notebook.

Quarto itself is not installable on CI machines, so the `proc` fixture (conftest.py) runs nbdev's own
pre-render, with only its 'install Quarto' step switched off, on a copy of the repo; this checks what Quarto
would be given, and tests/test_pages_browser.py opens the pages in a browser."""
import importlib, json

import pytest
import yaml
from fastcore.docments import docments

from test_project import ROOT

pytestmark = pytest.mark.xdist_group('docs')   # its slow setup is made once, on one worker

def lesson_notebooks(): return sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb'))

def outputs(nb):
    return [o for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]

@pytest.mark.parametrize('name', lesson_notebooks())
def test_every_notebook_is_processed_without_errors(proc, name):
    nb = json.loads((proc/name).read_text())
    errors = [o for o in outputs(nb) if o['output_type'] == 'error']
    assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}"
    stderr = [o for o in outputs(nb) if o.get('name') == 'stderr' and 'Traceback' in ''.join(o['text'])]
    assert not stderr, f"{name} printed a traceback: {stderr[0]['text']}"

def exported_modules() -> dict:
    """Module → the notebook that exports it, for every lesson that exports one (not the capstone): its `default_exp`,
    and any second module it exports with `#| export name`."""
    res = {}
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        if nb.name == 'index.ipynb': continue   # the course home exports `minddpm.all`, the one-import convenience
        cells = [''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']
        if not cells or '#| default_exp' not in cells[0]: continue
        res[cells[0].split('default_exp')[1].split()[0]] = nb.name
        for src in cells:
            for line in src.splitlines():
                words = line.split()
                if words[:2] in (['#|', 'export'], ['#|', 'exports']) and len(words) == 3: res[words[2]] = nb.name
    return res

def test_the_capstone_exports_nothing_and_every_module_has_its_lesson():
    modules = exported_modules()
    assert '16_cifar10.ipynb' not in modules.values() and 'index.ipynb' not in modules.values()
    assert sorted(modules) == sorted(p.stem for p in (ROOT/'minddpm').glob('*.py')
                                     if not p.stem.startswith('_') and p.stem != 'all')

@pytest.mark.parametrize('module,name', exported_modules().items())
def test_every_exported_function_and_class_is_documented(proc, module, name):
    mod = importlib.import_module(f'minddpm.{module}')
    md = '\n'.join(''.join(o['data']['text/markdown']) for o in outputs(json.loads((proc/name).read_text()))
                   if 'text/markdown' in o.get('data', {}))
    documented = [n for n in mod.__all__ if callable(getattr(mod, n))]
    assert documented
    missing = [n for n in documented if f'### {n}\n' not in md]
    assert not missing, f"{name}: no show_doc output for {missing}"

def undocumented_parameters(module: str) -> dict:
    "Exported function or class → its parameters without a docment (the comment after it in the signature)."
    mod, res = importlib.import_module(f'minddpm.{module}'), {}
    for n in mod.__all__:
        obj = getattr(mod, n)
        if not callable(obj): continue
        missing = [p for p, doc in docments(obj, full=False, args_kwargs=True).items() if p not in ('self', 'return') and not doc]
        if missing: res[n] = missing
    return res

@pytest.mark.parametrize('module', sorted(exported_modules()))
def test_every_parameter_has_a_docment(module):
    "show_doc renders the docments as the parameter table of each page: an undocumented parameter leaves a hole."
    assert not undocumented_parameters(module), f"minddpm.{module}: parameters without docments {undocumented_parameters(module)}"

def test_sidebar_lists_every_lesson_and_module():
    sidebar = yaml.safe_load((ROOT/'nbs'/'_quarto.yml').read_text())['website']['sidebar']['contents']
    sections = {s['section']: s['contents'] for s in sidebar if 'section' in s}
    lessons = [e['href'] for e in sections['Lessons']]
    numbered = sorted(p.name for p in (ROOT/'nbs').glob('[0-9][0-9]_*.ipynb'))
    assert lessons == numbered, "nbs/_quarto.yml's Lessons section must list every numbered lesson in order"
    reference = {e['text']: e['href'] for e in sections['Reference']}
    assert reference == {f'minddpm.{m}': nb for m, nb in exported_modules().items()}

@pytest.mark.parametrize('name', ['02_forward.ipynb', '05_sampling.ipynb', '11_editing.ipynb', 'scrubber.ipynb'])
def test_scrubber_pages_carry_the_static_player(proc, name):
    "Quarto has no kernel: the scrubber cells are re-run at pre-render (`#| exec_doc`) and must emit the HTML player."
    nb = json.loads((proc/name).read_text())
    players = [''.join(o['data']['text/html']) for o in outputs(nb) if 'text/html' in o.get('data', {})
               and 'class="minddpm-scrubber"' in ''.join(o['data']['text/html'])]
    assert players, f"{name}: no static scrubber player in the processed page"
    assert all('<script>' in p and 'data:image/png;base64,' in p for p in players)
    assert not [o for o in outputs(nb) if 'application/vnd.jupyter.widget-view+json' in o.get('data', {})], \
        f"{name}: a live widget would be a dead snapshot on the docs site"

def test_committed_images_are_small():
    "Figures are drawn at 60 dpi: one over 150 kB, a scrubber player over 400 kB or an image file over 100 kB has grown by mistake."
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        for o in outputs(json.loads(nb.read_text())):
            for mime, data in o.get('data', {}).items():
                n = len(''.join(data))
                if mime.startswith('image/'): assert n * 3 / 4 < 150_000, f"{nb.name}: a {mime} output of {n * 3 / 4e3:.0f} kB"
                if mime == 'text/html': assert n < 400_000, f"{nb.name}: an HTML output of {n / 1e3:.0f} kB"
    for f in (ROOT/'nbs'/'images').glob('*'): assert f.stat().st_size < 100_000, f"{f.name}: {f.stat().st_size / 1e3:.0f} kB"
