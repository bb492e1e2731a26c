"""Benchmark: lesson 11's edits on the shipped model, over several noise seeds, on the 180 held-out digits.

    python tests/bench_editing.py                      # 3 seeds, about 15 minutes on 2 CPU cores
    python tests/bench_editing.py --seeds 1 --out tests/results/editing.json

Denoising: PSNR and judge accuracy of the one-step x̂0, the DDIM walk (η = 0) and the best of five Gaussian blurs, for
σ = 0.1 … 1.6, unconditional and given the label (w = 1). Inpainting: three masks, unconditional and given the label
(w = 1), by replacement (50 calls), by replacement with as many calls as RePaint (230), and by RePaint (jump 5, resample 5):
judge accuracy on the true digit, RMS error of the fill, feature-KID against the training digits. Super-resolution from
4×4: consistency error and judge accuracy of ILVR against bicubic. Not a test: it prints figures and writes a JSON file."""
import argparse, json, statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from minddpm.data import get_datasets
from minddpm.editing import network_calls, denoise, inpaint, repaint_walk, upsample
from minddpm.metrics import _stack, kernel_distance, train_judge
from minddpm.training import load_model

p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('--seeds', type=int, default=3)
p.add_argument('--out', default='tests/results/editing.json')
a = p.parse_args()

m = load_model()
train, val = get_datasets('digits', 16)
(x_train, _), (x_val, y_val) = _stack(train), _stack(val)
judge, _ = train_judge('digits', 16)
with torch.no_grad(): f_train = judge.features(x_train)
psnr = lambda a, b: (10 * torch.log10(4 / ((a - b) ** 2).flatten(1).mean(1))).mean().item()
with torch.no_grad(): accuracy = lambda x: (judge(x).argmax(1) == y_val).double().mean().item()
g = lambda seed: torch.Generator().manual_seed(seed)

def blur(x, width):
    k = torch.exp(-torch.arange(-3, 4.) ** 2 / (2 * width ** 2)); k = k / k.sum()
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode='replicate'), k.view(1, 1, 1, 7))
    return F.conv2d(F.pad(x, (0, 0, 3, 3), mode='replicate'), k.view(1, 1, 7, 1))

results = {'denoise': [], 'inpaint': [], 'upsample': []}
for seed in range(a.seeds):
    for sigma in (0.1, 0.2, 0.4, 0.8, 1.6):
        noisy = x_val + sigma * torch.randn(x_val.shape, generator=g(100 + seed))
        outs = {'blur': max((blur(noisy, w).clamp(-1, 1) for w in (0.5, 0.8, 1.2, 1.8, 2.5)), key=lambda b: psnr(b, x_val))}
        for cond, labels in (('unconditional', None), ('label', y_val)):
            outs[f'one-step x0, {cond}'] = denoise(m.model, m.diffusion, noisy, sigma, labels, steps=1)
            outs[f'walk eta=0, {cond}'] = denoise(m.model, m.diffusion, noisy, sigma, labels)
        for name, out in outs.items():
            results['denoise'].append(dict(seed=seed, sigma=sigma, method=name, psnr=psnr(out, x_val), accuracy=accuracy(out)))
        print(f"seed {seed} σ={sigma}: " + ', '.join(f"{n} {psnr(o, x_val):.2f} dB" for n, o in outs.items()), flush=True)
    masks = {'right half': torch.ones(16, 16), 'bottom half': torch.ones(16, 16), 'centre 8x8': torch.ones(16, 16)}
    masks['right half'][:, 8:] = 0; masks['bottom half'][8:] = 0; masks['centre 8x8'][4:12, 4:12] = 0
    for mname, mk in masks.items():
        for cond, labels in (('unconditional', None), ('label', y_val)):
            for name, kw in (('replacement', dict(resample=1)), ('replacement, 230 steps', dict(steps=230, resample=1)),
                             ('RePaint 5x5', dict(jump=5, resample=5))):
                out = inpaint(m.model, m.diffusion, x_val, mk, labels, w=1.0, generator=g(seed), **kw)
                with torch.no_grad(): kid, _ = kernel_distance(f_train, judge.features(out))
                hole = (1 - mk).bool().expand_as(out)
                r = dict(seed=seed, mask=mname, condition=cond, method=name, accuracy=accuracy(out), kid=kid,
                         fill_rms=((out - x_val)[hole] ** 2).mean().sqrt().item(), calls=network_calls(repaint_walk(**{'steps': 50, **kw})))
                results['inpaint'].append(r)
                print(f"seed {seed} {mname} {cond} {name}: accuracy {r['accuracy']:.1%} fill RMS {r['fill_rms']:.3f} KID {kid:.4f} "
                      f"({r['calls']} calls)", flush=True)
    low = F.avg_pool2d(x_val, 4)
    for name, out in (('bicubic', F.interpolate(low, scale_factor=4, mode='bicubic', align_corners=False).clamp(-1, 1)),
                      ('ILVR', upsample(m.model, m.diffusion, low, 4, generator=g(seed)))):
        r = dict(seed=seed, method=name, consistency=(F.avg_pool2d(out, 4) - low).abs().mean().item(), accuracy=accuracy(out),
                 psnr=psnr(out, x_val))
        results['upsample'].append(r)
        print(f"seed {seed} {name}: consistency {r['consistency']:.4f} accuracy {r['accuracy']:.1%} PSNR {r['psnr']:.2f}", flush=True)

def summary(rows, keys, value):
    groups = {}
    for r in rows: groups.setdefault(tuple(r[k] for k in keys), []).append(r[value])
    return {' / '.join(map(str, k)): (statistics.mean(v), min(v), max(v)) for k, v in groups.items()}
print('\nmeans over seeds (min, max):')
for task, keys, values in (('denoise', ('sigma', 'method'), ('psnr', 'accuracy')), ('inpaint', ('mask', 'condition', 'method'),
                           ('accuracy', 'fill_rms', 'kid')), ('upsample', ('method',), ('consistency', 'accuracy', 'psnr'))):
    for value in values:
        for k, (mean, lo, hi) in summary(results[task], keys, value).items(): print(f"{task} {value} {k}: {mean:.4f} ({lo:.4f}, {hi:.4f})")
Path(a.out).parent.mkdir(parents=True, exist_ok=True)
Path(a.out).write_text(json.dumps(results, indent=1))
print(f"wrote {a.out}")
