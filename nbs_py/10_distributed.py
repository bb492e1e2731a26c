# %%
#| default_exp distributed

# %% [markdown]
# # Data parallelism
# > One run on one CPU, eight GPUs or several nodes: torchrun starts the processes, DistributedDataParallel all-reduces the gradients, and a global batch with noise tied to each sample makes every world size train the same weights

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/10_distributed.ipynb)
# This lesson has no GPU-only cells: it starts its processes on the CPU with the gloo backend, and ran top to bottom in 24 seconds on a 2-core CPU (measured). On Colab's one GPU it runs the same way.

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
import atexit, datetime, os, re
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from minddpm.data import pick_device

# %%
#| hide
from fastcore.test import *
from minddpm.exercises import check   # the exercises at the end
import dataclasses, os, subprocess, sys, tempfile
from pathlib import Path
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from minddpm.data import pick_preset
from minddpm.training import TRAIN_PRESETS, load_checkpoint, train

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}; this lesson's processes run on the CPU (gloo), whatever it has")


# %% [markdown]
# The `full` preset trains 150,000 steps at 64×64; on one GPU that is most of a day. The way out that every
# large diffusion model takes is **data parallelism**: put a copy of the model on each of N devices, give
# each copy a different slice of the batch, and average their gradients before every update. The copies
# then take the same step and stay equal, and the batch is computed N times faster.
#
# Nothing of that needs code of our own beyond what this lesson adds to the loop. PyTorch ships the
# engine: `torchrun` starts one process per device (on one machine or many) and tells each where it
# stands through environment variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, and where to meet);
# `torch.distributed` connects them (NCCL between GPUs, gloo between CPUs); and `DistributedDataParallel`
# (DDP) averages the gradients. `minddpm_train` under `torchrun` is the same command on more devices:
#
# ```sh
# torchrun --standalone --nproc-per-node 8 --no-python minddpm_train --preset full --out runs/full
# ```
#
# What this lesson is about is the part that is easy to get subtly wrong: making the run **the same run**
# whatever the number of processes, so that the 8-GPU run is the 1-GPU run, only faster; a checkpoint
# written on 8 GPUs carries on exactly on 1; and a test on a 2-core CPU proves it.
#
# ## One step on two ranks

# %%
def box(ax, x, y, w, h, text, color, **kw):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle='round,pad=0.02,rounding_size=0.08', fc=color, ec='0.3', lw=.8))
    ax.text(x + w / 2, y + h / 2, text, ha='center', va='center', fontsize=8.5, **kw)

def arrow(ax, a, b): ax.add_patch(FancyArrowPatch(a, b, arrowstyle='-|>', mutation_scale=9, color='0.35', lw=.8))

fig, ax = plt.subplots(figsize=(12, 3.3))
ax.set(xlim=(-.1, 12.3), ylim=(-.35, 3.1)); ax.axis('off')
for lane, (rank, pos, after) in enumerate([(1, '1, 3, 5, …, 63', 'quiet: waits at\nthe next barrier'),
                                           (0, '0, 2, 4, …, 62', 'checkpoint, grid,\nW&B, progress bar')]):
    y = 0.15 + 1.55 * lane
    ax.text(-.05, y + .55, f'rank {rank}', ha='right', va='center', fontsize=10, weight='bold')
    box(ax, 0, y, 1.9, 1.1, f'images at\npositions\n{pos}', '#dbe9f6')
    box(ax, 2.2, y, 2.0, 1.1, 't, ε, label drop\nof each position:\nstep_draws(seed,\nstep, position)', '#e8f3e0')
    box(ax, 4.5, y, 2.0, 1.1, 'forward and\nbackward\n(loss of 32)', '#fbe7d0')
    box(ax, 8.1, y, 2.0, 1.1, 'clip, AdamW,\nOneCycle, EMA:\nthe same numbers\non every rank', '#e8f3e0')
    box(ax, 10.4, y, 1.85, 1.1, after, '#f4f4f4' if rank else '#dbe9f6')
    for a, b in [(1.9, 2.2), (4.2, 4.5), (6.5, 6.8), (7.8, 8.1), (10.1, 10.4)]: arrow(ax, (a, y + .55), (b, y + .55))
box(ax, 6.8, 0.15, 1.0, 2.65, 'all-\nreduce:\nmean\ngradient\nof all 64\n(in buckets,\nduring the\nbackward)', '#f6d5d5')
ax.set_title('one optimiser step of a global batch of 64 on 2 processes: only the gradients travel', fontsize=10);


