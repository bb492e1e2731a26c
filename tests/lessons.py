"""Run lessons the way `nbdev_test` does (in-process, from `nbs/`, skipping cells flagged with a
`tst_flags` directive) and keep their outputs, so the committed notebooks show fresh plots.

    python tests/lessons.py               # refresh every notebook in nbs/, then clean them
    python tests/lessons.py 00_data       # just one
    python tests/lessons.py --check       # fail if a committed notebook's outputs are stale or missing
    python tests/lessons.py 08_evaluation --slow   # also run its `#| slow` cells and keep their outputs
                                                   # (a run without --slow keeps those committed outputs)
    python tests/lessons.py 09_performance --slow=ladder,size=32   # only the `#| slow` cells whose source holds
                                                   # 'ladder' or 'size=32'; the other slow cells keep their committed outputs
"""
import os, subprocess, sys, time
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

def chosen(cell, slow) -> bool:
    "Does a `slow` argument (True, False, or comma-separated parts of sources) choose this slow cell to run?"
    return slow is True or bool(slow) and any(part in cell.source for part in slow.split(','))

def run_lesson(path, slow=False):
    """Execute the notebook at `path` as `nbdev_test` would and return it with its outputs. `slow`: True runs its `#| slow`
    cells too; a string runs only the slow cells whose source contains one of its comma-separated parts."""
    path, flags = Path(path), [f for f in get_config(path=ROOT).tst_flags.split() if not (slow and f == 'slow')]
    skip = lambda c: flagged(c, flags) or (flagged(c, ['slow']) and not chosen(c, slow))
    nb = NBProcessor(path, process=True, rm_directives=False).nb
    for c in nb.cells:  # start clean: a cell that now prints nothing must not keep an old output
        if c.cell_type == 'code': c.outputs, c.execution_count = [], None
    shell = CaptureShell(path)
    os.environ['IN_TEST'] = '1'
    with working_directory(path.parent):
        shell.run_all(nb, exc_stop=True, preproc=lambda c: c.cell_type != 'code' or skip(c))
    return nb

def output_kinds(nb):
    "Per code cell, the kinds of output it shows: ('stream', 'stdout'), ('display_data', 'image/png', …), …"
    return [[(o['output_type'], o.get('name', ''), *sorted(o.get('data', {}))) for o in c.get('outputs', [])]
            for c in nb['cells'] if c['cell_type'] == 'code']

def tracebacks(nb):
    "Code cells with an error output, or a traceback printed to stderr (IPython prints display errors, it does not raise them)."
    cells = [c for c in nb['cells'] if c['cell_type'] == 'code']
    return [i for i, c in enumerate(cells) for o in c.get('outputs', [])
            if o['output_type'] == 'error' or (o.get('name') == 'stderr' and 'Traceback' in ''.join(o.get('text', '')))]

def stale_cells(path):
    """Code cells of the committed notebook at `path` whose outputs differ in kind from a fresh run's, or hold a traceback.
    Flagged cells (`#| slow`) are not run, so their committed outputs, from a full run (`--slow`), are not compared."""
    fresh_nb, committed_nb = run_lesson(path), read_nb(path)
    flags = get_config(path=ROOT).tst_flags.split()
    skipped = [flagged(c, flags) for c in fresh_nb.cells if c.cell_type == 'code']
    fresh, committed = output_kinds(fresh_nb), output_kinds(committed_nb)
    return sorted({i for i, (f, c, skip) in enumerate(zip(fresh, committed, skipped)) if f != c and not skip}
                  | set(tracebacks(fresh_nb)) | set(tracebacks(committed_nb)))

if __name__ == '__main__':
    check = '--check' in sys.argv
    slow = next((a.partition('=')[2] or True for a in sys.argv[1:] if a.split('=')[0] == '--slow'), False)
    names = [a for a in sys.argv[1:] if a != '--check' and a.split('=')[0] != '--slow']
    paths = [NBS/f'{n.removesuffix(".ipynb")}.ipynb' for n in names] if names else notebooks()
    if check:
        stale = {p.name: cells for p in paths if (cells := stale_cells(p))}
        for name, cells in stale.items(): print(f'{name}: code cells {cells} show a traceback, or other outputs than a fresh run')
        if stale: sys.exit('refresh them with `python tests/lessons.py`, then commit')
        sys.exit(0)
    for p in paths:
        t0 = time.perf_counter()
        nb = run_lesson(p, slow)
        if slow is not True:   # flagged cells that did not run keep the outputs a full run (`--slow`) committed, where unchanged
            flags, kept = get_config(path=ROOT).tst_flags.split(), {c['source']: c for c in read_nb(p).cells if c.cell_type == 'code'}
            for c in nb.cells:
                ran = flagged(c, ['slow']) and chosen(c, slow)
                if c.cell_type == 'code' and flagged(c, flags) and not ran and c.source in kept: c.outputs = kept[c.source].outputs
        for c in nb.cells: c.pop('directives_', None)
        write_nb(nb, p)
        print(f'ran {p.relative_to(ROOT)} in {time.perf_counter() - t0:.0f} s')
    subprocess.run(['nbdev_clean'], cwd=ROOT, check=True)
