# %%
#| default_exp bench

# %% [markdown]
# # Performance
# > Each of minddpm's speed-ups measured against the original recipe, switched on one at a time, and `minddpm_bench`: minddpm against the original side by side, with ratios

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/09_performance.ipynb)
# This lesson has no GPU-only cells: it ran top to bottom in 2 minutes on an idle 2-core CPU (measured: 122 s); a Colab runtime is no slower. Its `#| slow` cells, the full-size ladders and bench, took 7 minutes more there, and `run_bench(full=True)` takes half an hour.

# %%
#| hide
# On Colab, or wherever minddpm is missing, install it: from PyPI, else from the course's repository.
# Where it is installed (as in CI) this does nothing.
import importlib.util, subprocess, sys
if importlib.util.find_spec('minddpm') is None:
    for source in ('minddpm', 'git+https://github.com/minddpm/minddpm'):
        if subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', source]).returncode == 0:
            print(f"installed minddpm from {'PyPI' if source == 'minddpm' else source}"); break
        print(f"pip could not install {source}" + (", trying the course's repository" if source == 'minddpm' else ''))
    else: raise RuntimeError('could not install minddpm from PyPI or from https://github.com/minddpm/minddpm')

# %%
#| export
from __future__ import annotations
import time
from dataclasses import asdict, replace

import torch

from minddpm.device import cpu_has_bf16, pick_device, resolve_precision
from minddpm.measure import describe_device, isolated, largest_batch, measure_sampling, measure_training
from minddpm.original import SeedSettings

# %%
#| export
#| hide
# the names of the baseline's page and the measuring page, importable from here as before they had pages
from minddpm.original import (
    SeedConv, SeedDown, SeedUp, SeedAttention, SeedUNet, seed_to_minddpm, seed_model, SeedTrainer, seed_sample)
from minddpm.measure import PeakMemory, median_time, training_batches

# %%
#| hide
from fastcore.test import *
from minddpm.exercises import check   # the exercises at the end
from nbdev.showdoc import show_doc
import json
import matplotlib.pyplot as plt
import math
from torch import nn
from minddpm.conditioning import ConditionalUNet
from minddpm.device import pick_preset
from minddpm.unet import unet_preset

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # 'colab' sizes on a CUDA GPU, 'tiny' elsewhere

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)              # the same weights on every run

# %% [markdown]
# Lessons 03–07 made choices for speed and said why: attention through
# `F.scaled_dot_product_attention`, the time embedding broadcast rather than copied, both guidance
# branches in one batched pass, channels-last weights, mixed precision that really runs, and
# `torch.compile`. This lesson measures each one. It takes the original recipe as a baseline,
# switches the changes on one at a time, and ends with `minddpm_bench`: the package against the
# baseline at the same architecture and batch, with the ratios. Only ratios measured together mean
# anything: another machine, or this one while busy, gives other seconds.
#
# ## The baseline, written out
#
# [The original recipe](original.ipynb) (`minddpm.original`) writes out the conditional UNet as the seed
# article shows it (channels 64-128-256-256, the two-conv bottleneck, 15.66 M weights), its training
# step and its sampler, each computed as the original computes it. Its blocks are lesson 03's blocks
# under other names. Where it differs is what this lesson measures:
#
# - **attention** through `nn.MultiheadAttention` with its default `need_weights=True`, which builds the
#   (B, HW, HW) attention map and throws it away;
# - **the time embedding `.repeat`ed** to every pixel before it is added to a block's output;
# - **two forward passes per guided sampling step**, one with the label and one without;
# - **float32 throughout**: the original asks for autocast but never gets it (see "Mixed precision");
# - an EMA that loops over the parameters in Python, and every tensor in the default memory format.
#
# The first two are tensors the original builds and minddpm does not. Their sizes, block by block, for
# one forward pass of 16 images at 32×32, next to the block's own output:

# %%
seed_net, sizes = SeedUNet(1, 1).eval(), {}
def record(name):   # MB of the block's output, and of what the original builds beside it
    def hook(m, inp, out):
        B, C, H, W = out.shape
        extra = B * (H * W) ** 2 if isinstance(m, SeedAttention) else out.numel()   # the (B, HW, HW) map, or the repeat
        sizes[name] = (4 * out.numel() / 2**20, 4 * extra / 2**20)
    return hook