# %% [markdown]
# Only the gradients travel. DDP registers a hook on every parameter; as the backward pass produces
# gradients, it packs them into buckets of about 25 MB and starts an **all-reduce** on each bucket while
# the rest of the backward pass still runs: every rank contributes its gradient and receives the sum,
# which DDP divides by the number of ranks. Afterwards each rank holds the mean gradient of the whole
# global batch, exactly the gradient one process would have computed on all 64 images (up to the order of
# the float additions).
#
# Everything else is computed by every rank for itself, redundantly and identically: the weights start
# equal (DDP copies rank 0's at the start), every rank clips the same gradient, takes the same AdamW step
# with the same learning rate and folds the same weights into the same EMA. So no rank ever sends its
# weights or its EMA, and any rank's EMA could be saved; rank 0's is. One more scalar travels: the loss
# of the global batch, for the progress bar and so that a NaN stops every rank at the same step.
#
# **Gradient accumulation** splits each rank's share into `grad_accum` micro-batches, for a batch that does
# not fit in memory. Their gradients add up in `.grad`; the backward passes of all but the last run under
# DDP's `no_sync()`, so the all-reduce happens once per optimiser step, not once per micro-batch. The
# learning-rate schedule and the EMA step once per optimiser step, never per micro-batch or per process.
#
# ## Joining the run
#
# `join` reads what torchrun put in the environment and joins the process group; without it, the process
# is a run of one, as in every earlier lesson. `Run` calls it and wraps the model in DDP when there is a
# group; rank 0 (`Place.main`) alone writes checkpoints (then every rank waits at a barrier), draws grids,
# logs to W&B and shows the progress bar. The first process of each node reads (or downloads) the data
# before the others, which then find it there (`Place.first`); if any rank fails, every rank stops, and
# rank 0 alone says why: a mistake in the command is printed once, not once per process.

