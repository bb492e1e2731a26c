"""Benchmark: progressive distillation of the shipped model (lesson 14), scored against network calls beside its teacher.

    python tests/bench_distill.py                                # both chains, 64 calls down to 1
    python tests/bench_distill.py --calls 4 --w 3 --steps 300    # one chain, quicker
    python tests/bench_distill.py plot tests/results/distill.json nbs/images/distill_calls.png

Two chains of rounds (`minddpm.distill.distill`, one process, two threads), each timed round by round:
- w = 3, guidance folded in: scored by the judged accuracy of its samples (lesson 08's judge);
- w = 1, the plain conditional model: scored by FID in the judge's features against 1,000 real images, as lesson 08
  and tests/bench_learning.py read FID at w = 1 (guidance pushes samples past the real ones in those features).
The teacher is scored the same way with DDIM (η = 0, the walk the students learn; and η = 1 at 50 calls) and with
DPM-Solver++(2M) at the same calls. The real-data floor is the FID of as many real images, not among the 1,000 (the
digits' reference is their training split: a floor the models can pass). The demo's latency per image: `Batcher`
requests of 4 images, one at a time, for the teacher (DPM-Solver++ 20 steps, the demo's default, and 4 steps) and the
4-call student, precision 'auto'. Writes OUT/results.json and prints tables. Not a test: it prints figures."""
from __future__ import annotations
import argparse, json, statistics, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_learning import judge
from bench_flow import real_floor
from minddpm.data import to_uint8
from minddpm.distill import distill
from minddpm.metrics import frechet_distance
from minddpm.sampling import sample
from minddpm.training import load_model

@torch.no_grad()
def features(m, w: float, per_class: int, sampler=None, steps=None, eta=None, seed: int = 1):
    "(labels, judge features) of `per_class` samples a class of model `m` at guidance `w`, as a PNG would hold them."
    j, _, _ = judge('digits', Path('runs'))
    y = torch.arange(len(m.classes)).repeat(per_class)
    x = sample(m.model, m.diffusion, y, shape=m.shape, sampler=sampler, steps=steps, w=w, eta=eta,
               generator=torch.Generator().manual_seed(seed), precision='auto')
    return y, j.features(to_uint8(x).float() / 127.5 - 1)

def scores(m, per_class: int, ws=(3.0, 1.0), **kw) -> dict:
    "Judged accuracy of guided samples (first w) and FID of the second w's, for a model that samples at both (the teacher)."
    j, _, ref = judge('digits', Path('runs'))
    out = {}
    for w in ws:
        y, f = features(m, w, per_class, **kw)
        if w == ws[0]: out['accuracy'] = (j.head(f).argmax(1) == y).double().mean().item()
        if w == ws[-1]: out['fid'] = frechet_distance(ref, f)
    return out

def student_score(m, per_class: int) -> dict:
    "Accuracy and FID of a student at its own folded w."
    j, _, ref = judge('digits', Path('runs'))
    y, f = features(m, m.diffusion.guidance, per_class)
    return dict(accuracy=(j.head(f).argmax(1) == y).double().mean().item(), fid=frechet_distance(ref, f))

def demo_latency(m, sampler: str, steps: int, w: float, requests: int = 6) -> float:
    "Median seconds per image of the demo's `Batcher`, requests of 4 images one at a time (the first, a warm-up, not counted)."
    from minddpm.demo import Batcher, parse_request
    b = Batcher(m, precision='auto', batching=False)
    try:
        times = []
        for seed in range(requests + 1):
            t0 = time.perf_counter(); b(parse_request(m.classes, 0, 4, w, sampler, steps, seed)); times.append(time.perf_counter() - t0)
        return statistics.median(times[1:]) / 4
    finally: b.close()

@torch.no_grad()
def rounds_grid(teacher, folder: Path, calls: list, start: int, png):
    "One row per round: the teacher's DDIM (η = 0) in `start` steps, then each student in its calls; the same noise and labels."
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid
    y = torch.arange(10)
    x_T = torch.randn(10, *teacher.shape, generator=torch.Generator().manual_seed(0))
    rows = [sample(teacher.model, teacher.diffusion, y, shape=teacher.shape, steps=start, spacing='trailing', eta=0.0, x_T=x_T)]
    for n in calls:
        m = load_model(folder/f'calls_{n:03d}'/'checkpoint.pt')
        rows.append(sample(m.model, m.diffusion, y, shape=m.shape, x_T=x_T))
    h = teacher.shape[1] + 1
    fig, ax = plt.subplots(figsize=(4.2, 0.3 + 0.42 * len(rows)))
    ax.imshow(make_grid(torch.cat(rows).add(1).div(2), nrow=10, padding=1, pad_value=0.5).permute(1, 2, 0), interpolation='nearest')
    ax.set(xticks=[], yticks=[h * (i + 0.5) for i in range(len(rows))],
           yticklabels=[f'teacher, {start} steps'] + [f'student, {n} call{"s" * (n > 1)}' for n in calls])
    ax.tick_params(labelsize=8, length=0); fig.savefig(png, dpi=80, bbox_inches='tight'); plt.close(fig)