hooks = [m.register_forward_hook(record(name)) for name, m in seed_net.named_children()
         if isinstance(m, (SeedAttention, SeedDown, SeedUp))]
with torch.no_grad(): seed_net(torch.randn(16, 1, 32, 32), torch.randint(0, 1000, (16,)), torch.arange(16) % 10)
for h in hooks: h.remove()
names = list(sizes)[::-1]
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.barh(names, [sizes[n][1] for n in names], color=['tab:red' if n.startswith('sa') else 'tab:orange' for n in names])
ax.barh(names, [sizes[n][0] for n in names], color='none', edgecolor='k', label="the block's own output")
ax.set(xlabel='MB (float32), 16 images at 32×32',
       title='built by the original alone:\nattention maps (sa…, red), time-embedding repeats (orange)')
ax.legend(loc='center right');

# %% [markdown]
# At full resolution the attention map (sa6: 16 × 1024 × 1024 floats, 64 MB) is sixteen times the
# block's own output, and in training it is kept for the backward pass. Otherwise the baseline is
# minddpm's `seed` preset under other names: with its weights renamed (`seed_to_minddpm`) both compute
# the same function, to float32 rounding.

# %%
ours = ConditionalUNet(10, **unet_preset('seed', in_channels=1)).eval()
ours.load_state_dict(seed_to_minddpm(seed_net.state_dict()))   # strict: every weight has its place, none left over
x, t, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 10, 500, 999]), torch.tensor([3, -1, 7, 0])
with torch.no_grad(): e_seed, e_ours = seed_net(x, t, y), ours(x, t, y)
print(f"largest difference in ε̂: {(e_seed - e_ours).abs().max():.1e} (ε̂ itself is of order {e_seed.abs().mean():.2f})")
test_close(e_seed, e_ours, eps=1e-4)

# %% [markdown]
# `SeedSettings` holds the six changes this lesson measures, all off by default; `seed_model`,
# `SeedTrainer` and `seed_sample` apply them to the baseline, so each can be switched on by itself:

# %%
SeedSettings()

# %% [markdown]
# ## Measuring
#
# [Measuring](measure.ipynb) (`minddpm.measure`) holds how every figure here is taken. Time is the median
# of several calls after warm-up calls that are not counted (`median_time`), waiting for the GPU where
# there is one. Memory is the peak while the work runs (`PeakMemory`): PyTorch's allocator peak on a
# GPU, the process's peak resident memory on a CPU. And each measurement runs in a fresh Python process
# (`isolated`), so each memory peak starts from a clean process and no measurement inherits another's
# allocations or compiled kernels.
#
# Two measurements are made that way, for the baseline (a `SeedSettings`) or for `'minddpm'`, the package
# itself: `measure_training` (training steps on the bundled digits: the median step time, images per
# second and the peak memory) and `measure_sampling` (guided sampling steps, w = 3). Here is the first,
# at three batch sizes, float32 on both sides: the peak grows in a straight line with the batch, and the
# slope is the memory each image costs.

# %%
batches, peaks = (2, 4, 8), {}
for name, variant in (('original', asdict(SeedSettings())), ('minddpm, float32', 'minddpm')):
    runs = [isolated(measure_training, variant=variant, batch=b, steps=1, warmup=1) for b in batches]
    peaks[name] = [(r['peak_bytes'] or math.nan) / 2**20 for r in runs]   # NaN where the system has no peak to read
fig, ax = plt.subplots(figsize=(4.5, 2.6))
for name, mb in peaks.items():
    ax.plot(batches, mb, 'o-', label=f"{name}: {(mb[-1] - mb[0]) / (batches[-1] - batches[0]):.0f} MB per image")
ax.set(xlabel='images per training step', ylabel='peak memory (MB)', xticks=batches,
       title='one training step, 32×32 digits')
ax.legend();


# %% [markdown]
# Mixed precision pays only where the hardware multiplies half-precision numbers natively. Every CUDA GPU
# with tensor cores (a T4 or newer) does; among CPUs, those with AMX or AVX512-BF16 do for bf16.
# `bench_precision` makes that choice for the benchmark:

# %%
#| exports
def _dtype_name(dtype) -> str: return {None: 'fp32', torch.bfloat16: 'bf16', torch.float16: 'fp16'}[dtype]