# %%
#| hide
#| export
def _first_then_rest(place, fn, args, kwargs):
    """`fn(*args, **kwargs)` on the first process of each node, then on the others. If it raises anywhere, every rank raises:
    its own error, or `ValueError` quoting the first failed rank's."""
    out = None
    for turn in (True, False):
        error = None
        if (place.local_rank == 0) == turn:
            try: out = fn(*args, **kwargs)
            except (ValueError, OSError, RuntimeError) as e: error = e
        said = place.gather(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None: raise error
        failed = next(((r, m) for r, m in enumerate(said) if m), None)
        if failed: raise ValueError(f"rank {failed[0]} stopped the run: {failed[1]}")
    return out


# %%
#| exports
TIMEOUT = datetime.timedelta(minutes=30)  # how long a collective waits for the slowest rank, e.g. while rank 0 draws a grid

@dataclass(frozen=True)
class Place:
    "Where this process stands in a run: its rank among `world_size` processes, and its rank on its own node."
    rank: int = 0        # 0 … world_size − 1; rank 0 alone writes, logs and draws
    world_size: int = 1  # processes in the run, on all nodes
    local_rank: int = 0  # rank on this node: the GPU it takes
    parallel: bool = False  # in a process group (even of one process, as `torchrun --nproc-per-node 1` makes)

    @property
    def main(self) -> bool: return self.rank == 0

    def barrier(self):
        "Wait until every rank gets here (nothing to wait for in a single process)."
        if self.parallel: dist.barrier()

    def mean(self, x: torch.Tensor, # a tensor on this rank's device, e.g. a scalar loss
             ) -> torch.Tensor:
        "The mean of `x` over all ranks (all-reduced: every rank gets it); `x` itself in a single process."
        if not self.parallel: return x
        x = x.detach().clone(); dist.all_reduce(x)   # a sum: gloo has no average
        return x / self.world_size

    def from_main(self, *values: float, # numbers rank 0 decided, e.g. (out of time?, new step count)
                  device='cpu',         # a device the backend can send from: this rank's GPU with NCCL
                  ) -> tuple[float, ...]:
        "Rank 0's `values` on every rank: decisions made by one clock, applied by all."
        if not self.parallel: return values
        t = torch.tensor(values, dtype=torch.float64, device=device); dist.broadcast(t, 0)
        return tuple(t.tolist())

    def gather(self, obj) -> list: # any picklable object, e.g. this rank's error message or None
        "Every rank's `obj`, in rank order, on every rank: `[obj]` in a single process."
        if not self.parallel: return [obj]
        out = [None] * self.world_size; dist.all_gather_object(out, obj)
        return out

    def first(self, fn, *args, **kwargs):
        """`fn(*args, **kwargs)` on the first process of each node, then on the others (e.g. a download, which they then
        find done). If it raises anywhere, every rank raises: its own error, or `ValueError` quoting the first failed rank's."""
        return _first_then_rest(self, fn, args, kwargs)


# %% [markdown]
# Two nodes of two GPUs each, as torchrun numbers their processes: `rank` counts over the whole run,
# `local_rank` within a node and names the GPU a process takes. Colour marks the two roles a process can have.

# %%
fig, ax = plt.subplots(figsize=(9, 2.4))
ax.set(xlim=(-.1, 9.6), ylim=(-.1, 2.3)); ax.axis('off')
for node in (0, 1):
    box(ax, 4.8 * node, 0, 4.6, 2.2, '', '#f4f4f4'); ax.text(4.8 * node + .15, 1.95, f'node {node}', fontsize=9, weight='bold')
    for local in (0, 1):
        pl = Place(rank=2 * node + local, world_size=4, local_rank=local, parallel=True)
        role = 'main: saves, logs, draws;\nfirst on its node' if pl.main else 'first on its node' if pl.local_rank == 0 else 'after its node\'s first'
        box(ax, 4.8 * node + .2 + 2.2 * local, .15, 2.0, 1.55, f'rank {pl.rank} of {pl.world_size}\nlocal_rank {pl.local_rank}: '
            f'cuda:{pl.local_rank}\n\n{role}', '#dbe9f6' if pl.main else '#e8f3e0' if pl.local_rank == 0 else 'white')
ax.set_title('torchrun --nnodes 2 --nproc-per-node 2: four processes, one per GPU', fontsize=10);


# %% [markdown]
# Then `join` itself. The checks of the device each rank takes (one GPU per local rank, never a GPU index of
# your own, no shared Apple GPU) live in a helper; what is left reads the environment and starts the group.

# %%
#| hide
#| export
def _rank_device(place: Place, device: str, d: torch.device) -> torch.device:
    """The device of this rank: on CUDA the GPU of its local rank (made current). Raises `ValueError` for a GPU index given
    under torchrun or Apple's MPS with several ranks, and `RuntimeError` on a rank beyond the node's GPUs."""
    if d.type == 'cuda':
        if device not in ('auto', 'cuda'):
            raise ValueError(f"device {device!r} names one GPU, but under torchrun each process takes the GPU of its local rank; "
                             f"use --device cuda (or auto)")
        n = torch.cuda.device_count()
        if place.local_rank >= n:
            raise RuntimeError(f"local rank {place.local_rank} has no GPU of its own: torch sees {n} on this node; "
                               f"start at most {n} processes per node (--nproc-per-node {n})")
        d = torch.device('cuda', place.local_rank); torch.cuda.set_device(d)
    elif d.type == 'mps' and place.world_size > 1:
        raise ValueError("several processes cannot share Apple's MPS GPU; use --device cpu, or one process")
    return d


# %%
#| exports
def launched() -> bool:
    "Was this process started by `torchrun` (or `srun torchrun`): does its environment name a rank and a world size?"
    return 'RANK' in os.environ and 'WORLD_SIZE' in os.environ

_joined = False  # did `join` start the process group (so `leave` ends it)?

def join(device: str = 'auto', # as `pick_device` takes it; under torchrun 'cuda' means this local rank's GPU
         ) -> tuple[Place, torch.device]:
    """This process's `Place` and device. Under `torchrun` it joins the process group (or takes one already started): NCCL
    on CUDA, one GPU per local rank, gloo on the CPU, with an explicit `TIMEOUT`. Without the launcher's environment it is
    one process, on `pick_device(device)`. The group is left at exit, or earlier by `leave`. Raises `ValueError` for a GPU index given under torchrun or Apple's MPS
    with several ranks, and `RuntimeError` on a rank beyond the node's GPUs (the error of that rank alone)."""
    global _joined
    d = pick_device(device)
    if not (launched() or dist.is_initialized()): return Place(), d
    if dist.is_initialized():   # a group started by the caller's own code
        place = Place(dist.get_rank(), dist.get_world_size(), int(os.environ.get('LOCAL_RANK', 0)), True)
    else: place = Place(int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), int(os.environ.get('LOCAL_RANK', 0)), True)
    d = _rank_device(place, device, d)
    if not dist.is_initialized():
        dist.init_process_group('nccl' if d.type == 'cuda' else 'gloo', timeout=TIMEOUT,
                                device_id=d if d.type == 'cuda' else None)
        _joined = True
        atexit.register(leave)   # NCCL warns about a group never destroyed
    return place, d

def leave():
    "End the process group `join` started, if it did (at exit, if not before): every rank calls it once its work is done."
    global _joined
    if _joined and dist.is_initialized(): dist.destroy_process_group()
    _joined = False


# %%
place, device = join('cpu')
print(place, device, launched())
test_eq((place.main, place.world_size, place.parallel), (True, 1, False))   # no torchrun here: a run of one


