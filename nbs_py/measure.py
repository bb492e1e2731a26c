# %%
#| default_exp measure

# %% [markdown]
# # Measuring
# > How the benchmark takes a figure (median time after warm-up, peak memory, a fresh process per measurement) and the two measurements it is made of: a training step and guided sampling, of the original recipe or of minddpm

# %%
#| export
from __future__ import annotations
import importlib, math, platform, random, re, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from minddpm.conditioning import ConditionalUNet
from minddpm.data import get_datasets
from minddpm.device import autocast, resolve_precision
from minddpm.forward import Diffusion
from minddpm.original import SeedSettings, SeedTrainer, seed_model, seed_sample
from minddpm.run import Run, TrainConfig
from minddpm.sampling import sample
from minddpm.training import train_step
from minddpm.unet import unet_preset

# %%
#| hide
from fastcore.test import *
import matplotlib.pyplot as plt
from torch import nn

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0);


# %% [markdown]
# A figure of speed is worth something only if it can be taken again. Lesson 09 takes every figure the
# same way:
#
# - **Time** is the median of several calls, after warm-up calls that are not counted: the first calls
#   pay for memory allocation, kernel selection and, with `torch.compile`, compilation. A GPU runs its
#   work queued behind Python's back, so each call is timed between two synchronisations.
# - **Memory** is the peak while a block runs. On a GPU it is PyTorch's allocator peak. On a CPU there
#   is no allocator to ask, so it is the process's peak resident memory (Linux `VmHWM`), which a second
#   measurement in the same process would not see: freed memory stays with the process.
# - **Each measurement runs in a fresh Python process**, so each memory peak starts from a clean
#   process and no measurement inherits another's allocations or compiled kernels. Starting a process
#   costs a few seconds, which is not timed.

# %%
#| export
def _sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()   # wait for the queued kernels

def median_time(fn,                     # the function to time, called with no arguments
                reps: int = 5,          # timed calls; their median is returned
                warmup: int = 1,        # calls before them, not counted
                device='cpu',           # on CUDA, each call is timed between `torch.cuda.synchronize()`s
               ) -> float:
    "Median seconds of `fn()` over `reps` calls, after `warmup` calls that are not counted."
    for _ in range(warmup): fn()
    times = []
    for _ in range(reps):
        _sync(device); t0 = time.perf_counter()
        fn(); _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


# %% [markdown]
# Twelve calls of one convolution, each call's time kept: the first pays for setting up, and the others
# still spread, which one timing would not show. `median_time` returns the median of the eleven after
# the first.

# %%
conv, h = nn.Conv2d(64, 64, 3, padding=1), torch.randn(16, 64, 32, 32)
calls = []
def call():
    t0 = time.perf_counter(); conv(h); calls.append(time.perf_counter() - t0)
with torch.no_grad(): med = median_time(call, reps=11, warmup=1)
fig, ax = plt.subplots(figsize=(5, 2.2))
ax.bar(range(1, 13), [1000 * s for s in calls], color=['tab:gray'] + ['tab:blue'] * 11)
ax.axhline(1000 * med, color='tab:orange', label=f'median_time: {1000 * med:.1f} ms')
ax.set(xlabel='call (grey: warm-up, not counted)', ylabel='ms', title='Conv2d 64→64, 3×3, 16 images at 32×32')
ax.legend(loc='upper right');


# %% [markdown]
# `PeakMemory` reads the peak above the level at entry. On Linux, writing 5 to `/proc/self/clear_refs`
# restarts the process's peak from its current size.

# %%
#| export
def _proc_status(key: str) -> int | None:
    "A `/proc/self/status` entry in bytes (Linux), or None where there is none."
    try: text = Path('/proc/self/status').read_text()
    except OSError: return None
    m = re.search(rf'^{key}:\s+(\d+) kB', text, re.M)
    return int(m[1]) * 1024 if m else None

