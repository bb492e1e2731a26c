"""Benchmark: lesson 15's DiT against lesson 03's UNet at about the same parameters and the same training compute.

    python tests/bench_dit.py                                   # digits and shapes: speed, then quality at equal CPU-seconds
    python tests/bench_dit.py --unet-steps 1000 --data digits --out runs/bench_dit_small
    python tests/bench_dit.py --speed-only --device cuda --nets seed dit-colab --size 32 --batch 128   # a GPU
    python tests/bench_dit.py plot runs/bench_dit/results.json nbs/images/dit_vs_unet.png
    python tests/bench_dit.py grids runs/bench_dit/results.json nbs/images/dit_samples.png [RECIPES, default unet,dit,dit_lr0.006]

Speed, per network and data set, measured here one after the other on a machine doing nothing else: training images/s
(`train_step` of a real `Run`: forward, backward, AdamW, EMA; median of 20 steps after 3), guided sampling images/s
(`sample` of 100 images, DDIM 50 steps, w = 3: 50 network calls of a doubled batch), and the peak memory of each
(`PeakMemory` around the first three training steps and around the sampling: the rise of the process's resident peak
on a CPU, PyTorch's allocator peak on CUDA), each in a fresh process, at `--threads` threads, and at one thread, which
is what each training run below gets.

Quality at equal compute: for each data set (`digits`, bundled; `shapes`, the RGB folder tests/bench_learning.py makes)
the UNet (`--unet tiny`) trains `--unet-steps` steps, and each DiT recipe (`--unet dit-tiny`, at the UNet's learning
rate and at each of `--dit-lrs`) as many steps as take the same CPU-seconds, from the one-thread step times measured
above. Runs are `minddpm_train` processes with one thread each, two at a time (bench_learning's `train_one`): step
counts, not a clock, fix their length, so a busy machine changes their wall time and nothing else. Scored as
bench_learning scores (its judge, trained on real images only; EMA weights; DDIM 50, η = 1): the judged accuracy of
guided samples (w = 3) and the FID in the judge's features of conditional ones (w = 1), 50 a class, one seed.
Writes OUT/results.json and prints tables. Not a test: it prints figures."""
from __future__ import annotations
import argparse, dataclasses, json, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_learning import dataset, judge, score, train_one
from minddpm.measure import PeakMemory, isolated, median_time
from minddpm.run import Run, TrainConfig
from minddpm.sampling import sample
from minddpm.training import train_step

def n_params(m) -> int: return sum(p.numel() for p in m.parameters())

def _run(net, data, device, threads, batch, size) -> Run:
    torch.set_num_threads(threads)
    return Run(TrainConfig(dataset=data, img_size=size, unet=net, batch_size=batch, device=device, ema_start=0, steps=10_000))

def train_speed(net: str, data: str, device: str, threads: int, batch: int, size: int) -> dict:
    "Training images/s and peak memory of network preset `net` on `data` (a `--dataset`); run in a fresh process."
    run = _run(net, data, device, threads, batch, size)
    x, y = next(iter(run.train_dl))
    with PeakMemory(run.device) as mem:                     # the first steps: activations, gradients, AdamW's state
        for _ in range(3): train_step(run, x, y)
    step_s = median_time(lambda: train_step(run, x, y), reps=20, warmup=0, device=run.device)
    return dict(net=net, params=n_params(run.model), threads=threads, device=str(run.device), batch=run.cfg.batch_size,
                size=size, step_s=step_s, train_img_s=run.cfg.batch_size / step_s, train_peak_mib=mem.peak / 2**20)

def sample_speed(net: str, data: str, device: str, threads: int, batch: int, size: int, samples: int = 100) -> dict:
    "Guided-sampling images/s and peak memory (DDIM 50, w = 3) of an untrained `net`; run in a fresh process."
    run = _run(net, data, device, threads, batch, size)
    labels = torch.arange(samples, device=run.device) % len(run.classes)
    draw = lambda n: sample(run.model, run.diffusion, labels[:n], shape=run.shape, sampler='ddim', steps=50, w=3.0, eta=1.0,
                            generator=torch.Generator(run.device).manual_seed(0))
    draw(4)                                                 # warm-up, a small batch
    with PeakMemory(run.device) as mem: sample_s = median_time(lambda: draw(samples), reps=1, warmup=0, device=run.device)
    return dict(sample_img_s=samples / sample_s, sample_peak_mib=mem.peak / 2**20)

