"""Benchmark: quality per CPU-minute of `minddpm_train`, on the bundled digits and on image folders it has never seen.

    python tests/bench_learning.py                                   # score the shipped model on the digits
    python tests/bench_learning.py score runs/x/checkpoint.pt --data shapes
    python tests/bench_learning.py curve --data digits shapes --steps 400 700 1000 1300 --seeds 0 1 --jobs 2
    python tests/bench_learning.py compare --data shapes shapes2 --minutes 5 --seeds 0 1 \\
        --recipe before=@e32c649 --recipe now=                       # two commits, one after another, same budget
    python tests/bench_learning.py compare --steps 1000 --recipe a= --recipe b="--lr 3e-3 --batch-size 32"
    python tests/bench_learning.py plot runs/bench_curve/results.json nbs/images/learning.png --recipes a b

Data: `digits` (bundled), `shapes` and `shapes2` (tests/shapes.py: 1,600 RGB images of 16×16 in four classes of
coloured shapes, 400 a class, made by this script in OUT/data; the two sets share no class), or any folder.
Every run is a real `minddpm_train` process (`--dataset D --img-size 16 --seed S` plus the recipe's flags, and
`--steps N` or `--minutes M`); a recipe `NAME=@REV FLAGS` runs the code of commit REV from a git worktree.

Judge: the small CNN of lesson 08 (`train_judge`), trained on real images only: for the shapes a separate set of
1,000 images a class drawn with another seed (its accuracy on 200 held-out real images a class is printed), for
the digits the training split. Score: `per_class` guided samples of every class drawn as `minddpm_sample` draws
them (EMA weights, DDIM 50 steps, η = 1, w = 3, its default precision, seed 1), read back as 8-bit PNGs would be;
the share the judge labels as the class they were drawn for; and the FID in the judge's feature space of as many
samples drawn with w = 1 against 1,000 real images (lower is better; comparable only at one sample count). Runs
with `--steps` may go two at a time (`--jobs 2`, one thread each); budgeted runs always go one at a time, since
they race the clock, and want a machine doing nothing else.
Writes OUT/results.json (every run's figures) and prints a table. Not a test: it prints figures."""
from __future__ import annotations
import argparse, json, os, shlex, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from shapes import SETS, make_shapes
from minddpm.data import get_datasets, to_uint8
from minddpm.metrics import frechet_distance, train_judge, _stack
from minddpm.sampling import sample
from minddpm.training import load_model

REPO = Path(__file__).resolve().parents[1]

def dataset(name: str, out: Path, role: str = 'train') -> str:
    "The `--dataset` of a data name: 'digits' as it is, a shape set written once into OUT/data (role 'judge': its judge's set)."
    if name not in SETS: return name
    root = (out/'data'/f'{name}_{role}').resolve()   # absolute: a commit's run starts in its own tree
    if not root.exists():
        tmp = root.with_name(root.name + '.tmp')
        make_shapes(tmp, SETS[name], 400 if role == 'train' else 1000, 16, seed=0 if role == 'train' else 1000)
        tmp.rename(root)
    return str(root)

_judges = {}
def judge(name: str, out: Path):
    "(judge, its accuracy on held-out real images, judge features of 1,000 real reference images) for a data name."
    if name not in _judges:
        src = dataset(name, out, 'judge' if name in SETS else 'train')
        j, acc = train_judge(src, 16, epochs=15, val_frac=0.2 if name in SETS else 0.1)
        ref, _ = _stack(get_datasets(src, 16, val_frac=0.2 if name in SETS else 0.1)[0])
        with torch.no_grad(): feats = j.features(ref[torch.randperm(len(ref), generator=torch.Generator().manual_seed(0))[:1000]])
        _judges[name] = j, acc, feats
    return _judges[name]

def score(path, name: str, out: Path, per_class: int = 50, seed: int = 1) -> dict:
    """Judged accuracy of guided samples (w = 3) and judge-feature FID of conditional ones (w = 1) of a checkpoint, drawn
    as `minddpm_sample` draws them. FID is read at w = 1, the distribution the model learned: guidance pushes a confident
    model's samples past the real ones in the judge's features (their mean norm 54 against the real images' 43 on `shapes2`),
    so FID at w = 3 rises as the model gets better."""
    j, _, ref = judge(name, out)   # trained first: the sampling below runs without gradients
    m = load_model(path)
    y = torch.arange(len(m.classes)).repeat(per_class)
    @torch.no_grad()
    def features(w):
        flow = m.diffusion.objective == 'flow'   # a flow model (lesson 13): Euler, 50 steps
        x = sample(m.model, m.diffusion, y, shape=m.shape, sampler=None if flow else 'ddim', steps=50, w=w, eta=None if flow else 1.0,
                   generator=torch.Generator().manual_seed(seed), precision='auto')
        return j.features(to_uint8(x).float() / 127.5 - 1)   # what a PNG written by minddpm_sample holds
    guided, plain = features(3.0), features(1.0)
    with torch.no_grad(): right = j.head(guided).argmax(1) == y
    return dict(accuracy=right.double().mean().item(), fid=frechet_distance(ref, plain), samples=len(y))