def bench_precision(device,            # a torch device or its name
                   ) -> str:
    "The autocast precision minddpm is benchmarked at on `device`: 'bf16', 'fp16' or 'fp32'."
    device = torch.device(device)
    if device.type == 'cpu': return 'bf16' if cpu_has_bf16() else 'fp32'
    return _dtype_name(resolve_precision(device, 'auto'))


# %%
print(f"{describe_device('cpu')}: bf16 instructions {'yes' if cpu_has_bf16() else 'no'}; "
      f"minddpm is benchmarked here at {bench_precision('cpu')}")


# %% [markdown]
# ## Each change, one at a time
#
# `ladder` starts from the original and switches the changes on in the order the lessons introduced
# them, each on top of the ones before. Every rung is measured in its own process, at the bench's
# setting: the seed UNet at 32×32, batch 16.

# %%
#| exports
def ladder(kind: str = 'training',  # 'training' (`measure_training`) or 'sampling' (`measure_sampling`)
           size: int = 32,            # image side in pixels; a multiple of 8
           batch: int = 16,           # images per training step or sampling batch
           device='cpu',              # where to measure: a torch device or its name
           amp: str | None = None,    # the AMP rung's autocast: 'bf16', 'fp16' or 'fp32'; None: `bench_precision(device)`
           compile: bool = True,      # end with the `torch.compile` rung
           log=print,                 # called with a line of progress before each rung
          ) -> list[dict]:
    """Switch the speed-ups on one after another (each on top of the ones before) and measure every rung in a fresh
    process: `kind` 'training' (`measure_training`) or 'sampling' (one guided step, `measure_sampling`)."""
    if kind not in ('training', 'sampling'): raise ValueError(f"kind must be 'training' or 'sampling', got {kind!r}")
    amp = amp or bench_precision(device)
    changes = [('original', {}), ('attention kernel', dict(attention='sdpa')), ('broadcasting', dict(broadcast=True)),
               ('batched guidance', dict(batched=True)), ('channels_last', dict(channels_last=True)),
               (f'AMP ({amp})', dict(amp=amp)), ('torch.compile', dict(compile=True))]
    if kind == 'training': changes = [c for c in changes if c[0] != 'batched guidance']   # training has no guidance
    if not compile: changes = changes[:-1]
    settings, out = SeedSettings(), []
    for name, change in changes:
        settings = replace(settings, **change)
        log(f"{kind}: + {name}")
        kw = dict(variant=asdict(settings), size=size, batch=batch, device=str(device))
        r = isolated(measure_training, **kw) if kind == 'training' else isolated(measure_sampling, **kw)['step']
        out.append(dict(change=name, settings=asdict(settings), **r))
    return out


# %%
#| hide
#| export
def plot_ladder(rungs: list[dict],     # `ladder`'s result: 'change', 'step_s' and, for `memory`, 'peak_bytes'
                title: str,            # title of the step-time plot
                memory: bool = False):  # add a plot of each rung's peak memory, in MB
    "Bars of each rung's step time, labelled with the speed-up over the original; optionally its peak memory beside."
    import matplotlib.pyplot as plt
    names, secs = [r['change'] for r in rungs], [r['step_s'] for r in rungs]
    fig, axs = plt.subplots(1, 2 if memory else 1, figsize=(9 if memory else 5.5, 0.35 * len(rungs) + 0.9), squeeze=False)
    ax = axs[0, 0]
    ax.barh(names[::-1], [1000 * s for s in secs[::-1]], color='tab:blue')
    for i, s in enumerate(secs[::-1]): ax.text(1000 * s, i, f' {secs[0] / s:.2f}×', va='center')
    ax.set(xlabel='ms per step', title=title, xlim=(0, 1250 * max(secs)))
    if memory:
        mb = [(r['peak_bytes'] or 0) / 2**20 for r in rungs]
        axs[0, 1].barh(names[::-1], mb[::-1], color='tab:orange')
        axs[0, 1].set(xlabel='peak memory (MB)', yticks=[])
    fig.tight_layout()
    return fig


# %%
show_doc(plot_ladder)