class PeakMemory:
    "Peak memory while the block runs: `.peak` above the level at entry and `.total`, in bytes (None where it cannot be read)."
    def __init__(self,
                 device='cpu'):  # CUDA: PyTorch's allocator peak; anything else: the process's peak resident memory
        self.cuda = torch.device(device).type == 'cuda'
    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            try: Path('/proc/self/clear_refs').write_text('5')   # restart the peak (VmHWM) from the current resident size
            except OSError: pass
            self.start = _proc_status('VmRSS')
        return self
    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize(); self.total = torch.cuda.max_memory_allocated()
        else: self.total = _proc_status('VmHWM')
        self.peak = None if self.total is None or self.start is None else self.total - self.start


# %%
with PeakMemory('cpu') as mem:
    big = torch.ones(32 * 2**20); del big    # 128 MiB, written
print(f"peak above the start: {mem.peak / 2**20:.0f} MiB" if mem.peak is not None else "no peak to read on this system")


# %% [markdown]
# `isolated` runs a function in a fresh process, started with `spawn` so that it inherits nothing. The
# new process imports the function by its module and name. A function that a notebook defines lives in
# `__main__`, which no other process can import, so `isolated` runs the package's copy of it instead:
# the minddpm module nbdev exported it to, found in `minddpm._modidx`.

# %%
#| export
def _call(module: str, name: str, kwargs: dict):
    return getattr(importlib.import_module(module), name)(**kwargs)

def _home(fn) -> str:
    "The module a fresh process imports `fn` from: its own, or for a notebook's copy, the minddpm module it is exported to."
    if fn.__module__ != '__main__': return fn.__module__
    from minddpm._modidx import d
    homes = [m for m, syms in d['syms'].items() if f'{m}.{fn.__name__}' in syms]
    if len(homes) != 1: raise ValueError(f"isolated runs functions of minddpm's modules, found by name; {fn.__name__!r} "
                                         f"is in {len(homes)} of them ({', '.join(homes) or 'none'})")
    return homes[0]

def isolated(fn,         # a function of an importable module; a notebook's copy of a minddpm function runs as the package's
             **kwargs):  # its keyword arguments; they and the result must be picklable
    "Run `fn(**kwargs)` in a fresh Python process and return its result."
    from minddpm import measure   # the package's copy of `_call`: a fresh process can import it, not a notebook's
    with ProcessPoolExecutor(1, mp_context=get_context('spawn')) as pool:
        return pool.submit(measure._call, _home(fn), fn.__name__, kwargs).result()


# %% [markdown]
# A figure means little without the machine it was taken on:

# %%
#| export
def describe_device(device,            # a torch device or its name
                   ) -> str:
    "The accelerator, or the CPU and the threads PyTorch uses."
    device = torch.device(device)
    if device.type == 'cuda': return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try: name = re.search(r'^model name\s*:\s*(.+)$', Path('/proc/cpuinfo').read_text(), re.M)[1]
    except (OSError, TypeError): pass
    return f'{name}, {torch.get_num_threads()} threads'


# %%
print(isolated(describe_device, device='cpu'))   # this page's copy, run as minddpm.measure's in a fresh process
test_fail(lambda: _home(lambda: None), contains="isolated runs functions of minddpm's modules")


# %% [markdown]
# The two measurements each take either the baseline, a `SeedSettings` of `minddpm.original` (or a dict
# of its fields, which crosses into a fresh process), or `'minddpm'`, the package itself.
# `measure_training` runs training steps on the bundled digits (resized to `size`; one channel, so both networks have the same shape) and
# returns the median step time, images per second and the peak memory. The baseline's EMA is measured
# in its averaging phase, the one a long run spends its time in; minddpm trains through `Run` and
# `train_step`, exactly as `minddpm_train` does.

# %%
#| export
def _settings(variant) -> SeedSettings | None:
    if variant == 'minddpm': return None
    return variant if isinstance(variant, SeedSettings) else SeedSettings(**variant)


def training_batches(size: int,        # image side in pixels (the digits are resized to it)
                     batch: int,       # images per batch
                     n: int,           # number of batches
                     seed: int = 0,    # seeds the train/validation split and the draws
                    ) -> list:
    "`n` batches of exactly `batch` digits from the training split, drawn with replacement (so any batch size works)."
    train, _ = get_datasets('digits', size, seed=seed)
    x, y = torch.stack([train[i][0] for i in range(len(train))]), torch.as_tensor(train.labels)
    idx = torch.randint(len(x), (n, batch), generator=torch.Generator().manual_seed(seed))
    return [(x[i], y[i]) for i in idx]