def speed(*args) -> dict:
    "Both, each in a fresh process, so that neither inherits the other's memory (a CPU's resident peak only grows)."
    from bench_dit import sample_speed, train_speed      # importable by name: what `isolated` runs
    keys = ('net', 'data', 'device', 'threads', 'batch', 'size')
    return {**isolated(train_speed, **dict(zip(keys, args))), **isolated(sample_speed, **dict(zip(keys, args)))}

def run(a):
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    path, speeds = out/'results.json', []
    if a.keep_speed: speeds = json.loads(path.read_text())['speed']   # measured by an earlier run into OUT
    for d in a.data if not a.keep_speed else []:
        for net in a.nets:
            for threads in dict.fromkeys([a.threads] + ([] if a.speed_only or a.device != 'cpu' else [1])):
                s = speed(net, dataset(d, out), a.device, threads, a.batch, a.size)
                speeds.append(dict(data=d, **s))
                print(f"{d:>7} {net:>9} ({s['params'] / 1e6:.2f} M) {threads} thread{'s' * (threads > 1)} on {s['device']}: train "
                      f"{s['train_img_s']:7.1f} img/s (peak {s['train_peak_mib']:5.0f} MiB), sample {s['sample_img_s']:6.1f} "
                      f"img/s (peak {s['sample_peak_mib']:5.0f} MiB)", flush=True)
    torch.set_num_threads(a.threads)
    runs = []
    if not a.speed_only:
        for d in a.data: judge(d, out)
        jobs = []
        for d in a.data:
            one = {s['net']: s['step_s'] for s in speeds if s['data'] == d and s['threads'] == 1}
            unet, dit = a.nets
            jobs.append((f'unet=--unet {unet}', d, 0, ['--steps', str(a.unet_steps)]))
            dit_steps = (a.dit_steps[a.data.index(d)] if a.dit_steps else
                         round(a.unet_steps * one[unet] / one[dit]))               # the same CPU-seconds at one thread
            for lr in [None] + a.dit_lrs:
                jobs.append((f"dit{'' if lr is None else f'_lr{lr:g}'}=--unet {dit}" + ('' if lr is None else f' --lr {lr:g}'),
                             d, 0, ['--steps', str(dit_steps)]))
        with ThreadPoolExecutor(2) as pool: runs = list(pool.map(lambda j: train_one(*j, out, 1), jobs))
        for r in runs:
            cached = Path(r['checkpoint']).parent/f'score_{a.per_class}.json'   # a run is scored once
            if not cached.exists(): cached.write_text(json.dumps(score(r['checkpoint'], r['data'], out, a.per_class)))
            r.update(json.loads(cached.read_text()))
            print(f"{r['data']:>7} {r['recipe']:>12}: {r['steps']:5d} steps in {r['wall_s']:4.0f} s, judged {r['accuracy']:6.1%}, "
                  f"FID {r['fid']:6.1f}", flush=True)
    if a.speed_only and path.exists(): runs = json.loads(path.read_text())['quality']   # new speeds, the runs' scores kept
    path.write_text(json.dumps(dict(args=vars(a), speed=speeds, quality=runs), indent=1))
    table(speeds, runs)

def table(speeds, runs):
    print("\n| data | network | parameters | threads | train img/s | train peak MiB | sample img/s | sample peak MiB |")
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    for s in speeds:
        print(f"| {s['data']} | {s['net']} | {s['params'] / 1e6:.2f} M | {s['threads']} | {s['train_img_s']:.0f} | "
              f"{s['train_peak_mib']:.0f} | {s['sample_img_s']:.1f} | {s['sample_peak_mib']:.0f} |")
    if runs:
        print("\n| data | recipe | steps | judged accuracy (w = 3) | feature FID (w = 1) |\n|---|---|--:|--:|--:|")
        for r in runs: print(f"| {r['data']} | {r['recipe']} | {r['steps']} | {r['accuracy']:.1%} | {r['fid']:.1f} |")

