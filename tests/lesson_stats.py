"""Count what a student reads in each lesson, from its jupytext twin in `nbs_py/`.

    python tests/lesson_stats.py            # a table of every lesson
    python tests/lesson_stats.py --modules  # lines per module of minddpm/

Per lesson: cells; *visible code lines* (non-blank lines of code cells a reader of the docs sees:
not `#| hide`, directive lines not counted), the measure compared with course22p2's notebooks,
whose cells are all visible; prose lines; the longest visible code cell; visible cells that only test
(every non-blank line a `test_*` call, an `assert` or a continuation of one); pictures (code cells
with an image output in the committed notebook, plus markdown images); sections (`## `) and the
sections with no picture.
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_CALL = re.compile(r'^(test_\w+|test\w*\(|assert\b|with\s+\w*raises|fails\b)')

def cells(twin: Path):
    "Split a py:percent twin into (kind, lines) cells, markdown lines without their '# '."
    out, kind, lines = [], None, []
    for line in twin.read_text().splitlines():
        if line.startswith('# %%'):
            if kind: out.append((kind, lines))
            kind, lines = ('markdown' if '[markdown]' in line else 'code'), []
        elif kind: lines.append(line[2:] if kind == 'markdown' and line.startswith('# ') else line)
    if kind: out.append((kind, lines))
    return out

def directives(lines): return {l[3:].split()[0] for l in lines if l.startswith('#| ') and len(l) > 3}

def only_tests(code):
    "A cell whose every statement checks something: a test wall, not teaching."
    stmts = [l for l in code if l.strip() and not l.startswith(' ') and not l.startswith('#')]
    return bool(stmts) and all(TEST_CALL.match(l) for l in stmts)

def picture_cells(nb: Path) -> list[bool]:
    "Per code cell of the committed notebook: does it show an image (or HTML player / widget)?"
    kinds = ('image/png', 'image/svg+xml', 'text/html', 'application/vnd.jupyter.widget-view+json')
    return [any(k in o.get('data', {}) for o in c.get('outputs', []) for k in kinds)
            for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']

def stats(twin: Path) -> dict:
    cs, nb = cells(twin), ROOT/'nbs'/(twin.stem + '.ipynb')
    pics = picture_cells(nb) if nb.exists() else []
    vis, longest, tests, prose, sections, ci = 0, 0, 0, 0, [], 0
    for kind, lines in cs:
        if kind == 'markdown':
            prose += sum(1 for l in lines if l.strip())
            for l in lines:
                if l.startswith('## '): sections.append([l[3:].strip(), 0])
            if sections and any('![' in l or '<img' in l for l in lines): sections[-1][1] += 1
            continue
        pic = ci < len(pics) and pics[ci]; ci += 1
        if sections and pic: sections[-1][1] += 1
        if 'hide' in directives(lines): continue
        code = [l for l in lines if l.strip() and not l.startswith('#|')]
        vis += len(code); longest = max(longest, len(code))
        tests += only_tests(code)
    return dict(lesson=twin.stem, cells=len(cs), code=vis, prose=prose, longest=longest, test_cells=tests,
                pictures=sum(pics), sections=len(sections), bare=[s for s, n in sections if not n])

if __name__ == '__main__':
    if '--modules' in sys.argv:
        for p in sorted((ROOT/'minddpm').glob('*.py')):
            if not p.name.startswith('_'): print(f"{len(p.read_text().splitlines()):5d}  {p.name}")
        sys.exit()
    names = [a for a in sys.argv[1:] if not a.startswith('-')]
    print(f"{'lesson':18s} {'cells':>5s} {'code':>5s} {'prose':>5s} {'longest':>7s} {'tests':>5s} {'pics':>4s} {'secs':>4s}  sections without a picture")
    for twin in sorted((ROOT/'nbs_py').glob('*.py')):
        if names and twin.stem not in names: continue
        s = stats(twin)
        print(f"{s['lesson']:18s} {s['cells']:5d} {s['code']:5d} {s['prose']:5d} {s['longest']:7d} {s['test_cells']:5d} "
              f"{s['pictures']:4d} {s['sections']:4d}  {'; '.join(s['bare'])}")