# %%
#| export
def measure_training(variant='minddpm',       # 'minddpm', or the baseline: a `SeedSettings` or a dict of its fields
                     size: int = 32,          # image side in pixels (the digits are resized to it); a multiple of 8
                     batch: int = 16,         # images per training step
                     device='cpu',            # where to train: a torch device or its name
                     precision: str = 'fp32',  # minddpm's autocast: 'auto', 'fp32', 'bf16' or 'fp16' (baseline: `amp`)
                     compile: bool = False,   # `torch.compile` minddpm's model (the baseline: its `compile` field)
                     steps: int = 5,          # timed steps; their median is the step time
                     warmup: int = 2,         # steps before them, not counted
                     seed: int = 0,           # seeds the weights, the noise, the label drops and the batches
                    ) -> dict:
    "Median training step time, images/s and peak memory of the baseline (`SeedSettings`) or `'minddpm'`."
    torch.manual_seed(seed); random.seed(seed)
    settings = _settings(variant)
    if settings is None:
        run = Run(TrainConfig(img_size=size, unet='seed', batch_size=batch, steps=steps + warmup, device=str(device),
                              precision=precision, compile=compile, ema_start=0, seed=seed, sample_every=0,
                              objective='eps', weighting='uniform'))   # the baseline's loss; v and min-SNR cost the same
        step = lambda x, y: train_step(run, x, y)
    else:
        step = SeedTrainer(settings, size, steps + warmup, device=device, step_start_ema=0).step
    batches = iter(training_batches(size, batch, steps + warmup, seed))
    with PeakMemory(device) as mem:
        step_s = median_time(lambda: step(*next(batches)), reps=steps, warmup=warmup, device=device)
    return dict(step_s=step_s, images_per_s=batch / step_s, peak_bytes=mem.peak, total_bytes=mem.total)


# %% [markdown]
# `measure_sampling` times guided sampling steps (w = 3) on a batch of labels and divides by their
# count; with `steps` set to a sampler's full length it times the whole sampler. minddpm samples through
# `sample`.

# %%
#| export
def _minddpm_sampler_model(size, device, precision, compile):
    model = ConditionalUNet(10, **unet_preset('seed', in_channels=1)).to(device).eval()
    if torch.device(device).type == 'cuda': model = model.to(memory_format=torch.channels_last)   # as `Run` does
    return torch.compile(model) if compile else model

def measure_sampling(variant='minddpm',       # 'minddpm', or the baseline: a `SeedSettings` or a dict of its fields
                     size: int = 32,          # image side in pixels; a multiple of 8
                     batch: int = 16,         # images sampled together, labelled 0 … 9 in turn
                     device='cpu',            # where to sample: a torch device or its name
                     precision: str = 'fp32',  # minddpm's autocast: 'auto', 'fp32', 'bf16' or 'fp16' (baseline: `amp`)
                     compile: bool = False,   # `torch.compile` minddpm's model (the baseline: its `compile` field)
                     runs: dict | None = None,  # name → sampling steps to time (None: the whole sampler)
                     reps: int = 3,           # timings whose median is taken, for runs of up to 100 steps
                     seed: int = 0,           # seeds the weights and the noise
                    ) -> dict:
    """Guided sampling (w = 3) timed for each `runs` entry, name → steps (default {'step': 4}). minddpm: `sample` with DDIM
    for that many steps, or DDPM's 1000 for None. The baseline: the first `steps` of its 999-step loop, all for None.
    Runs of up to 100 steps give the median of `reps`, longer ones are timed once, after one uncounted 2-step run."""
    torch.manual_seed(seed)
    settings = _settings(variant)
    labels = torch.arange(batch, device=device) % 10
    if settings is None:
        model, diffusion = _minddpm_sampler_model(size, device, precision, compile), Diffusion().to(device)
        dtype = resolve_precision(torch.device(device), precision)
        count = lambda steps: steps or diffusion.T
        def run(steps):
            with autocast(torch.device(device), dtype):
                sample(model, diffusion, labels, shape=(1, size, size), sampler='ddpm' if steps is None else 'ddim', steps=steps or 1, w=3.0)
    else:
        _, forward = seed_model(settings, size, device=device)
        forward.eval()
        count = lambda steps: 999 if steps is None else min(steps, 999)
        run = lambda steps: seed_sample(forward, labels, (1, size, size), settings, stop_after=steps)
    run(2)
    out = {}
    for name, steps in (runs or {'step': 4}).items():
        n = count(steps)
        total = median_time(lambda: run(steps), reps if n <= 100 else 1, 0, device)
        out[name] = dict(total_s=total, steps=n, step_s=total / n)
    return out