# %% [markdown]
# The collective timeout is explicit and long. While rank 0 draws a sample grid (seconds on a GPU, up to a
# minute on a CPU for the larger models) the other ranks already wait in the next step's all-reduce; the
# timeout must outlast that, or a healthy run would be killed. A dead rank does not wait for it: its
# processes' connections close, and the others find out at once (see "When a process dies" below).
#
# ## The batch is global
#
# The `batch_size` of a config is the **global batch**: the images one optimiser step learns from, over all
# processes and micro-batches. Each rank takes `batch_size / world_size`, in `grad_accum` micro-batches:

# %%
#| hide
#| export
def _refuse_uneven(batch_size: int, world_size: int, grad_accum: int):
    "`ValueError` for a global batch that does not split into `world_size × grad_accum` equal parts, naming sizes that do."
    parts = world_size * grad_accum
    lo, hi = batch_size // parts * parts, (batch_size // parts + 1) * parts
    fits = f"{lo} or {hi}" if lo else f"{hi}"
    raise ValueError(f"batch_size {batch_size} is the global batch and must split evenly into {world_size} process"
                     f"{'es' * (world_size != 1)} × {grad_accum} micro-batch{'es' * (grad_accum != 1)} = {parts} equal parts; "
                     f"use a multiple of {parts}, e.g. {fits}")


# %%
#| exports
def local_batch_size(batch_size: int, # the global batch: images per optimiser step, over all ranks and micro-batches
                     world_size: int, # processes in the run
                     grad_accum: int, # micro-batches per optimiser step on each process
                     ) -> int:
    "Images per micro-batch on each rank: `batch_size / (world_size × grad_accum)`; `ValueError`, naming sizes that divide, if it does not."
    if batch_size % (world_size * grad_accum): _refuse_uneven(batch_size, world_size, grad_accum)
    return batch_size // (world_size * grad_accum)


# %% [markdown]
# A global batch of 16 split four ways. Rank $r$ takes positions $r, r + W, r + 2W, \dots$ of it (colour), and cuts
# its share into `grad_accum` consecutive micro-batches (the number in each image):

# %%
splits = [(1, 1), (2, 1), (2, 2), (4, 2)]
fig, axs = plt.subplots(len(splits), 1, figsize=(10, 2.6), sharex=True)
for ax, (W, K) in zip(axs, splits):
    m = local_batch_size(16, W, K)
    for pos in range(16):
        rank, micro = pos % W, pos // W // m
        ax.add_patch(plt.Rectangle((pos, 0), .95, 1, color=plt.get_cmap('tab10')(rank), alpha=.35))
        ax.text(pos + .47, .5, micro, ha='center', va='center', fontsize=8)
    ax.set(xlim=(0, 16), ylim=(0, 1), yticks=[]); ax.set_ylabel(f'{W} × {K}: {m} each', rotation=0, ha='right', va='center')
axs[-1].set(xticks=torch.arange(16) + .5, xticklabels=range(16), xlabel='position in the global batch')
axs[0].set_title('processes × micro-batches; colour: rank, number: micro-batch', fontsize=10);

# %%
#| hide
test_fail(lambda: local_batch_size(64, 3, 1), contains='use a multiple of 3, e.g. 63 or 66')

# %% [markdown]
# Every split computes the same 16 images per step; one that does not divide is refused with the sizes that would:

# %%
for world, accum in [(1, 1), (2, 1), (4, 1), (2, 2), (8, 4)]:
    print(f"batch 64 on {world} process(es) × {accum} micro-batch(es): {local_batch_size(64, world, accum)} images each")
try: local_batch_size(64, 3, 1)
except ValueError as e: print(e)


# %% [markdown]
# Why global? The learning rate, its OneCycle schedule and the EMA decay were tuned for a batch. If the
# batch were per process, launching on 8 GPUs would silently train another run, 8 times the batch at the
# same learning rate, and a checkpoint could not move between machines. With a global batch, the command
# line says what is trained and the launcher only how fast. Raising the batch to fill more GPUs is then
# a decision you make, together with the learning rate (the linear scaling rule of Goyal et al. 2017 is
# the usual starting point), not a side effect of the launcher.
#
# A size that does not split evenly is refused before any data is read: uneven shares would weigh some
# images more than others in the mean gradient. For the same reason every global batch is full: the last,
# partial batch of an epoch is left out (it is a different one each epoch).
#
# ## The noise belongs to the sample, not to the rank
#
# Every training step draws, per image, a timestep $t$, a noise $\varepsilon$, whether the label is
# dropped, and (for photos) whether it is flipped. How those draws are seeded decides whether the world
# size changes the run. Two tempting ways are wrong:
#
# - **The same seed on every rank.** Rank 1 then draws exactly the $t$ and $\varepsilon$ that rank 0 draws,
#   for different images: the 64 images of a step share 32 noise draws, and the gradient is noisier than a
#   batch of 64 should be.
# - **A seed per rank** (`seed + rank`). The draws are independent, but which image gets which noise now
#   depends on the number of ranks: 1 process and 2 processes train different runs, and a checkpoint
#   written on 8 GPUs continues differently on 1.
#
# minddpm draws them as a function of `(seed, step, position in the global batch)` alone. Every rank draws
# the whole global batch from one generator seeded by `(seed, step)` and keeps its own rows. That costs
# every rank the normal draws of the whole batch (for `full` on 8 GPUs at a global batch of 512, 6.3 M
# numbers: microseconds on a GPU) and no communication.