# %% [markdown]
# ### The attention kernel
#
# `nn.MultiheadAttention` returns the attention map, averaged over the heads, unless it is told not to.
# The original never uses it, but asks for it by default: PyTorch must then build the map as a tensor,
# (B, HW, HW), and cannot use a fused kernel. At 32×32 with a batch of 16, one block's map is:

# %%
blk = SeedAttention(64).eval()
h = torch.randn(16, 64, 32, 32)
with torch.no_grad():
    _, attn_map = blk.mha(*(h.flatten(2).transpose(1, 2),) * 3)
print(f"{tuple(attn_map.shape)} floats: {attn_map.numel() * 4 / 2**20:.0f} MB, kept for the backward pass in training;"
      f" at 64×64 it is {16 * 4096**2 * 4 / 2**30:.1f} GB")

# %% [markdown]
# Three ways to run the same block with the same weights: the original call; `need_weights=False`;
# and the weights applied by hand around `F.scaled_dot_product_attention`, which picks a fused
# kernel (FlashAttention on recent GPUs, a blocked kernel on CPUs) that never stores the map.

# %%
ms = {}
with torch.inference_mode():
    ref = blk(h)
    for kernel in ('weights', 'no_weights', 'sdpa'):
        blk.kernel = kernel
        test_close(blk(h), ref, eps=1e-4)   # the same function
        ms[kernel] = 1000 * median_time(lambda: blk(h), reps=5)
fig, ax = plt.subplots(figsize=(5, 1.7))
ax.barh(list(ms)[::-1], list(ms.values())[::-1], color='tab:blue')
for i, v in enumerate(list(ms.values())[::-1]): ax.text(v, i, f' {v:.0f} ms', va='center')
ax.set(xlabel='ms per call', title='one attention block: 16 images, 32×32, 64 channels', xlim=(0, 1.3 * max(ms.values())));

# %% [markdown]
# `need_weights=False` alone is not enough everywhere: in inference, `nn.MultiheadAttention` takes a
# "fast path" of its own, which on a CPU can be slower than calling `scaled_dot_product_attention`
# directly. minddpm's `SelfAttention` (lesson 03) calls it directly, so it gets the fused kernel in
# training and in sampling alike.
#
# ### Broadcasting
#
# The original adds the time embedding to every pixel by first copying it there with `.repeat`
# (`_time_map` in `minddpm.original`). Adding a (B, C, 1, 1) tensor to (B, C, H, W) broadcasts with no copy. Each
# repeat is a tensor as large as the block's output, written once and read once:

# %%
emb = torch.randn(16, 128, 1, 1)
print(f"one repeat at 32×32, 128 channels: {emb.repeat(1, 1, 32, 32).numel() * 4 / 2**20:.0f} MB, against {emb.numel() * 4 / 2**10:.0f} kB broadcast")

# %% [markdown]
# ### Batched guidance
#
# Guidance needs ε̂ with and without the label. The original calls the network twice, at batch B;
# minddpm calls it once at 2B, with the null label in the second half (lesson 04). The arithmetic is
# the same; one call at twice the batch gives the kernels bigger matrices and launches half as many.
# The gain is largest where launches cost the most: small batches on a GPU.
#
# ### channels_last
#
# Convolution libraries (oneDNN on CPUs, cuDNN on GPUs) compute in channels-last order (N, H, W, C).
# With weights and images stored that way, they skip the conversions in and out of every convolution.
# `Run` stores the model channels-last on CUDA, where tensor cores need it.
#
# ### Mixed precision
#
# Half-precision matrix units (tensor cores on GPUs, AMX on recent Xeons) multiply bf16 or fp16 many
# times faster than float32, and the activations kept for the backward pass take half the memory.
# The original asks for autocast but never gets it. In `with torch.autocast("cuda") and
# torch.enable_grad():`, `and` evaluates to its second operand, so only `enable_grad` is entered:

# %%
ctx = torch.autocast('cpu', dtype=torch.bfloat16) and torch.enable_grad()
with ctx: out = nn.Linear(4, 4)(torch.randn(2, 4))
print(f"the context entered: {type(ctx).__name__}; the output: {out.dtype}")
test_eq(out.dtype, torch.float32)
with torch.autocast('cpu', dtype=torch.bfloat16), torch.enable_grad(): out = nn.Linear(4, 4)(torch.randn(2, 4))
test_eq(out.dtype, torch.bfloat16)   # a comma enters both