def parse_recipe(spec: str) -> tuple[str, str | None, list[str]]:
    "NAME=[@REV] [FLAGS]: the name, the commit (None: this tree) and the extra flags of minddpm_train."
    name, _, rest = spec.partition('=')
    words = shlex.split(rest)
    rev = words.pop(0)[1:] if words and words[0].startswith('@') else None
    return name, rev, words

def code_at(rev: str | None, out: Path) -> Path:
    "A folder whose `minddpm` package is the code at commit `rev` (None: this repository)."
    if rev is None: return REPO
    tree = out/'trees'/rev
    if not tree.exists():
        subprocess.run(['git', '-C', str(REPO), 'worktree', 'add', '--detach', '--force', str(tree.resolve()), rev], check=True,
                       capture_output=True)
        (tree/'minddpm'/'assets').symlink_to('../data')   # what setup.py maps into the wheel as minddpm.assets
    return tree

def train_one(recipe: str, data: str, seed: int, length: list[str], out: Path, threads: int | None) -> dict:
    "One `minddpm_train` process: its run folder, wall seconds, steps and what its log says of the budget."
    name, rev, flags = parse_recipe(recipe)
    run = (out/'runs'/f"{name}_{data}_s{seed}_{'_'.join(length).replace('--', '')}").resolve()
    ckpt = run/'checkpoint.pt'
    if not ckpt.exists():
        code = code_at(rev, out)
        env = {**os.environ, 'PYTHONPATH': str(code)}
        if threads: env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        cmd = [sys.executable, '-c', 'import sys; from minddpm.cli import minddpm_train; sys.exit(minddpm_train())',
               '--dataset', dataset(data, out), '--img-size', '16', '--seed', str(seed), '--out', str(run), *length, *flags]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=code)
        secs = time.perf_counter() - t0
        if done.returncode: raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stderr[-2000:]}")
        (run/'wall_seconds').write_text(f'{secs:.1f}')
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    hist = state['history']
    return dict(recipe=name, rev=rev, flags=shlex.join(flags), data=data, seed=seed, length=' '.join(length),
                steps=state['step'], planned=state['config']['steps'], wall_s=float((run/'wall_seconds').read_text()),
                checkpoint=str(ckpt))

def run_all(a, lengths: list[list[str]]) -> list[dict]:
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    for d in a.data: dataset(d, out); judge(d, out)
    # one seed of every recipe before the next seed: a machine that changes speed shifts all recipes alike
    jobs = [(r, d, s, l) for s in a.seeds for l in lengths for d in a.data for r in a.recipe]
    parallel = a.jobs if all('--minutes' not in l for l in lengths) else 1
    with ThreadPoolExecutor(parallel) as pool:
        runs = list(pool.map(lambda j: train_one(*j, out, 1 if parallel > 1 else None), jobs))
    results = []
    for r in runs:
        r.update(score(r['checkpoint'], r['data'], out, a.per_class))
        results.append(r)
        print(f"{r['recipe']:>10} {r['data']:>8} seed {r['seed']} {r['length']:>12}: {r['steps']:5d} steps in {r['wall_s']:5.0f} s "
              f"({r['steps'] / r['wall_s']:.2f}/s), judged {r['accuracy']:6.1%}, FID {r['fid']:6.1f}", flush=True)
    path = out/'results.json'
    old = json.loads(path.read_text()) if path.exists() else []
    keep = [o for o in old if (o['recipe'], o['data'], o['seed'], o['length']) not in {(r['recipe'], r['data'], r['seed'], r['length']) for r in results}]
    path.write_text(json.dumps(keep + results, indent=1))
    return results

def table(results: list[dict]):
    "Mean (min–max) over seeds for each recipe, data and length."
    import statistics
    groups = {}
    for r in results: groups.setdefault((r['data'], r['length'], r['recipe']), []).append(r)
    print(f"\n| data | length | recipe | seeds | steps | steps/s | judged correct, mean (min–max) | FID |")
    print("|---|---|---|--:|--:|--:|--:|--:|")
    for (d, l, name), rs in sorted(groups.items()):
        acc = [r['accuracy'] for r in rs]
        print(f"| {d} | {l} | {name} | {len(rs)} | {statistics.mean(r['steps'] for r in rs):.0f} | "
              f"{statistics.mean(r['steps'] / r['wall_s'] for r in rs):.2f} | {statistics.mean(acc):.1%} ({min(acc):.1%}–{max(acc):.1%}) | "
              f"{statistics.mean(r['fid'] for r in rs):.1f} |")