# %%
#| exports
def _key(seed: int, step: int) -> int:
    "A 63-bit seed for (seed, step), mixed by NumPy's SeedSequence: nearby pairs give unrelated streams."
    return int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0] >> np.uint64(1))

@dataclass
class Draws:
    "The random choices of one training step for some samples of its global batch (each row: one sample)."
    t: torch.Tensor     # (n,) timesteps in {0, …, T−1}
    eps: torch.Tensor   # (n, C, H, W) noise ε ~ N(0, I)
    drop: torch.Tensor  # (n,) bool: the label is replaced by the null label
    flip: torch.Tensor  # (n,) bool: the image is flipped left to right (used when the run flips)

def step_draws(seed: int,              # the run's seed
               step: int,              # the optimiser step (0-based), not the rank or the micro-batch
               batch_size: int,        # the global batch
               positions: torch.Tensor, # (n,) positions in the global batch, 0 … batch_size − 1, of the samples wanted
               shape: tuple,           # (C, H, W) of one image
               T: int,                 # diffusion steps: t is drawn from {0, …, T−1}
               p_uncond: float,        # probability of dropping a label, in [0, 1]
               generator: torch.Generator, # reseeded here; its device is where the draws are made
               times=None,             # None: integer t as above; else a function (B, generator) → (B,) times drawn instead (a flow run's t in [0, 1], lesson 13)
               ) -> Draws:
    """Timestep, noise, label drop and flip of the samples at `positions`, as functions of (seed, step, position) alone: the
    whole global batch is drawn from one generator seeded by (seed, step) and the wanted rows are taken, so any split of
    the batch over ranks and micro-batches sees the same values."""
    g, device, B = generator.manual_seed(_key(seed, step)), generator.device, batch_size
    t = torch.randint(0, T, (B,), device=device, generator=g) if times is None else times(B, g)
    drop = torch.rand(B, device=device, generator=g) < p_uncond
    flip = torch.rand(B, device=device, generator=g) < 0.5
    eps = torch.randn((B, *shape), device=device, generator=g)
    positions = positions.to(device)
    return Draws(t[positions], eps[positions], drop[positions], flip[positions])

def rank_positions(place: Place,    # this rank
                   batch_size: int, # the global batch
                   ) -> torch.Tensor:
    "Positions in the global batch of this rank's samples, in the order its loader yields them: rank, rank + world_size, …"
    return torch.arange(place.rank, batch_size, place.world_size)


# %% [markdown]
# The data order follows the same rule: each epoch is one permutation of the training split, seeded by
# `seed + epoch` (PyTorch's `DistributedSampler`), and rank $r$ takes every `world_size`-th image of it,
# positions $r, r + W, r + 2W, \dots$ of each global batch. Below, the timesteps of one global batch of 16,
# computed on 1, 2 and 4 ranks (colour: the rank that holds the image): every position gets the same $t$.

# %%
B, kw = 16, dict(seed=0, step=3, shape=(1, 16, 16), T=1000, p_uncond=0.1, generator=torch.Generator())
fig, axs = plt.subplots(3, 1, figsize=(10, 2.6), sharex=True)
colors = plt.get_cmap('tab10')
for ax, W in zip(axs, (1, 2, 4)):
    merged = torch.empty(B, dtype=torch.long)
    for r in range(W):
        pos = rank_positions(Place(r, W), B)
        d = step_draws(batch_size=B, positions=pos, **kw)
        merged[pos] = d.t
        for p, t in zip(pos.tolist(), d.t.tolist()):
            ax.add_patch(plt.Rectangle((p, 0), .95, 1, color=colors(r), alpha=.35))
            ax.text(p + .47, .5, t, ha='center', va='center', fontsize=8)
    test_eq(merged, step_draws(batch_size=B, positions=torch.arange(B), **kw).t)   # the split changes nothing
    ax.set(xlim=(0, B), ylim=(0, 1), yticks=[]); ax.set_ylabel(f'{W} rank{"s" * (W > 1)}', rotation=0, ha='right', va='center')