# %% [markdown]
# ### torch.compile
#
# `torch.compile` traces the network and generates fused kernels: GroupNorm, GELU and the additions
# around each convolution become a few kernels instead of many, and on a GPU the launches shrink.
# The first call pays for the compilation: on a 2-core CPU 100 s for the training step and 45 s for
# the sampling step, which never paid back there (see below).
#
# ### The ladder
#
# Every rung is a fresh process and several timed steps, so at the bench's setting (32×32, batch 16) the two
# ladders take minutes on a 2-core CPU, compile rungs included. The cells here climb them at a quarter
# of the pixels and half the batch, 16×16 and 8 images, without the compile rung, in about a minute. The
# `#| slow` cell after them climbs both at the bench's setting, and what is said below is read from its
# bars.
#
# Training first: AdamW, the EMA and all, as in `SeedTrainer`. Batched guidance does not apply.

# %%
train_rungs = ladder('training', size=16, batch=8, compile=False)
plot_ladder(train_rungs, 'training step, seed UNet 16×16, batch 8', memory=True);

# %% [markdown]
# One guided sampling step (w = 3), on 8 images:

# %%
sample_rungs = ladder('sampling', size=16, batch=8, compile=False)
plot_ladder(sample_rungs, 'guided sampling step, 16×16, batch 8');

# %%
#| hide
test_eq([r['change'] for r in train_rungs][:3], ['original', 'attention kernel', 'broadcasting'])
test_eq(sample_rungs[-1]['settings'], dict(attention='sdpa', broadcast=True, batched=True, channels_last=True,
                                            amp=bench_precision('cpu'), compile=False))   # every change but compile on at the top

# %% [markdown]
# These ratios are not those of the bench's setting. At 16×16 an attention map is a sixteenth of its size at
# 32×32 (it grows with the square of the pixel count), and a step does a sixteenth of the arithmetic, so fixed
# costs per call weigh more and each change moves by its own amount. Both ladders at 32×32, batch 16, each
# ending with `torch.compile`, are in the next cell. It is flagged `slow`, so the tests skip it; its bars come
# from `python tests/lessons.py 09_performance --slow=ladder`:

# %%
#| slow
for kind in ('training', 'sampling'):
    rungs = ladder(kind, log=lambda m: None)
    plot_ladder(rungs, f'{kind}, every change and torch.compile, seed UNet 32×32, batch 16', memory=kind == 'training')
    test_eq(rungs[-1]['settings']['compile'], True)

# %% [markdown]
# What the bars at 32×32 show, and what runs on other machines agree with:
#
# - **The attention kernel is the big structural win** in training, and it takes most of the training
#   peak away, because the maps the original keeps for the backward pass are gone.
# - **Mixed precision gives the second big step where the CPU has bf16 units** (AMX or AVX512-BF16), and
#   takes another slice off the training peak. Where the CPU has none, `bench_precision` picks float32
#   and the AMP rung changes nothing.
# - **Broadcasting, batched guidance and channels_last gain less, and less steadily**: on a shared CPU
#   their bars move from run to run by as much as they gain. They matter more on a GPU, where each kernel
#   launch and memory pass costs more relative to the arithmetic.
# - **`torch.compile` did not pay on a 2-core CPU**: in the run above it made the training step 26% slower
#   than eager bf16 and the sampling step no faster (earlier runs: from 13% slower to 6% faster), after 100 s
#   (training) and 45 s (sampling) of compiling. On a GPU it does: on an H200 the
#   `colab` preset trained at 16.1 steps/s in bf16 and 20.7 compiled (lesson 07's GPU check). So minddpm
#   compiles on request (`--compile`), and `minddpm_bench` turns it on for CUDA only.