def run(a):
    torch.set_num_threads(a.threads)
    out, res = Path(a.out), dict(args=vars(a), chains={}, teacher={})
    judge('digits', Path('runs'))
    for w in a.w:
        chain, last = {}, None
        for n in [a.start >> k for k in range(1, a.start.bit_length()) if a.start >> k >= a.calls]:
            t0 = time.monotonic()
            last = distill(None, calls=n, start=a.start, guidance=w, steps=a.steps, lr=a.lr, out=out/f'w{w:g}', progress=False,
                           **({'batch_size': a.batch} if a.batch else {}))
            seconds = time.monotonic() - t0
            s = student_score(load_model(last), a.per_class)
            chain[n] = dict(seconds=seconds, **s)
            print(f"w={w:g}: {n:>2} calls after {seconds:5.0f} s: accuracy {s['accuracy']:.3f}, FID {s['fid']:.2f}", flush=True)
        res['chains'][f'{w:g}'] = chain
        (out/'results.json').write_text(json.dumps(res, indent=1))
    teacher = load_model()
    calls = sorted({*[int(n) for c in res['chains'].values() for n in c], 50})
    for sampler in ('ddim', 'dpm++'):
        res['teacher'][sampler] = {n: scores(teacher, a.per_class, sampler=sampler, steps=n, eta=0.0 if sampler == 'ddim' else None)
                                   for n in calls}
        print(sampler, {n: (round(s['accuracy'], 3), round(s['fid'], 2)) for n, s in res['teacher'][sampler].items()}, flush=True)
    res['teacher']['ddim_eta1'] = {50: scores(teacher, a.per_class, sampler='ddim', steps=50, eta=1.0)}
    res['floor'] = real_floor('digits', Path('runs'), 10 * a.per_class)
    if '3' in res['chains']: rounds_grid(teacher, out/'w3', sorted(map(int, res['chains']['3']), reverse=True), a.start, out/'rounds.png')
    if a.latency and '3' in res['chains']:
        student = load_model(out/'w3'/f'calls_{a.latency:03d}'/'checkpoint.pt')
        res['latency'] = dict(teacher_dpm20=demo_latency(teacher, 'dpm++', 20, 3.0), teacher_dpm4=demo_latency(teacher, 'dpm++', 4, 3.0),
                              student=demo_latency(student, 'ddim', a.latency, 3.0))
        print('demo seconds per image', res['latency'])
    (out/'results.json').write_text(json.dumps(res, indent=1))
    print(f"floor FID {res['floor']:.2f}; results in {out/'results.json'}")

def plot(path, png):
    "FID at w = 1 against network calls: the students, and the teacher with DDIM and DPM-Solver++ (judged accuracy is in the tables)."
    import matplotlib.pyplot as plt
    res = json.loads(Path(path).read_text())
    fig, ax = plt.subplots(figsize=(5.5, 3))
    for sampler, style in (('ddim', 'C0o-'), ('dpm++', 'C1s-')):
        pts = sorted((int(n), s['fid']) for n, s in res['teacher'][sampler].items())
        ax.plot(*zip(*pts), style, label=f'teacher + {"DDIM (η = 0)" if sampler == "ddim" else "DPM-Solver++"}', ms=4)
    pts = sorted((int(n), s['fid']) for n, s in res['chains']['1'].items())
    ax.plot(*zip(*pts), 'C2^-', label='student (w = 1 folded in)', ms=5)
    ticks = sorted({int(n) for n in res['teacher']['ddim']})
    ax.set(xscale='log', yscale='log', xlabel='network calls per image', ylabel="FID in the judge's features (w = 1)")
    ax.set_xticks(ticks, [str(t) for t in ticks]); ax.minorticks_off()
    ax.legend(fontsize=7); fig.tight_layout(); fig.savefig(png, dpi=70); print(f'wrote {png}')

if __name__ == '__main__':
    if sys.argv[1:2] == ['plot']: plot(*sys.argv[2:4]); sys.exit()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--w', type=float, nargs='+', default=[3.0, 1.0], help='the chains: guidance folded in')
    p.add_argument('--start', type=int, default=64); p.add_argument('--calls', type=int, default=1)
    p.add_argument('--steps', type=int, default=1000, help='optimiser steps per round')
    p.add_argument('--lr', type=float, default=1e-4); p.add_argument('--batch', type=int)
    p.add_argument('--per-class', type=int, default=40); p.add_argument('--threads', type=int, default=2)
    p.add_argument('--latency', type=int, default=4, help="the student whose demo latency is timed (0: none)")
    p.add_argument('--out', default='runs/bench_distill')
    run(p.parse_args())
