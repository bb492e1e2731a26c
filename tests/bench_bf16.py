"""Benchmark: does sampling with bf16 weights keep the shipped model's quality, and how much faster is it on this CPU?

    python tests/bench_bf16.py                   # quality over 5 seeds, then speed
    python tests/bench_bf16.py --seeds 3 --per-class 30

Quality: guided samples of the shipped model (w = 3, DDIM 50, η = 1) in fp32 and with bf16 weights, from the same
noise, for several seeds; the judge of lesson 08 gives feature-FID and class accuracy. bf16 passes if its mean lies
within the spread of fp32 over the seeds (run-to-run noise). Speed: one guided network call (both branches batched) of
the tiny UNet at 16 px and the seed UNet at 32 px, in fp32, autocast to bf16, and with bf16 weights, median of
repeats in one process. Not a test: it prints figures."""
import argparse, statistics, time

import torch

from minddpm.data import cpu_has_bf16, get_datasets
from minddpm.metrics import _stack, evaluate, train_judge
from minddpm.conditioning import ConditionalUNet, guided_eps
from minddpm.sampling import _network
from minddpm.training import load_model
from minddpm.unet import unet_preset

p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('--seeds', type=int, default=5)
p.add_argument('--per-class', type=int, default=50)
p.add_argument('--model', help='a checkpoint or exported model (default: the shipped one)')
a = p.parse_args()
print(f"bf16 instructions on this CPU: {cpu_has_bf16()}; torch {torch.__version__}, {torch.get_num_threads()} threads")

m = load_model(a.model)
judge, _ = train_judge('digits', m.shape[-1])
train_set, _ = get_datasets('digits', m.shape[-1])
with torch.no_grad(): reference = judge.features(_stack(train_set)[0])
scores = {'fp32': [], 'bf16': []}
for seed in range(a.seeds):
    for precision in scores:
        r = evaluate(m.model, m.diffusion, judge, reference, per_class=a.per_class, shape=m.shape, seed=seed, precision=precision)
        scores[precision].append(r)
        print(f"seed {seed} {precision}: FID {r['fid']:.2f} accuracy {r['accuracy']:.1%} ({r['seconds']:.0f} s)", flush=True)
for key in ('fid', 'accuracy'):
    f32, b16 = ([r[key] for r in scores[p]] for p in ('fp32', 'bf16'))
    inside = min(f32) <= statistics.mean(b16) <= max(f32)
    print(f"{key}: fp32 {statistics.mean(f32):.4g} ± {statistics.stdev(f32):.2g} (range {min(f32):.4g}–{max(f32):.4g}), "
          f"bf16 {statistics.mean(b16):.4g} ± {statistics.stdev(b16):.2g}: bf16's mean {'within' if inside else 'OUTSIDE'} fp32's range")

def step_time(net, x, t, y, reps=20):
    with torch.no_grad():
        for _ in range(3): guided_eps(net, x, t, y, 3.0)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter(); guided_eps(net, x, t, y, 3.0); times.append(time.perf_counter() - t0)
    return statistics.median(times)

for name, size, batch in (('tiny', 16, 100), ('seed', 32, 16)):
    model = ConditionalUNet(10, **unet_preset(name, in_channels=1 if name == 'tiny' else 3)).eval()
    x, t, y = torch.randn(batch, model.inc.net[0].in_channels, size, size), torch.full((batch,), 500), torch.arange(batch) % 10
    def autocast(x, t, *y):
        with torch.autocast('cpu', dtype=torch.bfloat16): return model(x, t, *y).float()
    ms = {'fp32': step_time(model, x, t, y), 'autocast bf16': step_time(autocast, x, t, y),
          'bf16 weights': step_time(_network(model, 'bf16', torch.device('cpu')), x, t, y)}
    print(f"{name} UNet, {batch} images at {size} px, one guided call: " +
          ', '.join(f"{k} {v * 1000:.1f} ms ({ms['fp32'] / v:.2f}×)" for k, v in ms.items()), flush=True)