# %% [markdown]
# ## minddpm against the baseline: `minddpm_bench`
#
# `run_bench` measures, in one session and at the same architecture, image size and batch:
#
# - training images/s and peak memory: the baseline's step against `train_step`;
# - the time of one guided sampling step: the baseline's two passes against minddpm's one;
# - guided sampling end to end: the baseline's 999 steps against minddpm's DDPM-1000 and DDIM-50.
#   The 999-step and 1000-step runs take minutes, so by default they are the measured time per step
#   times the step count, marked *estimated*; `full=True` (`--full`) runs them to the end.
#
# minddpm runs at the precision the device does best (`bench_precision`): autocast bf16 on a CUDA
# GPU that has it, fp16 on an older one, and on a CPU bf16 only where the CPU has bf16 instructions
# (AMX or AVX512-BF16), else float32. A float32 minddpm column is measured too whenever that choice
# is not float32, so the gain without mixed precision is on the table as well. `torch.compile` is on
# for CUDA and off on a CPU, where it does not pay (see "Each change, one at a time" above).
# On CUDA it also finds the largest batch that trains in 15 GB (`largest_batch`, from the straight
# lines above).

# %%
#| hide
#| export
TARGETS = {  # device type → (figure, least ratio to the baseline); from the course's performance goals
    'cpu': {'training images/s': 2.0, 'guided step': 1.8, 'DDIM-50 end to end': 35.0},
    'cuda': {'training images/s': 3.0, 'largest batch in 15 GB': 4.0},
}

def _check_bench_args(size: int, batch: int, steps: int):
    "Raise a ValueError naming the first of `run_bench`'s sizes that cannot work."
    if size < 8 or size % 8: raise ValueError(f"size must be a multiple of 8 (the seed UNet halves it 3 times), got {size}")
    if batch < 1: raise ValueError(f"batch must be at least 1, got {batch}")
    if steps < 1: raise ValueError(f"steps must be at least 1, got {steps}")


# %% [markdown]
# Each column is measured in fresh processes, one after the other, and the result keeps the raw
# measurements beside the table's figures and their ratios to the original:

# %%
#| exports
def run_bench(size: int = 32,           # image side in pixels: a multiple of 8
              batch: int = 16,          # images per training step and per sampling batch
              device='auto',            # 'auto' (CUDA, then MPS, then CPU), or a torch device or its name
              precision: str = 'auto',  # minddpm's autocast: 'auto' (`bench_precision`), 'fp32', 'bf16' or 'fp16'
              compile='auto',           # `torch.compile` minddpm: True or False; 'auto': on CUDA only
              full: bool = False,       # run the 999- and 1000-step samplers to the end instead of estimating them
              find_largest_batch=None,  # also find each column's largest batch in 15 GiB; None: on CUDA only
              steps: int = 5,           # training steps timed per column, after 2 warm-up steps
              log=print,                # called with a line of progress before each measurement
             ) -> dict:
    """minddpm against the original recipe at the same architecture (the seed UNet), image size and batch, in this session.
    Returns the measurements, the figures of the table and their ratios to the original."""
    _check_bench_args(size, batch, steps)
    t0, device = time.perf_counter(), pick_device(device)
    precision = bench_precision(device) if precision == 'auto' else precision
    resolve_precision(device, precision)   # refuses unknown names
    compile = device.type == 'cuda' if compile == 'auto' else bool(compile)
    find_largest_batch = device.type == 'cuda' if find_largest_batch is None else find_largest_batch
    variants = {'original': dict(variant=asdict(SeedSettings())), 'minddpm fp32': dict(precision='fp32', compile=False),
                'minddpm': dict(precision=precision, compile=compile)}
    if precision == 'fp32' and not compile: del variants['minddpm fp32']
    raw = {}
    for name, v in variants.items():
        kw = {'variant': 'minddpm', **v, 'size': size, 'batch': batch, 'device': str(device)}
        log(f"{name}: training …")
        raw[name] = {'training': isolated(measure_training, **kw, steps=steps)}
        runs = {'step': 4} if name == 'original' else {'step': 4, 'ddim_50': 50}
        if full: runs['ddpm'] = None
        log(f"{name}: sampling{' (full DDPM)' if full else ''} …")
        raw[name]['sampling'] = isolated(measure_sampling, **kw, runs=runs)
        if find_largest_batch:
            log(f"{name}: largest batch in 15 GiB …")
            raw[name]['largest_batch'] = largest_batch(**{k: w for k, w in kw.items() if k != 'batch'})
    res = dict(device=describe_device(device), device_type=device.type, torch=torch.__version__, size=size, batch=batch,
               precision=precision, compile=compile, full=full, columns=list(raw), raw=raw)
    return _report(res, time.perf_counter() - t0)


