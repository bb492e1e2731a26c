"""Benchmark: flow matching against today's v-prediction at the same training cost, scored against network calls.

    python tests/bench_flow.py                                    # digits and shapes, 2,000 steps a model
    python tests/bench_flow.py --data digits --steps 1000 --out runs/bench_flow_small
    python tests/bench_flow.py plot runs/bench_flow/results.json nbs/images/flow_calls.png

For each data set (`digits`, bundled; `shapes`, the RGB folder of tests/shapes.py that tests/bench_learning.py makes):
- `v`: `minddpm_train --objective v` (the tiny preset's recipe) for `--steps` steps;
- `flow`: `minddpm_train --objective flow` plus `--flow-flags`, for the same steps (same network, batch and step cost);
- `reflow`: a flow run of `--base-steps`, then one round of reflow (lesson 13: `reflow_pairs`, `reflow`) on
  `--pairs` of its own pairs, for as many steps as bring its whole cost (base run + making the pairs + reflow, in
  measured seconds) to the cost of `--steps` steps of the flow run.
Every training run is a `minddpm_train` process (bench_learning's `train_one`, one thread each, two at a time).

Scored as tests/bench_learning.py scores (lesson 08's judge, trained on real images only; EMA weights, precision
'auto', one seed for the noise): the judged accuracy of guided samples (w = 3) and the FID in the judge's features of
conditional ones (w = 1) against 1,000 real images, at each count of network calls, for v + DDIM (η = 0), v +
DPM-Solver++(2M), flow + Euler, flow + Heun (2k − 1 calls for k steps) and reflow + Euler. The real-data floor is the
FID of as many real images, not among the 1,000. Also the held-out error of x̂0 per tenth of the path τ (a v-model's
step t is placed at τ = σ_t/(α_t + σ_t)), comparable across the objectives.
Writes OUT/results.json and prints tables. Not a test: it prints figures."""
from __future__ import annotations
import argparse, json, shlex, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_learning import dataset, judge, train_one
from minddpm.data import get_datasets, to_uint8
from minddpm.flow import flow_coordinates, reflow, reflow_pairs
from minddpm.metrics import _stack, frechet_distance
from minddpm.sampling import sample
from minddpm.training import load_model

SAMPLERS = {'v': ('ddim', 'dpm++'), 'flow': ('euler', 'heun'), 'reflow': ('euler',)}

def calls_to_steps(sampler: str, calls: int) -> int:
    "Steps of `sampler` that take at most `calls` network calls (Heun: 2k − 1 for k steps)."
    return (calls + 1) // 2 if sampler == 'heun' else calls

@torch.no_grad()
def score(m, data: str, out: Path, sampler: str, steps: int, per_class: int, seed: int = 1) -> dict:
    "Judged accuracy at w = 3 and judge-feature FID at w = 1 of `per_class` samples a class, as bench_learning scores."
    j, _, ref = judge(data, out)
    y = torch.arange(len(m.classes)).repeat(per_class)
    def features(w):
        x = sample(m.model, m.diffusion, y, shape=m.shape, sampler=sampler, steps=steps, w=w,
                   **({'eta': 0.0} if sampler == 'ddim' else {}), generator=torch.Generator().manual_seed(seed), precision='auto')
        return j.features(to_uint8(x).float() / 127.5 - 1)
    guided, plain = features(3.0), features(1.0)
    right = j.head(guided).argmax(1) == y
    return dict(accuracy=right.double().mean().item(), fid=frechet_distance(ref, plain))

@torch.no_grad()
def real_floor(data: str, out: Path, n: int) -> float:
    "FID of `n` real images that are not among the judge's 1,000 reference images (the floor a perfect model would reach)."
    j, _, ref = judge(data, out)
    src = dataset(data, out, 'judge' if data != 'digits' else 'train')
    real, _ = _stack(get_datasets(src, 16, val_frac=0.2 if data != 'digits' else 0.1)[0])
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))   # the judge's reference: the first 1,000
    return frechet_distance(ref, j.features(real[order[1000:1000 + n]]))