def plot(path, png):
    "Quality at equal compute (judged accuracy, FID) and training/sampling speed, UNet against DiT, per data set."
    import matplotlib.pyplot as plt
    res = json.loads(Path(path).read_text())
    q, sp = res['quality'], [s for s in res['speed'] if s['threads'] == res['args']['threads']]
    datas = list(dict.fromkeys(r['data'] for r in q))
    recipes = list(dict.fromkeys(r['recipe'] for r in q))
    fig, axs = plt.subplots(1, 4, figsize=(13, 2.6))
    for ax, what, label in ((axs[0], 'accuracy', 'judged accuracy (w = 3)'), (axs[1], 'fid', 'feature FID (w = 1), lower is better')):
        for i, rec in enumerate(recipes):
            vals = [next((r[what] for r in q if r['data'] == d and r['recipe'] == rec), float('nan')) for d in datas]
            ax.bar([k + (i - (len(recipes) - 1) / 2) * .8 / len(recipes) for k in range(len(datas))], vals, .8 / len(recipes),
                   label=rec, color=f'C{i}')
        ax.set_xticks(range(len(datas)), datas); ax.set_title(label, fontsize=9)
    axs[0].legend(fontsize=6, loc='lower left')
    nets = list(dict.fromkeys(s['net'] for s in sp))
    for ax, what, label in ((axs[2], 'train_img_s', 'training images/s'), (axs[3], 'sample_img_s', 'guided sampling images/s')):
        for i, net in enumerate(nets):
            vals = [next((s[what] for s in sp if s['data'] == d and s['net'] == net), float('nan')) for d in datas]
            ax.bar([k + (i - .5) * .4 for k in range(len(datas))], vals, .4, label=net, color=f'C{i}')
        ax.set_xticks(range(len(datas)), datas); ax.set_title(f"{label}, {res['args']['threads']} CPU threads", fontsize=9)
    axs[2].legend(fontsize=7, loc='lower right')
    fig.tight_layout(); fig.savefig(png, dpi=60)

def grids(path, png, recipes='unet,dit,dit_lr0.006', per_class: int = 4):
    "Guided samples (w = 3, DDIM 50, η = 1, one seed) of every class from the runs of `recipes`, a row of grids per data set."
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid
    from minddpm.training import load_model
    q = json.loads(Path(path).read_text())['quality']
    datas, recipes = list(dict.fromkeys(r['data'] for r in q)), recipes.split(',')
    fig, axs = plt.subplots(len(datas), len(recipes), figsize=(3.2 * len(recipes), 3.4 * len(datas)), squeeze=False)
    for row, d in zip(axs, datas):
        for ax, rec in zip(row, recipes):
            r = next(r for r in q if r['data'] == d and r['recipe'] == rec)
            m = load_model(r['checkpoint'])
            y = torch.arange(len(m.classes)).repeat_interleave(per_class)
            x = sample(m.model, m.diffusion, y, shape=m.shape, steps=50, w=3.0, eta=1.0, generator=torch.Generator().manual_seed(1))
            ax.imshow(make_grid((x + 1) / 2, nrow=per_class, padding=1).permute(1, 2, 0).clamp(0, 1))
            ax.set_title(f"{d}, {rec}: {r['steps']} steps\njudged {r['accuracy']:.0%}, FID {r['fid']:.1f}", fontsize=8); ax.axis('off')
    fig.tight_layout(); fig.savefig(png, dpi=50)
    from PIL import Image
    Image.open(png).convert('RGB').quantize(colors=96).save(png, optimize=True)   # a committed figure under 100 kB

if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] in ('plot', 'grids'): dict(plot=plot, grids=grids)[sys.argv[1]](*sys.argv[2:]); sys.exit()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', nargs='+', default=['digits', 'shapes'])
    p.add_argument('--nets', nargs=2, default=['tiny', 'dit-tiny'], help='the UNet preset and the DiT preset to compare')
    p.add_argument('--unet-steps', type=int, default=2000, help="the UNet's training steps; a DiT trains for the same CPU-seconds")
    p.add_argument('--dit-lrs', type=float, nargs='*', default=[3e-4, 3e-3, 6e-3], help="more DiT runs at these peak learning rates")
    p.add_argument('--dit-steps', type=int, nargs='*', help="the DiT's steps, one per --data (default: the UNet's CPU-seconds "
                                                           "at the one-thread speeds measured first); to add runs to an earlier OUT")
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--device', default='cpu')
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--size', type=int, default=16)
    p.add_argument('--per-class', type=int, default=50)
    p.add_argument('--speed-only', action='store_true', help="measure speed and memory only (a GPU: no judge, no runs); an "
                                                             "OUT/results.json keeps its runs' scores")
    p.add_argument('--keep-speed', action='store_true', help="take the speeds of OUT/results.json instead of measuring them again")
    p.add_argument('--out', default='runs/bench_dit')
    run(p.parse_args())