axs[-1].set(xticks=torch.arange(B) + .5, xticklabels=range(B), xlabel='position in the global batch')
axs[0].set_title('t of each image at step 3: the same whatever the number of ranks', fontsize=10);

# %% [markdown]
# The same seed on every rank, for contrast: rank 0 and rank 1 each draw 8 timesteps for their 8 images,
# and they are the same 8. `step_draws` gives each of the 16 images its own.

# %%
same = [torch.randint(0, 1000, (8,), generator=torch.Generator().manual_seed(0)) for rank in (0, 1)]
print('rank 0:', same[0].tolist()); print('rank 1:', same[1].tolist())
ours = [step_draws(batch_size=16, positions=rank_positions(Place(r, 2), 16), **kw).t[:8] for r in (0, 1)]
print('ours, rank 0:', ours[0].tolist()); print('ours, rank 1:', ours[1].tolist())
assert not torch.equal(ours[0], ours[1])   # every image of the global batch gets its own draw

# %% [markdown]
# A side benefit: no generator state needs saving in a checkpoint. Step 2,001 draws the same whether the
# run got there in one go or was resumed at step 2,000, on any number of processes.
#
# ## Two processes from this notebook
#
# A notebook's kernel is one process, so the distributed run is launched beside it, as you would in a
# terminal. `minddpm_train` works under torchrun as it is; here we launch a script of our own instead,
# to show that the library needs nothing more: `train` finds torchrun's environment and joins the group
# by itself. The script trains the first 60 steps of the tiny preset (its 4,000-step schedule, batch 64)
# on this machine's CPU, where gloo connects the 2 processes (`device='cpu'` keeps them off a GPU, where 2
# processes would need 2 GPUs). Then the same 60 steps in this kernel, in one process, and the two loss
# curves on one plot.

# %%
out = Path(tempfile.mkdtemp())
script = out/'first_steps.py'
script.write_text("""import dataclasses, sys
from minddpm.distributed import leave
from minddpm.training import TRAIN_PRESETS, train

cfg = dataclasses.replace(TRAIN_PRESETS['tiny'], device='cpu', out=sys.argv[1])
run = train(cfg, until=60, progress=False)   # every rank runs this; rank 0 writes the checkpoint
leave()                                      # end the process group now (else it ends at exit)
""")
cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2', str(script), str(out/'two')]
print('torchrun', *cmd[3:])
launched_run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
assert launched_run.returncode == 0, launched_run.stderr[-3000:]

# %%
one = train(dataclasses.replace(TRAIN_PRESETS['tiny'], device='cpu', out=str(out/'one')), until=60, progress=False)
two = load_checkpoint(out/'two'/'checkpoint.pt')
l1, l2 = torch.tensor([h[1] for h in one.history]), torch.tensor([h[1] for h in two['history']])
fig, ax = plt.subplots(figsize=(7, 2.6))
ax.plot(range(1, 61), l1, lw=4, alpha=.35, label='1 process, batch 64')
ax.plot(range(1, 61), l2, 'k--', lw=1, label='2 processes × 32 (torchrun, gloo)')
ax.set(xlabel='step', ylabel='training loss of the global batch'); ax.legend(fontsize=8)
print(f"largest relative difference of the 60 losses: {((l1 - l2).abs() / l1).max():.1e}")
test_eq(two['step'], 60); test_close(l1, l2, eps=1e-5 * l1.min())

# %% [markdown]
# They coincide: the differences are float rounding, from summing the gradients in another order. The
# 2-process run also ends with the same weights and EMA, and its checkpoint resumes in one process where
# it stopped. `tests/test_distributed.py` checks all of that at every commit, with gradient accumulation
# and a checkpoint moving from 1 process to 2 as well.
#
# How far do such differences carry? Early in the tiny preset's schedule they stay near $10^{-7}$. In a
# schedule squeezed into 80 steps, whose learning rate peaks at step 24, they grow: $10^{-5}$ by step 15,
# $10^{-3}$ by step 20 and 10 % of a step's loss by step 30 (measured on this CPU, batch 32, with the
# preset's earlier recipe: uniform weights at a peak learning rate of 2e-3). One process
# with 2 micro-batches against one without drifts apart exactly as fast, while the same process run twice
# agrees to the last bit. That is training at a high learning rate amplifying any rounding, not data
# parallelism: the runs stay statistically the same, and no two GPU models would agree bit for bit either.
#
# ## What it costs, measured
#
# On a 2-core CPU, two processes with one thread each against one process with two threads, at the same
# global batch: `python tests/bench_ddp.py --out tests/results/ddp.json` (about 2 minutes) times both on the
# tiny and the seed UNet and keeps its figures, which this cell reads (from the repository, or from GitHub
# where the lesson runs without it) and draws:

# %%
#| hide
from minddpm.metrics import measured   # lesson 08's: a benchmark's results, from the clone or GitHub


# %%
ddp = measured('ddp.json')
fig, axs = plt.subplots(1, 2, figsize=(11, 2.2), sharey=True)
for i, c in enumerate(ddp['cases']):
    one, two = c['one_process_two_threads'], c['two_processes_one_thread']
    axs[0].barh(i, two['images_s'] / one['images_s'], color='C1')
    axs[0].text(.03, i, f"{one['images_s']:.0f} → {two['images_s']:.0f} images/s", va='center', fontsize=8)
    axs[1].barh(i, 100 * two['comm_s'] / two['step_s'], color='C3')
    axs[1].text(.2, i, f"{1000 * two['comm_s']:.1f} ms of a {1000 * two['step_s']:.0f} ms step", va='center', fontsize=8)
axs[0].set_yticks(range(len(ddp['cases'])), [f"{c['unet']} UNet ({c['one_process_two_threads']['params'] / 1e6:.2f} M)\n"
                                             f"batch {c['batch']}, {c['size']} px" for c in ddp['cases']])
axs[0].axvline(1, color='k', lw=.8); axs[0].set(xlim=(0, 1.1), xlabel='images/s of 2 processes × 1 thread, per 1 process × 2 threads')
axs[1].set(xlabel='one all-reduce of the gradients, % of a step')
fig.suptitle(f"{ddp['cpus']} CPU cores, torch {ddp['torch']}", fontsize=9); fig.tight_layout()

# %% [markdown]
# On one machine, processes lose a little to threads: each process keeps its own copy of everything, and
# the tiny UNet's steps are so short that its all-reduce shows. The larger the model's step, the smaller
# that share. Data parallelism pays where one process cannot use the hardware: on several GPUs, each of
# which one process drives.
#
# The all-reduce is one all-reduce of a buffer the size of the gradients, timed alone: an upper
# bound on what communication adds, since DDP overlaps it with the backward pass. On GPUs in one machine
# NCCL moves the seed UNet's 63 MB of gradients over NVLink in about a millisecond, a few percent of a step.
#
# ### On GPUs, nodes and SLURM
#
# On CUDA, every process takes the GPU of its local rank and the ranks talk over NCCL; `--device cuda:1`
# is refused under torchrun, as each process already has its GPU. On one machine with 8 GPUs:
#
# ```sh
# torchrun --standalone --nproc-per-node 8 --no-python minddpm_train --preset full --out runs/full
# ```
#
# On several machines, start the same command on each; they meet at one address (any port that is free on
# the first machine), and `--out` must be on a file system they share, since every rank reads the
# checkpoint when resuming:
#
# ```sh
# torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint node01:29500 --rdzv-id full-64 \
#          --no-python minddpm_train --preset full --out /shared/runs/full
# ```
#
# Under SLURM, `srun` starts one torchrun per node; the README has a batch script. Everything else
# composes as on one process: `--precision` (bf16, or fp16 with its scaler), `--compile` (the compiled
# DDP model), `--minutes` (rank 0's clock decides and every rank stops at the same step), `--resume`
# (at any world size) and `--grad-accum`. One caveat belongs to fp16: each rank's backward pass computes
# the gradient of its own mean loss, `world_size` times larger per image than one process's before DDP
# averages it, so at the same loss scale an fp16 gradient overflows sooner. The scaler then skips that
# step on every rank alike and halves its scale: an fp16 run can differ from its 1-process twin by such a
# skipped step. bf16, which needs no scaler, and fp32 have no such caveat.
#
# ## When a process dies
#
# A crashed or killed rank must not leave the others waiting for 30 minutes. On one machine, torchrun's
# agent sees the process end and stops the others within a second, then reports which rank failed
# (`rank : 1 (local_rank: 1) exitcode : -9`). On several machines, each agent sees only its own processes;
# the survivors find out when their next all-reduce finds the connection closed, and stop with:
#
# ```
# minddpm_train: error: rank 0 of 2 stopped in step 311: it lost touch with the other processes, most likely because
# one of them stopped (torchrun's report names it) (Read error [127.0.0.1]:53385: Connection reset by peer); the last
# checkpoint, runs/full/checkpoint.pt at step 300, is kept
# ```
#
# That run, drawn: a checkpoint every 100 steps, rank 1 killed in step 311.

# %%
fig, ax = plt.subplots(figsize=(10, 2))
for lane in (0, 1):
    for step in range(297, 311): box(ax, step, lane + .2, .9, .6, '', '#e8f3e0')
    box(ax, 311, lane + .2, .3 + .3 * lane, .6, '', '#fbe7d0')   # step 311: rank 1 dies in it, rank 0 waits in its all-reduce