@torch.no_grad()
def x0_error_by_tau(m, data: str, bins: int = 10, seed: int = 0) -> list[float]:   # data: a `--dataset`
    "Held-out mean squared error of x̂0 per tenth of the path τ ∈ (0, 1), at w = 1; a v-model is read at the step nearest each τ."
    val, labels = _stack(get_datasets(data, 16)[1])                # the held-out split the runs never trained on
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(val.shape, generator=g)
    tau = (torch.arange(len(val)) % bins + torch.rand(len(val), generator=g)) / bins       # each bin equally often
    flow = m.diffusion.objective == 'flow'
    if flow: x, t = m.diffusion.add_noise(val, tau, eps)[0], tau
    else:
        table = torch.tensor([flow_coordinates(m.diffusion, val[:1], s)[1] for s in range(m.diffusion.T)])
        t = (table[None] - tau[:, None]).abs().argmin(1)                                      # the step nearest τ
        x = m.diffusion.add_noise(val, t, eps)[0]
    out = torch.cat([m.model(x[i:i + 256], m.diffusion.network_time(t[i:i + 256]), labels[i:i + 256]) for i in range(0, len(x), 256)])
    err = (m.diffusion.predictions(x, t, out)[1] - val).square().flatten(1).mean(1)
    b = (tau * bins).long().clamp(max=bins - 1)
    return [err[b == k].mean().item() for k in range(bins)]