def plot(results: list[dict], png, recipes=None, labels=None):
    "Judged accuracy against steps trained, one panel per data set, one colour per recipe, a dot per seed."
    import matplotlib.pyplot as plt
    recipes = recipes or list(dict.fromkeys(r['recipe'] for r in results))
    results = [r for r in results if r['recipe'] in recipes and r['length'].startswith('--steps')]
    datas = sorted({r['data'] for r in results}, key=lambda d: (d == 'digits', d))
    labels = dict(zip(recipes, labels or recipes))
    fig, axs = plt.subplots(1, len(datas), figsize=(4.2 * len(datas), 3.2), squeeze=False)
    for ax, d in zip(axs[0], datas):
        for i, name in enumerate(recipes):
            rs = sorted((r for r in results if r['data'] == d and r['recipe'] == name), key=lambda r: r['steps'])
            if not rs: continue
            ax.plot([r['steps'] for r in rs], [100 * r['accuracy'] for r in rs], 'o', color=f'C{i}', alpha=.5, ms=4)
            by = {}
            for r in rs: by.setdefault(r['length'], []).append(r)
            pts = sorted((sum(r['steps'] for r in v) / len(v), 100 * sum(r['accuracy'] for r in v) / len(v)) for v in by.values())
            ax.plot(*zip(*pts), '-', color=f'C{i}', label=labels[name])
        ax.set(title=d, xlabel='steps trained', ylabel='judged their class (%)', ylim=(40, 102)); ax.grid(alpha=.3)
    axs[0][0].legend(fontsize=8, loc='lower right')
    fig.tight_layout(); fig.savefig(png, dpi=100); plt.close(fig)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd')
    for name in ('curve', 'compare'):
        s = sub.add_parser(name)
        s.add_argument('--data', nargs='+', default=['shapes'], help='digits, shapes, shapes2 or folders (default: shapes)')
        s.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
        s.add_argument('--recipe', action='append', help='NAME=[@REV] [FLAGS of minddpm_train]; repeat (default: now=)')
        s.add_argument('--per-class', type=int, default=50, help='guided samples of every class per score (default: 50)')
        s.add_argument('--jobs', type=int, default=1, help='runs at once, one thread each (--steps only)')
        s.add_argument('--out', default=f'runs/bench_{name}')
        if name == 'curve': s.add_argument('--steps', type=int, nargs='+', required=True, help='run lengths: one run per length')
        else:
            length = s.add_mutually_exclusive_group(required=True)
            length.add_argument('--minutes', type=float); length.add_argument('--steps', type=int)
    s = sub.add_parser('score'); s.add_argument('model'); s.add_argument('--data', default='digits'); s.add_argument('--out', default='runs/bench_score')
    s = sub.add_parser('rescore', help='score every run of a results file again'); s.add_argument('results')
    s = sub.add_parser('plot'); s.add_argument('results'); s.add_argument('png')
    s.add_argument('--recipes', nargs='+'); s.add_argument('--labels', nargs='+')
    a = p.parse_args()
    if a.cmd in ('curve', 'compare'):
        a.recipe = a.recipe or ['now=']
        if a.cmd == 'curve': lengths = [['--steps', str(n)] for n in a.steps]
        else: lengths = [['--minutes', str(a.minutes)] if a.minutes else ['--steps', str(a.steps)]]
        results = run_all(a, lengths)
        table(results)
    elif a.cmd == 'rescore':
        path = Path(a.results); results = json.loads(path.read_text())
        for r in results: r.update(score(r['checkpoint'], r['data'], path.parent))
        path.write_text(json.dumps(results, indent=1)); table(results)
    elif a.cmd == 'plot': plot(json.loads(Path(a.results).read_text()), a.png, a.recipes, a.labels)
    else:
        path = None if a.cmd is None else a.model
        data, out = ('digits', Path('runs/bench_score')) if a.cmd is None else (a.data, Path(a.out))
        j, acc, _ = judge(data, out)
        r = score(path, data, out, per_class=100)
        print(f"model: {path or 'shipped digits_tiny'}; judge's accuracy on real held-out images: {acc:.1%}; guided samples "
              f"(w = 3, DDIM 50, η = 1, {r['samples']} images): {r['accuracy']:.1%} judged their class, judge-feature FID {r['fid']:.1f}")