# %%
#| hide
#| export
_LOWER_IS_BETTER = ('training peak memory (MB)', 'guided step (ms)', 'DDPM end to end (s)', 'DDIM-50 end to end (s)')

def _ratio(row, original, value):
    "How many times better than the original: a speed-up, a memory saving, a batch multiple."
    if original is None or value is None: return None
    return original / value if row in _LOWER_IS_BETTER else value / original

def _rows(raw: dict, full: bool):
    "The table's figures, row → column → value, and the (row, column) cells that are estimates."
    mb = lambda b: None if b is None else b / 2**20
    rows = {'training images/s': {k: r['training']['images_per_s'] for k, r in raw.items()},
            'training peak memory (MB)': {k: mb(r['training']['peak_bytes']) for k, r in raw.items()},
            'guided step (ms)': {k: r['sampling']['step']['step_s'] * 1000 for k, r in raw.items()}}
    ddpm = {k: r['sampling']['ddpm']['total_s'] if full else r['sampling']['step']['step_s'] * (999 if k == 'original' else 1000)
            for k, r in raw.items()}
    rows['DDPM end to end (s)'] = ddpm
    rows['DDIM-50 end to end (s)'] = {k: ddpm[k] if k == 'original' else r['sampling']['ddim_50']['total_s'] for k, r in raw.items()}
    if all('largest_batch' in r for r in raw.values()):
        rows['largest batch in 15 GB'] = {k: r['largest_batch']['batch'] for k, r in raw.items()}
    estimated = [] if full else [['DDPM end to end (s)', k] for k in raw] + [['DDIM-50 end to end (s)', 'original']]
    return rows, estimated

def _report(res: dict, seconds: float) -> dict:
    "`res` with the table's rows, the cells that are estimates, the ratios to the original, the targets and the time taken."
    res['rows'], res['estimated'] = _rows(res['raw'], res['full'])
    res['ratios'] = {row: {name: _ratio(row, vals['original'], vals[name]) for name in res['raw'] if name != 'original'}
                     for row, vals in res['rows'].items()}
    res['targets'], res['seconds'] = TARGETS.get(res['device_type'], {}), seconds
    return res

def format_table(res: dict,            # `run_bench`'s result
                ) -> str:
    "The short table of `run_bench`'s results: each figure, each minddpm column's ratio to the original, and the target."
    cols, est = res['columns'], res['estimated']
    mode = f"{res['precision']} autocast" if res['precision'] != 'fp32' else 'float32'
    lines = [f"minddpm against the original recipe: the seed UNet at {res['size']}×{res['size']}, batch {res['batch']}, "
             f"on {res['device']} (torch {res['torch']})",
             f"minddpm: {mode}, {'compiled' if res['compile'] else 'not compiled'}. "
             "The original: float32, two passes per guided step, 999 steps."]
    if est: lines.append("* estimated: the measured time per step × the step count (--full measures it)")
    lines += ['', f"{'':27s}" + ''.join(f'{c:>22s}' for c in cols) + f"{'target':>12s}"]
    fmt = lambda v: '—' if v is None else f'{v:,.0f}' if v >= 100 else f'{v:.3g}'
    for row, vals in res['rows'].items():
        line = f'{row:27s}'
        for c in cols:
            text = fmt(vals[c]) + (' *' if [row, c] in est else '  ')
            r = res['ratios'][row].get(c)
            if r is not None: text += f' {r:6.2f}×'
            line += f'{text:>22s}'
        goal, r = res['targets'].get(row.split(' (')[0]), res['ratios'][row].get('minddpm')
        if goal is not None and r is not None: line += f"{f'≥ {goal:g}× ' + ('✓' if r >= goal else '✗'):>12s}"
        lines.append(line)
    return '\n'.join(lines)


# %%
show_doc(format_table)


# %% [markdown]
# The command `minddpm_bench` (page *Commands*) does the same and also writes the results as JSON (`--json`,
# default `minddpm_bench.json`). At its default setting, 32×32 and batch 16, it takes minutes on a 2-core
# CPU; here it runs at 16×16, batch 8, in under a minute:

# %%
res = run_bench(size=16, batch=8, log=lambda m: None)
print(format_table(res))

# %% [markdown]
# The same ratios as a picture, each against its target where the course sets one (read them to one
# digit: they move by about 15% between runs on a shared machine):