def step_seconds(checkpoint, pairs, n: int = 20) -> float:
    "Seconds of one training step of the run `checkpoint` holds, timed here (as the pairs were made) on `pairs`."
    from minddpm.training import Run, fit_step
    run = Run(load_model(checkpoint).config)
    x0, eps, y = pairs
    times = []
    for k in range(n + 3):
        i = torch.randint(0, len(x0), (run.cfg.batch_size,))
        t0 = time.perf_counter(); fit_step(run, x0[i], y[i], run.diffusion.sample_timesteps(len(i)), eps[i])
        if k >= 3: times.append(time.perf_counter() - t0)   # after 3 warm-up steps
    return sorted(times)[len(times) // 2]

def make_reflow(a, data: str, out: Path) -> dict:
    """The base flow run, its pairs and one round of reflow, for a whole cost of `a.steps` flow steps: making the pairs
    counts as the training steps the same process takes in that time (both timed here, one after the other)."""
    base = train_one(f"flow_base={a.flow_flags}", data, 0, ['--steps', str(a.base_steps)], out, 1)   # trained already: read back
    folder = out/'runs'/f'reflow_{data}'
    if not (folder/'checkpoint.pt').exists():
        m = load_model(base['checkpoint'])
        t0 = time.perf_counter()
        pairs = reflow_pairs(m.model, m.diffusion, len(m.classes), a.pairs, m.shape, steps=a.pair_steps)
        pair_s = time.perf_counter() - t0
        step_s = step_seconds(base['checkpoint'], pairs)
        steps = max(100, round(a.steps - a.base_steps - pair_s / step_s))
        t0 = time.perf_counter()
        reflow(base['checkpoint'], pairs, steps=steps, out=str(folder), progress=False)
        (folder/'cost.json').write_text(json.dumps(dict(pair_s=pair_s, step_s=step_s, pair_steps_equivalent=pair_s / step_s,
                                                        reflow_s=time.perf_counter() - t0, reflow_steps=steps)))
    cost = json.loads((folder/'cost.json').read_text())
    return dict(recipe='reflow', data=data, checkpoint=str(folder/'checkpoint.pt'), base_steps=base['steps'],
                wall_s=base['wall_s'] + cost['pair_s'] + cost['reflow_s'], **cost)

def run(a):
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    for d in a.data: dataset(d, out); judge(d, out)
    jobs = [(f"{r}={flags}", d, 0, ['--steps', str(n)]) for d in a.data
            for r, flags, n in (('v', '--objective v', a.steps), ('flow', a.flow_flags, a.steps), ('flow_base', a.flow_flags, a.base_steps))]
    with ThreadPoolExecutor(2) as pool: runs = list(pool.map(lambda j: train_one(*j, out, 1), jobs))   # one thread each
    runs = [r for r in runs if r['recipe'] != 'flow_base'] + [make_reflow(a, d, out) for d in a.data]   # in this process, 2 threads
    results = []
    for d in a.data:
        for r in (r for r in runs if r['data'] == d):
            m = load_model(r['checkpoint'])
            r['x0_error_by_tau'] = x0_error_by_tau(m, dataset(d, out))
            for sampler in SAMPLERS[r['recipe']]:
                for steps in sorted({calls_to_steps(sampler, c) for c in a.calls + ([10] if sampler == 'dpm++' else [])}):
                    s = score(m, d, out, sampler, steps, a.per_class)
                    calls = 2 * steps - 1 if sampler == 'heun' else steps
                    results.append(dict(data=d, recipe=r['recipe'], sampler=sampler, calls=calls, steps=steps, **s))
                    print(f"{d:>7} {r['recipe']:>6} {sampler:>6} {calls:3d} calls: judged {s['accuracy']:6.1%}, FID {s['fid']:7.2f}", flush=True)
        n = a.per_class * len(m.classes)   # as many real images as samples
        results.append(dict(data=d, recipe='real', sampler='-', calls=0, steps=0, accuracy=judge(d, out)[1], fid=real_floor(d, out, n)))
    (out/'results.json').write_text(json.dumps(dict(args=vars(a), runs=runs, scores=results), indent=1))
    table(results, runs)

def table(results, runs):
    for r in runs:
        print(f"{r['data']:>7} {r['recipe']:>6}: {r.get('steps', r.get('reflow_steps'))} steps, {r['wall_s']:.0f} s of training"
              + (f" (base {r['base_steps']} steps, pairs {r['pair_s']:.0f} s = {r['pair_steps_equivalent']:.0f} steps, reflow {r['reflow_steps']} steps {r['reflow_s']:.0f} s)" if r['recipe'] == 'reflow' else ''))
        if 'x0_error_by_tau' in r: print('         x̂0 MSE by tenth of τ:', ' '.join(f'{e:.3f}' for e in r['x0_error_by_tau']))
    for d in dict.fromkeys(s['data'] for s in results):
        print(f"\n{d}: FID (judged accuracy) by network calls")
        for key in dict.fromkeys((s['recipe'], s['sampler']) for s in results if s['data'] == d):
            row = [s for s in results if s['data'] == d and (s['recipe'], s['sampler']) == key]
            print(f"  {key[0]:>6} {key[1]:>6}: " + '  '.join(f"{s['calls']}: {s['fid']:.1f} ({s['accuracy']:.0%})" for s in row))

COLOURS = {('v', 'ddim'): 'C0', ('v', 'dpm++'): 'C1', ('flow', 'euler'): 'C2', ('flow', 'heun'): 'C3', ('reflow', 'euler'): 'C4',
           'v': 'C1', 'flow': 'C2', 'reflow': 'C4'}   # one colour per model and sampler; per model on the x̂0 panel

def plot(path, png):
    import matplotlib.pyplot as plt
    res = json.loads(Path(path).read_text())
    scores, data = res['scores'], list(dict.fromkeys(s['data'] for s in res['scores']))
    fig, axs = plt.subplots(len(data), 3, figsize=(13, 3 * len(data)), squeeze=False)
    for row, d in zip(axs, data):
        for k, key in enumerate(dict.fromkeys((s['recipe'], s['sampler']) for s in scores if s['data'] == d and s['recipe'] != 'real')):
            pts = [s for s in scores if s['data'] == d and (s['recipe'], s['sampler']) == key]
            for ax, what in zip(row, ('fid', 'accuracy')):
                ax.plot([s['calls'] for s in pts], [s[what] for s in pts], marker='o', ms=3, label=f'{key[0]} + {key[1]}',
                        ls='--' if key[0] == 'v' else '-', c=COLOURS[key])
        real = next(s for s in scores if s['data'] == d and s['recipe'] == 'real')
        row[0].axhline(real['fid'], c='0.5', lw=1, ls=':', label='real images')
        row[1].axhline(real['accuracy'], c='0.5', lw=1, ls=':', label="judge on real images")
        row[0].set(xscale='log', yscale='log', ylabel=f'{d}: feature FID (w = 1)', xlabel='network calls')
        row[1].set(xscale='log', ylabel=f'{d}: judged accuracy (w = 3)', xlabel='network calls')
        for r in (r for r in res['runs'] if r['data'] == d):
            row[2].plot((torch.arange(10) + .5) / 10, r['x0_error_by_tau'], marker='o', ms=3, label=r['recipe'],
                        ls='--' if r['recipe'] == 'v' else '-', c=COLOURS[r['recipe']])
        row[2].set(yscale='log', xlabel='τ on the path (0: data, 1: noise)', ylabel='held-out x̂0 MSE (w = 1)')
        row[2].legend(fontsize=7)
    axs[0, 0].legend(fontsize=7); fig.tight_layout(); fig.savefig(png, dpi=60)

if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == 'plot': plot(*sys.argv[2:4]); sys.exit()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', nargs='+', default=['digits', 'shapes'])
    p.add_argument('--steps', type=int, default=2000, help='training steps of v and flow; the cost reflow is held to')
    p.add_argument('--base-steps', type=int, default=1500, help='steps of the flow run reflow starts from')
    p.add_argument('--pairs', type=int, default=2000, help='pairs reflow trains on')
    p.add_argument('--pair-steps', type=int, default=16, help='Euler steps that make each pair')
    p.add_argument('--flow-flags', default='--objective flow', help='minddpm_train flags of the flow runs')
    p.add_argument('--calls', type=int, nargs='+', default=[1, 2, 4, 8, 16, 32, 50])
    p.add_argument('--per-class', type=int, default=40)
    p.add_argument('--out', default='runs/bench_flow')
    run(p.parse_args())