# %% [markdown]
# What each returns, here for the original recipe on tiny images (lesson 09 takes the real figures):

# %%
tr = measure_training(SeedSettings(), size=8, batch=4, steps=3, warmup=1)
sa = measure_sampling(SeedSettings(), size=8, batch=4, runs={'step': 2, 'first 10 steps': 10}, reps=1)
mib = lambda b: '—' if b is None else f'{b / 2**20:,.0f} MiB'
print(f"training: {1000 * tr['step_s']:.0f} ms a step, {tr['images_per_s']:.1f} images/s, peak {mib(tr['peak_bytes'])} "
      f"above the start ({mib(tr['total_bytes'])} in all)")
for name, r in sa.items(): print(f"sampling, {name}: {r['total_s']:.2f} s for {r['steps']} steps, {1000 * r['step_s']:.0f} ms a step")


# %% [markdown]
# `largest_batch` finds how many images train within a memory budget: the peak grows in a straight line
# with the batch, so two measurements place the line, and the batch where it meets the budget is checked
# (and stepped down until its measured peak fits). On CUDA the benchmark asks it for each column's
# largest batch in 15 GiB, the memory of a free Colab T4.

# %%
#| export
def largest_batch(variant='minddpm',      # 'minddpm', or the baseline: a `SeedSettings` or a dict of its fields
                  size: int = 64,         # image side in pixels; a multiple of 8
                  device='cuda',          # where to train: a torch device or its name
                  precision: str = 'fp32',  # minddpm's autocast: 'auto', 'fp32', 'bf16' or 'fp16' (baseline: `amp`)
                  compile: bool = False,  # `torch.compile` minddpm's model (the baseline: its `compile` field)
                  budget: float = 15 * 2**30,  # the limit on a fresh process's peak memory while training, in bytes
                  probe: int = 8,         # the smaller of the two batches the line is fitted to (the other: 2·`probe`)
                 ) -> dict:
    """The largest training batch whose peak memory stays within `budget` bytes: the peak is measured at `probe` and
    2·`probe` images, the straight line through them says where the budget is reached, and that batch is checked."""
    def total(b):
        try: return isolated(measure_training, variant=variant, size=size, batch=b, device=device, precision=precision,
                             compile=compile, steps=1, warmup=1)['total_bytes']
        except Exception as e:
            if 'out of memory' in str(e).lower(): return math.inf
            raise
    m1, m2 = total(probe), total(2 * probe)
    if not m2 > m1: raise RuntimeError(f"the peak did not grow from {probe} to {2 * probe} images ({m1 / 2**20:.0f} → "
                                       f"{m2 / 2**20:.0f} MiB): too small to see; try a larger probe")
    per_image = (m2 - m1) / probe
    b = max(1, int((budget - (m1 - per_image * probe)) / per_image))
    for _ in range(8):   # the line is an estimate: step down until the measured peak fits
        peak = total(b)
        if peak <= budget: return dict(batch=b, total_bytes=peak, per_image_bytes=per_image, budget=budget)
        b = max(1, int(b * min(0.95, budget / peak)))
    raise RuntimeError(f"no batch of {variant} fits in {budget / 2**30:.1f} GiB at {size}×{size}")