ax.plot(311.3, .5, 'rx', ms=12, mew=3); ax.text(311.5, .5, 'killed (exit code -9)', va='center', color='r', fontsize=8)
ax.text(311.8, 1.5, 'all-reduce: connection reset\n→ `rank_failure`: says why, stops', va='center', fontsize=8)
ax.plot([300.95, 300.95], [.05, 1.95], 'b--', lw=1)
ax.text(300.95, 2.05, 'rank 0 wrote checkpoint.pt after step 300: it is kept', ha='center', color='b', fontsize=8)
ax.set(xlim=(296.8, 315.5), ylim=(0, 2.3), yticks=[.5, 1.5], yticklabels=['rank 1', 'rank 0'], xlabel='step')
ax.set_xticks(torch.arange(297, 312) + .45, range(297, 312)); ax.spines[['top', 'right', 'left']].set_visible(False);


# %% [markdown]
# The checkpoint is whole either way: rank 0 writes it to a temporary file and renames it (lesson 07).
# `tests/test_distributed.py` kills a rank in both settings and checks that the run ends within a minute,
# says so, and leaves a checkpoint that loads.
#
# The training loop hands a failed collective to `rank_failure`, which turns the backend's message (gloo's
# starts with its source location and ends with advice) into the line above:

# %%
#| exports
def rank_failure(place: Place,      # this rank
                 step: int,         # the optimiser steps done when it failed
                 error: Exception,  # what the backend raised
                 kept: str,         # which checkpoint the run leaves, e.g. "the last checkpoint, … at step 300, is kept"
                 ) -> RuntimeError: # to raise `from error`
    "The error a rank stops with when the run fails under it: its rank, the step, why (a lost process named as such) and what is kept."
    why = re.sub(r'^\[[^\]]*\]\s*', '', (str(error).strip() or type(error).__name__).splitlines()[0])   # gloo's source location
    why = why.split('. This is typically')[0]                                                           # and its advice
    lost = isinstance(error, dist.DistError) or re.search('gloo|nccl|connection|timed out', str(error), re.I)
    return RuntimeError(f"rank {place.rank} of {place.world_size} stopped in step {step + 1}: "
                        + ("it lost touch with the other processes, most likely because one of them stopped (torchrun's "
                           f"report names it) ({why})" if lost else why) + f"; {kept}")


# %%
print(rank_failure(Place(0, 2, parallel=True), 310, RuntimeError('[../gloo/transport/tcp/pair.cc:534] Read error '
      '[127.0.0.1]:53385: Connection reset by peer. This is typically...'), 'the last checkpoint, runs/full/checkpoint.pt at step 300, is kept'))

# %% [markdown]
# ## Exercises
#
# Write each function in place of its `...` and run its cell: `check` prints ✓, or where your answer differs and a hint
# ([how the checks work](exercises.ipynb)). Keep the stub's parameter names (`check` passes its inputs by name) and
# return the inputs' dtype unless the stub asks for another. Solutions: `tests/solutions/` in the course's repository.
#
# 1. **A rank's micro-batch.** Given the global batch size, the world size, `grad_accum`, a rank and a micro-batch
#    index (from 0), return the positions in the global batch of the images that micro-batch holds, a LongTensor of
#    `batch_size / (world_size × grad_accum)` positions in the order the rank takes them (the figure under "The batch is
#    global" draws them). Then: with a batch of 16 on 4 ranks × 2 micro-batches, which micro-batch of which rank holds
#    position 13?

# %%
def micro_batch_positions(batch_size, world_size, grad_accum, rank, micro):   # ints
    ...                                                                        # return a (batch_size // (world_size * grad_accum),) LongTensor

check(micro_batch_positions)

# %% [markdown]
# 2. **The gradient DDP computes.** Given every image's own gradient, `per_sample_grads` (B, P) in the order of the
#    global batch, compute the gradient every rank holds after one optimiser step's backward passes, the way the ranks
#    compute it: each rank runs its micro-batches (exercise 1), each micro-batch's loss is the mean over its images
#    divided by `grad_accum` (`_backward` of lesson 07), the gradients add up in `.grad`, then the all-reduce sums the
#    ranks' `.grad` and DDP divides by the world size. Return it, (P,). Then compare it with `per_sample_grads.mean(0)`,
#    and say what forgetting the division by `grad_accum` would do to the gradient, and so to the run's clipping at norm
#    1 (lesson 07): would `--grad-accum 4` still train the run of `--grad-accum 1`?

# %%
def ddp_gradient(per_sample_grads, world_size, grad_accum):   # (B, P) float64, ints
    ...                                                        # return (P,)

check(ddp_gradient)
