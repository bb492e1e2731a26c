"""Run lessons the way `nbdev_test` does (in-process, from `nbs/`, skipping cells flagged with a
`tst_flags` directive) and keep their outputs, so the committed notebooks show fresh plots.

    python tests/lessons.py               # refresh every notebook in nbs/, then clean them
    python tests/lessons.py 00_data       # just one
"""
import os, subprocess, sys
from pathlib import Path

from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.config import get_config
from nbdev.process import NBProcessor

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'

def notebooks():
    "Every notebook nbdev exports from and tests: nbs/*.ipynb, minus scratch ones starting with `_`."
    return sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith('_'))

def flagged(cell, flags):
    "Is `cell` marked with one of the test `flags` (e.g. `#| slow`)?"
    return bool(set(flags) & set(getattr(cell, 'directives_', None) or {}))

def run_lesson(path):
    "Execute the notebook at `path` as `nbdev_test` would and return it with its outputs; raise on error."
    path, flags = Path(path), get_config(path=ROOT).tst_flags.split()
    nb = NBProcessor(path, process=True, rm_directives=False).nb
    for c in nb.cells:
        if c.cell_type == 'code' and flagged(c, flags): c.outputs, c.execution_count = [], None
    shell = CaptureShell(path)
    os.environ['IN_TEST'] = '1'
    with working_directory(path.parent):
        shell.run_all(nb, exc_stop=True, preproc=lambda c: c.cell_type != 'code' or flagged(c, flags))
    return nb

if __name__ == '__main__':
    names = sys.argv[1:]
    paths = [NBS/f'{n.removesuffix(".ipynb")}.ipynb' for n in names] if names else notebooks()
    for p in paths:
        nb = run_lesson(p)
        for c in nb.cells: c.pop('directives_', None)
        write_nb(nb, p)
        print(f'ran {p.relative_to(ROOT)}')
    subprocess.run(['nbdev_clean'], cwd=ROOT, check=True)
