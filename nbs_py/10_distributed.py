# %%
#| default_exp distributed

# %% [markdown]
# # Data parallelism
# > One run on one CPU, eight GPUs or several nodes: torchrun starts the processes, DistributedDataParallel all-reduces the gradients, and a global batch with noise tied to each sample makes every world size train the same weights

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/10_distributed.ipynb)
# This lesson has no GPU-only cells: it starts its processes on the CPU with the gloo backend, and ran top to bottom in LESSON_SECONDS seconds on a 2-core CPU (measured). On Colab's one GPU it runs the same way.

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
import datetime, os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from minddpm.data import pick_device

# %%
#| hide
from fastcore.test import *
import dataclasses, json, shutil, tempfile
from pathlib import Path
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it

# %% [markdown]
# ## The contract
#
# Our exported functions, used by `Run`, `train_step` and `train` (lesson 07), come first; the lesson
# below takes them apart.

# %%
#| export
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

def launched() -> bool:
    "Was this process started by `torchrun` (or `srun torchrun`): does its environment name a rank and a world size?"
    return 'RANK' in os.environ and 'WORLD_SIZE' in os.environ

_joined = False  # did `join` start the process group (so `leave` ends it)?

def join(device: str = 'auto', # as `pick_device` takes it; under torchrun 'cuda' means this local rank's GPU
         ) -> tuple[Place, torch.device]:
    """This process's `Place` and device. Under `torchrun` it joins the process group (or takes the one already started): NCCL on CUDA, one GPU per local rank,
    gloo on the CPU, with an explicit `TIMEOUT`. Without the launcher's environment it is one process, on `pick_device(device)`.
    Raises `ValueError` for a GPU index given under torchrun, more local ranks than GPUs, or Apple's MPS with several ranks."""
    global _joined
    d = pick_device(device)
    if not (launched() or dist.is_initialized()): return Place(), d
    if dist.is_initialized():   # a group started by the caller's own code
        place = Place(dist.get_rank(), dist.get_world_size(), int(os.environ.get('LOCAL_RANK', 0)), True)
    else: place = Place(int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), int(os.environ.get('LOCAL_RANK', 0)), True)
    if d.type == 'cuda':
        if device not in ('auto', 'cuda'):
            raise ValueError(f"device {device!r} names one GPU, but under torchrun each process takes the GPU of its local rank; "
                             f"use --device cuda (or auto)")
        n = torch.cuda.device_count()
        if place.local_rank >= n:
            raise ValueError(f"local rank {place.local_rank} has no GPU of its own: torch sees {n} on this node; "
                             f"start at most {n} processes per node (--nproc-per-node {n})")
        d = torch.device('cuda', place.local_rank); torch.cuda.set_device(d)
    elif d.type == 'mps' and place.world_size > 1:
        raise ValueError("several processes cannot share Apple's MPS GPU; use --device cpu, or one process")
    if not dist.is_initialized():
        dist.init_process_group('nccl' if d.type == 'cuda' else 'gloo', timeout=TIMEOUT,
                                device_id=d if d.type == 'cuda' else None)
        _joined = True
    return place, d

def leave():
    "End the process group `join` started, if it did: every rank calls it once its work is done."
    global _joined
    if _joined and dist.is_initialized(): dist.destroy_process_group()
    _joined = False

def local_batch_size(batch_size: int, # the global batch: images per optimiser step, over all ranks and micro-batches
                     world_size: int, # processes in the run
                     grad_accum: int, # micro-batches per optimiser step on each process
                     ) -> int:
    "Images per micro-batch on each rank: `batch_size / (world_size × grad_accum)`; `ValueError`, naming sizes that divide, if it does not."
    parts = world_size * grad_accum
    if batch_size % parts:
        lo, hi = batch_size // parts * parts, (batch_size // parts + 1) * parts
        fits = f"{lo} or {hi}" if lo else f"{hi}"
        raise ValueError(f"batch_size {batch_size} is the global batch and must split evenly into {world_size} process"
                         f"{'es' * (world_size != 1)} × {grad_accum} micro-batch{'es' * (grad_accum != 1)} = {parts} equal parts; "
                         f"use a multiple of {parts}, e.g. {fits}")
    return batch_size // parts

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
               ) -> Draws:
    """Timestep, noise, label drop and flip of the samples at `positions`, as functions of (seed, step, position) alone: the
    whole global batch is drawn from one generator seeded by (seed, step) and the wanted rows are taken, so any split of
    the batch over ranks and micro-batches sees the same values."""
    g, device, B = generator.manual_seed(_key(seed, step)), generator.device, batch_size
    t = torch.randint(0, T, (B,), device=device, generator=g)
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