# %%
def plot_ratios(res):   # each minddpm column's ratio to the original, per row of the table, with the targets
    rows, cols = list(res['ratios']), [c for c in res['columns'] if c != 'original']
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(rows) * len(cols) + 0.8))
    for j, c in enumerate(cols):
        ax.barh([i + 0.8 * j / len(cols) for i in range(len(rows))], [res['ratios'][r][c] or 0 for r in rows],
                height=0.8 / len(cols), label=c)
    for i, r in enumerate(rows):
        goal = res['targets'].get(r.split(' (')[0])
        if goal: ax.plot([goal] * 2, [i - 0.1, i + 0.7], 'k--', lw=1, label='target' if i == 0 else None)
    ax.set_yticks([i + 0.4 * (len(cols) - 1) / len(cols) for i in range(len(rows))], rows); ax.invert_yaxis()
    ax.axvline(1, color='gray', lw=0.8)
    ax.set(xscale='log', xlabel='times better than the original (log scale)',
           title=f"{res['device']}, {res['size']}×{res['size']}, batch {res['batch']}, {res['precision']}")
    ax.legend(loc='lower right', fontsize=8)

plot_ratios(res)

# %%
#| hide
test_eq(res['columns'][0], 'original')
test_eq(set(res['rows']), {'training images/s', 'training peak memory (MB)', 'guided step (ms)', 'DDPM end to end (s)', 'DDIM-50 end to end (s)'})
test_eq(json.loads(json.dumps(res))['rows'], res['rows'])   # the results are plain JSON

# %% [markdown]
# The targets are set at the bench's setting, where the attention maps the original builds are sixteen
# times larger. The run the course's figures come from, at 32×32 and batch 16, is flagged `slow`; its table
# comes from `python tests/lessons.py 09_performance --slow=size=32`:

# %%
#| slow
res_32 = run_bench(size=32, batch=16, log=lambda m: None)
print(format_table(res_32))
plot_ratios(res_32)

# %% [markdown]
# `full=True` (`--full`) runs the 999- and 1000-step samplers to the end, about half an hour on a 2-core
# CPU (flagged `slow`). On a 2-core Xeon it confirmed the estimate: 999 × 856 ms is 855 s, and the
# measured run took 849 s.

# %%
#| slow
res_full = run_bench(full=True, log=lambda m: None)
print(format_table(res_full))

# %% [markdown]
# On a GPU, `minddpm_bench --size 64` measures the original's 64×64 setting, compiled, and adds the
# largest batch that trains in 15 GiB, the memory of a free Colab T4:
#
# ```sh
# minddpm_bench --size 64 --batch 16
# ```

# %% [markdown]
# ## Exercises
#
# Write each function in place of its `...` and run its cell: `check` prints ✓, or where your answer differs and a hint
# ([how the checks work](exercises.ipynb)). Keep the stub's parameter names (`check` passes its inputs by name) and
# return the inputs' dtype unless the stub asks for another. Solutions: `tests/solutions/` in the course's repository.
#
# 1. **The attention map's size.** With `need_weights=True`, `nn.MultiheadAttention` builds one weight for every pair
#    of pixels of an image. Given the batch, the height and width of the images at the attention block, and the bytes of
#    one number (4 for float32, 2 for bf16), return the size of the map in bytes, an int. Then: from what side (a power
#    of 2) does one such map, for a batch of 16 in float32, pass the 15 GiB (of 2³⁰ bytes) a Colab T4 offers?

# %%
def attention_map_bytes(batch, height, width, bytes_per_value):   # ints
    ...                                                            # return an int: bytes

check(attention_map_bytes)

# %% [markdown]
# 2. **Channels-last strides.** A tensor stored channels-last keeps its shape, (N, C, H, W); what changes is its
#    strides, the number of elements to step over in memory to reach the next index along each dimension. Given a shape,
#    return the strides of a channels-last tensor of that shape, a tuple of 4 ints in the order of the shape (N, C, H, W).
#    Then: which dimension has stride 1 in the default layout, which in channels-last, and which of the two keeps the
#    numbers a 3×3 convolution multiplies together for one output pixel closer in memory?

# %%
def channels_last_strides(shape):   # (N, C, H, W), a tuple of ints
    ...                              # return a tuple of 4 ints

check(channels_last_strides)
