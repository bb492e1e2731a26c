"""Benchmark: which target and loss weighting learns the bundled digits fastest on a CPU?

    python tests/bench_objectives.py                       # the four recipes of lesson 08, 4000 steps each
    python tests/bench_objectives.py --recipes v/min_snr --at 1000 4000
    python tests/bench_objectives.py --plot nbs/images/objectives.png    # draw the figures of the last runs
    python tests/bench_objectives.py --rescore 1 2        # score the exported final models again with other sampler seeds

Trains the `tiny` preset once per recipe (target ε or v, uniform or min-SNR-5 weighting; the same seed, data
order, noise and step count) and scores its EMA weights at the given steps in the judge's feature space of lesson
08: FID against the training split and class accuracy of guided samples (w = 3, DDIM 50 steps, η = 1 and, at the
last step, η = 0). Writes a JSON of every figure and each run's final model. Not a test: it prints figures."""
import argparse, json, time
from pathlib import Path

import torch

from minddpm.metrics import evaluate, train_judge, _stack
from minddpm.data import get_datasets
from minddpm.training import TRAIN_PRESETS, Run, export_model, train
import dataclasses

p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('--recipes', nargs='*', default=['eps/uniform', 'v/uniform', 'eps/min_snr', 'v/min_snr'])
p.add_argument('--at', type=int, nargs='*', default=[1000, 2000, 4000], help='steps at which to score (the last is the run length)')
p.add_argument('--per-class', type=int, default=50, help='samples per class for each score')
p.add_argument('--out', default='runs/objectives')
p.add_argument('--plot', metavar='PNG', help="only plot the JSON of earlier runs to this file")
p.add_argument('--rescore', type=int, nargs='*', metavar='SEED',
               help="only score each recipe's exported final model again, with these sampler seeds: the sampling noise of a score")
a = p.parse_args()

out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
if a.plot:
    import matplotlib.pyplot as plt
    results = json.loads((out/'results.json').read_text())
    fig, axs = plt.subplots(1, 2, figsize=(9, 3))
    for i, (recipe, rows) in enumerate(results.items()):
        for ax, key in zip(axs, ('fid', 'accuracy')):
            ancestral = [r for r in rows if r['eta'] == 1.0]
            ax.plot([r['step'] for r in ancestral], [r[key] for r in ancestral], 'o-', color=f'C{i}', label=f'{recipe}, η = 1')
            last = [r for r in rows if r['eta'] == 0.0]
            ax.plot([r['step'] for r in last], [r[key] for r in last], 's', color=f'C{i}', mfc='none', ms=9,
                    label=f'{recipe}, η = 0' if key == 'fid' else None)
            ax.set(xlabel='training steps (tiny preset, batch 64)', ylabel={'fid': 'feature FID', 'accuracy': 'class accuracy'}[key])
    if (out/'rescores.json').exists():   # the spread of each final score over sampler seeds, drawn as a bar
        rescores = json.loads((out/'rescores.json').read_text())
        for i, recipe in enumerate(results):
            last = [r for r in results[recipe] if r['eta'] == 1.0][-1]
            fids = [last['fid']] + [r['fid'] for r in rescores.get(recipe, [])]
            if len(fids) > 1: axs[0].plot([last['step'] + 60 * (i - 1.5)] * 2, [min(fids), max(fids)], '-', color=f'C{i}', lw=3, alpha=.5)
    axs[0].set_yscale('log'); axs[0].legend(fontsize=7, ncol=2)
    axs[0].set_title('lower is better', fontsize=8); axs[1].set_title('guided, w = 3, DDIM 50', fontsize=8)
    fig.tight_layout(); fig.savefig(a.plot, dpi=80)
    raise SystemExit(f'wrote {a.plot}')
judge, judge_acc = train_judge('digits', 16)
train_set, _ = get_datasets('digits', 16)
with torch.no_grad(): reference = judge.features(_stack(train_set)[0])
results = json.loads((out/'results.json').read_text()) if (out/'results.json').exists() else {}
if a.rescore:
    from minddpm.training import load_model
    rescores = {}
    for recipe in a.recipes:
        m = load_model(out/f"{recipe.replace('/', '_')}.pt")
        for seed in a.rescore:
            r = evaluate(m.model, m.diffusion, judge, reference, per_class=a.per_class, seed=seed)
            rescores.setdefault(recipe, []).append(dict(seed=seed, **r))
            print(f"{recipe:12s} sampler seed {seed}: FID {r['fid']:.2f} accuracy {r['accuracy']:.1%}", flush=True)
    (out/'rescores.json').write_text(json.dumps(rescores, indent=1))
    raise SystemExit()
for recipe in a.recipes:
    objective, weighting = recipe.split('/')
    cfg = dataclasses.replace(TRAIN_PRESETS['tiny'], objective=objective, weighting=weighting, steps=a.at[-1],
                              sample_every=0, out=str(out/recipe.replace('/', '_')))
    run, rows, train_s = Run(cfg), [], 0.0
    for step in a.at:
        t0 = time.perf_counter(); train(run=run, until=step, progress=False); train_s += time.perf_counter() - t0
        etas = (1.0, 0.0) if step == a.at[-1] else (1.0,)
        for eta in etas:
            r = evaluate(run.ema.model, run.diffusion, judge, reference, per_class=a.per_class, eta=eta)
            rows.append(dict(step=step, eta=eta, train_seconds=train_s, **r))
            print(f"{recipe:12s} step {step:5d} η={eta:g}: FID {r['fid']:.2f} accuracy {r['accuracy']:.1%} "
                  f"precision {r['precision']:.2f} recall {r['recall']:.2f} (trained {train_s / 60:.1f} min)", flush=True)
    export_model(run, out/f"{recipe.replace('/', '_')}.pt")
    results[recipe] = rows
    (out/'results.json').write_text(json.dumps(results, indent=1))
