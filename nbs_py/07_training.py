# %%
#| default_exp training

# %% [markdown]
# # Training
# > The training loop: an ε-, v- or x₀-prediction loss at every timestep, uniform or min-SNR weighted, AdamW with OneCycleLR, gradient clipping, EMA, mixed precision that is really on, a held-out validation mean, and checkpoints that resume exactly

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/07_training.ipynb)
# On a free Colab T4 its one GPU cell takes about 9 minutes: an estimate from its 2.4 PFLOP at a quarter of the T4's fp16 peak, plus the overheads measured on an H200 (see "On a GPU"). Without a GPU it ran top to bottom in 47 seconds on a 2-core CPU (measured).

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
import contextlib, copy, dataclasses, json, math, os, re, time, warnings, zipfile
from importlib import resources
from dataclasses import dataclass, asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

import minddpm
from minddpm.conditioning import NULL_LABEL, ConditionalUNet
from minddpm.data import get_datasets, pick_device, writable_dir
from minddpm.distributed import join, local_batch_size, rank_positions, step_draws
from minddpm.ema import EMA
from minddpm.forward import OBJECTIVES, WEIGHTINGS, Diffusion
from minddpm.unet import unet_preset

# %%
#| hide
from fastcore.test import *
import tempfile
from IPython.display import Image
import matplotlib.pyplot as plt
from minddpm.data import pick_device, pick_preset

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)              # the same pictures on every run

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # 'colab' sizes on a CUDA GPU, 'tiny' elsewhere


# %% [markdown]
# Everything the earlier lessons built comes together here. One training step:
#
# 1. take a batch of images $x_0$ and labels $y$; drop each label with probability 0.1 (lesson 04);
# 2. draw a timestep per image, uniformly over **all** of $\{0, \dots, T-1\}$, and noise (lesson 02);
# 3. predict the noise and take the mean squared error against the true noise (DDPM's $L_\text{simple}$), or
#    predict $v$ or $x_0$ instead, with each image's error weighted by its step (lesson 02's "Three targets");
# 4. step AdamW under a OneCycle learning-rate schedule, with the gradient norm clipped at 1;
# 5. fold the new weights into the EMA (lesson 06).
#
# The random draws of a step (timestep, noise, label drop, flip) come from a generator seeded by the run's
# seed and the step, one row per image of the batch. That makes a resumed run continue exactly, and it is
# what lets lesson 10 run the same loop on many processes, each taking its share of the batch, and still
# train the same run.
#
# ## Configuration
#
# One dataclass with commented defaults, and named presets for the machines the course runs on.

# %%
#| export
@dataclass
class TrainConfig:
    "Everything a training run depends on; saved in every checkpoint."
    dataset: str = 'digits'      # a name in `DATASETS`, or a folder with one sub-folder of images per class
    img_size: int = 16           # images are resized to img_size × img_size
    hflip: bool = False          # random horizontal flips of training images (for photos, not digits)
    unet: str = 'tiny'           # UNet preset: 'tiny' or 'seed'
    schedule: str = 'linear'     # noise schedule: 'linear' or 'cosine'
    T: int = 1000                # diffusion steps
    objective: str = 'v'         # what the network predicts: 'eps', 'v' or 'x0' (lesson 02, `OBJECTIVES`); lesson 08 measured v best
    weighting: str = 'min_snr'   # loss weighting over t: 'uniform' or 'min_snr' (min-SNR-γ, Hang et al. 2023); lesson 08 measured min-SNR far faster
    snr_gamma: float = 5.0       # min-SNR's γ
    batch_size: int = 64         # the global batch: images per optimiser step, over all processes and micro-batches
    grad_accum: int = 1          # micro-batches per optimiser step on each process (gradients all-reduced on the last)
    steps: int = 4000            # optimiser steps in all
    lr: float = 1e-3             # peak learning rate of OneCycleLR (lesson 08: 4e-3 and 2e-3 learned slower on the tiny preset)
    weight_decay: float = 0.01   # AdamW weight decay
    grad_clip: float = 1.0       # largest gradient norm
    p_uncond: float = 0.1        # share of labels dropped, per sample
    ema_beta: float = 0.995      # EMA decay
    ema_start: int = 200         # EMA copies the weights before this step (the originals: 2000)
    val_every: int = 500         # steps between validation passes
    ckpt_every: int = 500        # steps between checkpoints
    seed: int = 0                # seeds the split, the data order, the noise and the initial weights
    val_frac: float = 0.1        # share of the digits or an image folder held out (at least one image); torchvision sets use their test split
    device: str = 'auto'         # 'auto': cuda, then mps, then cpu
    precision: str = 'auto'      # 'auto', 'bf16', 'fp16' or 'fp32'
    out: str = 'runs/minddpm'    # run directory: checkpoint.pt and samples/
    minutes: float | None = None # time budget: a fresh run fits its step count to it as it goes, and every run stops by it
    sample_every: int = 40       # epochs between per-class sample grids drawn with the EMA, at least `GRID_MIN_STEPS` steps apart (one more at the end); 0: none
    wandb: bool = False          # log to Weights & Biases; offline when there are no credentials
    compile: bool = False        # train through `torch.compile(model)`

    def __post_init__(self): _check_config(self)

def _check_config(cfg: TrainConfig):
    "Refuse a config no run could use, naming the field, what it got and what is allowed (NaN and ±inf included)."
    def bad(name, wanted): raise ValueError(f"TrainConfig.{name} must be {wanted}, got {getattr(cfg, name)!r}")
    def number(v): return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    for name, least in dict(img_size=1, T=2, batch_size=1, grad_accum=1, steps=1, val_every=1, ckpt_every=1, sample_every=0,
                            ema_start=0, seed=0).items():
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < least: bad(name, f"a whole number of at least {least}")
    for name in ('lr', 'grad_clip'):
        if not (number(getattr(cfg, name)) and getattr(cfg, name) > 0): bad(name, 'a finite number greater than 0')
    if not (number(cfg.weight_decay) and cfg.weight_decay >= 0): bad('weight_decay', 'a finite number of at least 0')
    for name in ('p_uncond', 'ema_beta'):
        if not (number(getattr(cfg, name)) and 0 <= getattr(cfg, name) <= 1): bad(name, 'a number in [0, 1]')
    if not (number(cfg.val_frac) and 0 < cfg.val_frac < 1): bad('val_frac', 'a share strictly between 0 and 1')
    if cfg.objective not in OBJECTIVES: bad('objective', ' or '.join(map(repr, OBJECTIVES)))
    if cfg.weighting not in WEIGHTINGS: bad('weighting', ' or '.join(map(repr, WEIGHTINGS)))
    if not (number(cfg.snr_gamma) and cfg.snr_gamma > 0): bad('snr_gamma', 'a finite number greater than 0')
    if cfg.minutes is not None and not (number(cfg.minutes) and cfg.minutes > 0): bad('minutes', 'None or a finite number greater than 0')

TRAIN_PRESETS = {
    'tiny': TrainConfig(),                                                                       # CPU: the bundled digits
    'colab': TrainConfig(dataset='cifar10', img_size=32, unet='seed', batch_size=128, steps=30_000, lr=1e-3,
                         hflip=True, ema_start=2000, val_every=2000, ckpt_every=2000,
                         objective='eps', weighting='uniform'),                                   # one T4
    'full': TrainConfig(dataset='cifar10', img_size=64, unet='seed', batch_size=64, steps=150_000, lr=5e-4,
                        hflip=True, ema_start=2000, val_every=5000, ckpt_every=5000,
                        objective='eps', weighting='uniform'),                                    # the originals' 64×64
}


# %% [markdown]
# `tiny` predicts $v$ (lesson 02's "Three targets"): on the digits, lesson 08 measured it ending 4,000 steps with a
# lower FID than DDPM's ε, and its deterministic samplers (DDIM with η = 0, DPM-Solver++) drawing clean digits
# where the ε-model's draw faint ones. `colab` and `full` keep the originals' ε, as CIFAR-10 was not measured
# here; `--objective v` switches them.
#
# How long they take: `tiny` runs 4,000 steps in about 8 minutes on two CPU cores (8.7 steps/s). On a GPU
# the seed UNet's training step at 32×32 and batch 128 costs 1.2 TFLOP (counted with
# `torch.utils.flop_counter`). A T4 peaks at 65 TFLOP/s in fp16; at a quarter of that, 16 TFLOP/s, a
# step takes 75 ms and `colab`'s 30,000 steps about 40 minutes: an estimate, not a measurement, as no
# T4 was at hand. On an H200, measured with `tests/bench_gpu_presets.py`, `colab` runs 16 steps/s in
# bf16 or fp16 (31 minutes) and 21 steps/s compiled (24 minutes): at this size even that GPU waits on
# Python, so a T4 loses less than its FLOP/s suggest.

# %% [markdown]
# ## Mixed precision that is really on
#
# The originals write `with torch.autocast("cuda") and (...):`. Python's `and` returns its second operand,
# so only the second context manager is entered: autocast never runs, and their GradScaler scales float32
# gradients for nothing. Here the precision is resolved once, and autocast is entered in its own `with`:
# bf16 on GPUs that support it natively (no scaler needed), fp16 with a `GradScaler` on those that do not
# (a T4), and plain float32 on the CPU.

# %%
#| exports
def resolve_precision(device: torch.device,  # where the model runs: only CUDA gets autocast under 'auto'
                      precision: str = 'auto', # 'auto', 'bf16', 'fp16' or 'fp32'
                      ) -> torch.dtype | None:
    """The autocast dtype for `device`: bf16 where CUDA supports it, fp16 on other CUDA GPUs, None (fp32) elsewhere.
    Raises `ValueError` for an unknown precision; warns when asked for fp16 on a CPU, where it is many times slower."""
    if precision not in ('auto', 'bf16', 'fp16', 'fp32'):
        raise ValueError(f"Unknown precision {precision!r}; use auto, bf16, fp16 or fp32")
    if precision == 'fp16' and device.type == 'cpu':
        warnings.warn("fp16 on a CPU is slow: most CPUs have no fast fp16 kernels (a tiny-preset step took 2.5 s against "
                      "0.16 s in fp32 on a 2-core CPU); use bf16 or fp32 there")
    if precision == 'auto':
        if device.type != 'cuda': return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': None}[precision]

def autocast(device: torch.device,      # where the forward pass runs; its type picks the autocast backend
             dtype: torch.dtype | None): # bf16 or fp16, as `resolve_precision` gives; None: fp32, no autocast
    "The autocast context for one forward pass, or a no-op for fp32."
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# %%
cpu = torch.device('cpu')
test_eq(resolve_precision(cpu), None)
with autocast(cpu, resolve_precision(cpu, 'bf16')):
    assert torch.is_autocast_enabled('cpu')
    test_eq((torch.randn(4, 4) @ torch.randn(4, 4)).dtype, torch.bfloat16)  # really running in bf16
with autocast(cpu, None): assert not torch.is_autocast_enabled('cpu')
seed_bug = torch.autocast('cpu', dtype=torch.bfloat16) and contextlib.nullcontext()  # the originals' `and`
with seed_bug: assert not torch.is_autocast_enabled('cpu')                           # autocast never entered


# %% [markdown]
# ## The run: setup, one step, validation
#
# `Run` holds everything that changes during training, so a checkpoint can hold it all. A folder of a few dozen
# images holds fewer than one batch: then every step takes the whole training split (under `torchrun`, the largest
# share of it that splits evenly over the processes), the run says so once, and the checkpoint records the batch it took.

# %%
#| export
def small_batch(n: int,          # images in the training split, fewer than `batch_size`
                batch_size: int, # the global batch asked for
                world_size: int, # processes in the run
                grad_accum: int, # micro-batches per optimiser step on each process
                say: bool = True, # warn, in one line, which batch the run takes instead (rank 0 alone says it)
                ) -> int:
    """The global batch of a training split of `n < batch_size` images: all of them on one process, else the largest
    multiple of `world_size × grad_accum` not above `n`. Raises `ValueError` naming the least split that can train."""
    parts = world_size * grad_accum
    if n < parts:
        raise ValueError(f"the training split holds {n} image{'s' * (n != 1)}, too few to train on {world_size} process"
                         f"{'es' * (world_size != 1)} × {grad_accum} micro-batch{'es' * (grad_accum != 1)}: it needs at least "
                         f"{parts} (one image for each), so add images, or use fewer processes or micro-batches")
    b = n // parts * parts
    if say:
        how = ('the whole split' if b == n and parts == 1 else
               f"the largest that {n} images split into {world_size} process{'es' * (world_size != 1)} × {grad_accum} "
               f"micro-batch{'es' * (grad_accum != 1)} allow")
        warnings.warn(f"the training split holds {n} images, fewer than a batch of {batch_size}: each step takes {b}, {how}")
    return b

class Run:
    """Model, EMA, optimiser, LR schedule, grad scaler, data and step of one training run. Under `torchrun` it is this
    process's share of the run (lesson 10): its rank's slice of every global batch, and the model wrapped for DDP."""
    def __init__(self, cfg: TrainConfig): # data, model, optimiser, device and precision all follow from it
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.place, self.device = join(cfg.device)
        self.dtype = resolve_precision(self.device, cfg.precision)
        W = self.place.world_size
        self.micro_batch = local_batch_size(cfg.batch_size, W, cfg.grad_accum)   # before any data is read
        # the first process of each node downloads and decodes first; flips are drawn in `train_step`
        train_set, val_set = self.place.first(get_datasets, cfg.dataset, cfg.img_size, cfg.val_frac, seed=cfg.seed)
        if len(train_set) < cfg.batch_size:   # a small folder: the largest batch it and the processes allow
            cfg = self.cfg = dataclasses.replace(cfg, batch_size=small_batch(len(train_set), cfg.batch_size, W, cfg.grad_accum,
                                                                             self.place.main))
            self.micro_batch = local_batch_size(cfg.batch_size, W, cfg.grad_accum)
        sampler = DistributedSampler(train_set, W, self.place.rank, shuffle=True, seed=cfg.seed, drop_last=True)
        pin = self.device.type == 'cuda'   # one seeded order per epoch, every W-th image to each rank
        self.train_dl = DataLoader(train_set, cfg.batch_size // W, sampler=sampler, drop_last=True, pin_memory=pin)
        self.val_dl = DataLoader(val_set, cfg.batch_size, pin_memory=pin)
        classes, c = train_set.classes, train_set[0][0].shape[0]
        self.diffusion = Diffusion(cfg.schedule, cfg.T, objective=cfg.objective).to(self.device)
        self.model = ConditionalUNet(len(classes), **unet_preset(cfg.unet, in_channels=c)).to(self.device)
        if self.device.type == 'cuda': self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = EMA(self.model, cfg.ema_beta, cfg.ema_start)
        self.ddp = (DistributedDataParallel(self.model, [self.device] if self.device.type == 'cuda' else None,
                                            gradient_as_bucket_view=True) if self.place.parallel else None)
        net = self.ddp or self.model
        self.forward = torch.compile(net) if cfg.compile else net   # shares the weights of self.model
        self.generator = torch.Generator(self.device)   # reseeded every step by (seed, step): `step_draws`
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-5)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=cfg.lr, total_steps=cfg.steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.step, self.classes, self.shape, self.history = 0, classes, (c, cfg.img_size, cfg.img_size), []
        self.checkpoint: tuple[Path, int] | None = None   # the last checkpoint written or resumed from, and its step


# %%
#| export
def train_step(run: Run,        # the run to advance: its weights, EMA, optimiser, schedule and step change in place
               x: torch.Tensor, # this process's images of the global batch (batch_size / world_size, C, H, W) in [-1, 1]
               y: torch.Tensor, # their class labels (batch_size / world_size,); a share `cfg.p_uncond` of them is dropped
               ) -> float:
    """One optimiser step; returns the loss of the whole global batch (the same on every rank): the mean of each image's MSE
    on `cfg.objective`'s target times its `cfg.weighting` weight (lesson 02's `Diffusion.target`, `loss_weights`). The batch is split into
    `cfg.grad_accum` micro-batches; timesteps, noise, label drops and flips follow from (seed, step, position in the global
    batch) by `step_draws`. Raises `FloatingPointError` on a non-finite loss, before the weights change."""
    cfg, K = run.cfg, run.cfg.grad_accum
    if len(x) != K * run.micro_batch:
        raise ValueError(f"this process takes {K * run.micro_batch} images per step (batch_size {cfg.batch_size} over "
                         f"{run.place.world_size} process(es)), got {len(x)}")
    x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
    d = step_draws(cfg.seed, run.step, cfg.batch_size, rank_positions(run.place, cfg.batch_size), x.shape[1:], run.diffusion.T,
                   cfg.p_uncond, run.generator)
    if cfg.hflip: x = torch.where(d.flip[:, None, None, None], x.flip(-1), x)
    y = torch.where(d.drop, NULL_LABEL, y)
    run.model.train()
    run.opt.zero_grad(set_to_none=True)
    total = torch.zeros((), device=run.device)
    for k, (xk, yk, tk, ek) in enumerate(zip(*(v.chunk(K) for v in (x, y, d.t, d.eps)))):
        sync = k == K - 1 or run.ddp is None      # all-reduce the gradients once, on the last micro-batch
        with contextlib.nullcontext() if sync else run.ddp.no_sync():
            with autocast(run.device, run.dtype):
                out = run.forward(run.diffusion.add_noise(xk, tk, ek)[0], tk, yk).float()
            err = (out - run.diffusion.target(xk, ek, tk)).square().flatten(1).mean(1)        # each image's MSE
            loss = (run.diffusion.loss_weights(tk, cfg.weighting, cfg.snr_gamma) * err).mean()
            run.scaler.scale(loss / K).backward()
        total += loss.detach()
    loss = run.place.mean(total / K).item()           # the global batch's loss, on every rank
    if not math.isfinite(loss): raise FloatingPointError(f"the loss became {loss} in step {run.step + 1}")
    run.scaler.unscale_(run.opt)
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.scaler.step(run.opt); run.scaler.update(); run.sched.step()
    run.ema.update(run.model)
    run.step += 1
    return loss

@torch.no_grad()
def validate(run: Run,       # gives the held-out split, the diffusion, the device and the precision
             model=None,     # the network to score; None: the run's EMA model
             seed: int = 0,  # seeds the timesteps and the noise: every call sees the same
             ) -> float:
    "Mean ε-MSE over the whole held-out split (weighted by batch size), with fixed timesteps and noise, whatever the target: ε̂ is read from it."
    model = model or run.ema.model
    model.eval()
    g = torch.Generator(device=run.device).manual_seed(seed)
    total, n = 0.0, 0
    for x, y in run.val_dl:
        x, y = x.to(run.device), y.to(run.device)
        t = torch.randint(0, run.diffusion.T, (len(x),), device=run.device, generator=g)
        xt, eps = run.diffusion.add_noise(x, t, torch.randn(x.shape, device=run.device, generator=g))
        with autocast(run.device, run.dtype):
            out = model(xt, t, y).float()
        total += F.mse_loss(run.diffusion.predictions(xt, t, out)[0], eps, reduction='sum').item()
        n += eps.numel()
    return total / n


# %% [markdown]
# The loss of step 3 is the mean over the batch of each image's MSE on the run's target
# (`cfg.objective`, lesson 02's `Diffusion.target`), times its weight (`cfg.weighting`: 1, or min-SNR-γ's
# `loss_weights`). ε with uniform weights is DDPM's $L_\text{simple}$. Validation reads ε̂ back from
# whatever the network predicts and reports its mean squared error, so held-out losses of runs with
# different targets can be compared on one scale. One step of each target, from the same start:

# %%
for objective, weighting in (('eps', 'uniform'), ('v', 'uniform'), ('v', 'min_snr'), ('x0', 'uniform')):
    r = Run(dataclasses.replace(TRAIN_PRESETS['tiny'], objective=objective, weighting=weighting, batch_size=16, out=tempfile.mkdtemp()))
    xb, yb = next(iter(r.train_dl))
    print(f"{objective:3s} {weighting:8s} loss of step 1: {train_step(r, xb, yb):.3f}   held-out ε-MSE: {validate(r, r.model):.3f}")


# %% [markdown]
# The losses differ in scale because the targets do (an untrained network outputs about 0, so the
# ε-loss starts near 1 and the $x_0$-loss near the images' mean square), while the held-out ε-MSE is one
# yardstick for all of them. Lesson 08 measures which target and weighting learn fastest, on the digits and
# on image folders the course never saw; the `tiny` preset predicts v and weighs it with min-SNR-5.
#
# ## Checkpoints that resume exactly
#
# A checkpoint is one file: model, EMA, optimiser, LR schedule, grad scaler, step, config, history and
# the minddpm version. It is written to a temporary file and renamed over the old one, so a run killed
# while saving leaves the previous checkpoint intact. Resuming rebuilds the run from the saved config,
# loads every state, and skips the batches of the current epoch that were already used (each epoch's
# order is a permutation seeded with `seed + epoch`), so the loss sequence continues exactly. No random
# number generator's state needs saving: each step's timesteps, noise and label drops are drawn from a
# generator seeded by `(seed, step)` (`step_draws`, lesson 10), so step 2,001 draws the same after a
# resume as in one go, and on any number of processes. The config records the target and the weighting;
# files written before either existed hold neither and are read as ε, uniform (`saved_config`), whatever
# today's defaults are.

# %%
#| export
def save_checkpoint(run: Run, # the run to save, every state of it
                    path,     # the file to write (replaced if it exists); missing folders are made
                    ) -> Path:
    "Write the whole run to `path` atomically (temporary file, then rename)."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    state = {'model': run.model.state_dict(), 'ema': run.ema.state_dict(), 'opt': run.opt.state_dict(),
             'sched': run.sched.state_dict(), 'scaler': run.scaler.state_dict(), 'step': run.step,
             'config': asdict(run.cfg), 'history': run.history, 'classes': run.classes, 'version': minddpm.__version__}
    tmp = path.with_name(path.name + '.tmp')
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic on POSIX and Windows
    run.checkpoint = (path, run.step)
    return path

def _read(path, needs: set, map_location='cpu') -> dict:
    path = Path(path)
    if path.is_dir(): raise ValueError(f"{path} is a folder; give the checkpoint file in it, e.g. {path/'checkpoint.pt'}")
    if not path.is_file(): raise FileNotFoundError(f"no checkpoint at {path}")
    with open(path, 'rb') as f: head = f.read(4)
    if head[:2] != b'PK' and head[:1] != b'\x80':   # torch.save writes a zip archive (a pickle before PyTorch 1.6)
        raise ValueError(f"{path} is not a readable minddpm checkpoint or model file: torch.save did not write it (it starts with {head!r})")
    try: state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:   # the first line of torch's reason: some run to a page of advice about pickles
        raise ValueError(f"{path} is not a readable minddpm checkpoint ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})") from e
    missing = needs - set(state) if isinstance(state, dict) else needs
    if missing: raise ValueError(f"{path} is not a minddpm checkpoint: it lacks {sorted(missing)}")
    return state

def load_checkpoint(path,               # a file written by `save_checkpoint`
                    map_location='cpu', # where the tensors are loaded, as `torch.load` takes it
                    ) -> dict:
    "Read a checkpoint written by `save_checkpoint`, refusing missing or corrupt files with a clear message."
    return _read(path, {'model', 'ema', 'opt', 'config', 'step'}, map_location)

def saved_config(state: dict, # a checkpoint or exported model, as read by `load_checkpoint`
                 ) -> TrainConfig:
    "The `TrainConfig` a checkpoint was trained with; files written before targets and weightings were chosen are ε, uniform."
    return TrainConfig(**{'objective': 'eps', 'weighting': 'uniform', **state['config']})

def set_steps(run: Run,               # the run to change: its config and LR schedule are replaced
              steps: int,             # the new total of optimiser steps; more than the run's current step
              lr: float | None = None, # a new peak learning rate; None: keep `run.cfg.lr`
              ):
    "Change the run's length (and peak LR): the same OneCycle shape stretched or shrunk to `steps`, continuing at the current step."
    if steps < max(run.step, 1): raise ValueError(f"the run is at step {run.step}; steps={steps} would end before it")
    run.cfg = dataclasses.replace(run.cfg, steps=steps, lr=run.cfg.lr if lr is None else lr)
    for g in run.opt.param_groups:   # OneCycleLR reads these when it continues a schedule (last_epoch ≥ 0)
        g.update(max_lr=run.cfg.lr, initial_lr=run.cfg.lr / 25, min_lr=run.cfg.lr / 25 / 1e4)   # its div factors
    run.sched = torch.optim.lr_scheduler.OneCycleLR(run.opt, max_lr=run.cfg.lr, total_steps=steps, last_epoch=run.step - 1)

RESUME_CHANGES = ('steps', 'lr', 'minutes', 'out', 'device', 'precision', 'wandb', 'compile', 'val_every', 'ckpt_every',
                  'sample_every', 'grad_accum')   # what `resume` may change; the other fields define the run

def resume(path,      # a checkpoint written by `save_checkpoint`
           **changes, # `TrainConfig` fields in `RESUME_CHANGES` to change, e.g. `out`, `steps`, `lr`, `minutes`
           ) -> Run:
    """Rebuild a run from its checkpoint, every state restored. `changes` may move `out`, change `steps` (which stretches
    the LR schedule) or the peak `lr` (the schedule continues at the new height), and the like (`RESUME_CHANGES`); a
    change to a field that defines the run (its data, model, batch, seed) raises `ValueError`. A device the checkpoint
    names that is not here (a run saved on CUDA, resumed on a CPU) falls back to 'auto', with a warning."""
    state = load_checkpoint(path)
    saved = saved_config(state)
    unused = () if saved.weighting == 'min_snr' else ('snr_gamma',)   # γ means nothing under uniform weights
    fixed = {k: (getattr(saved, k), v) for k, v in changes.items()
             if k not in RESUME_CHANGES + unused and hasattr(saved, k) and getattr(saved, k) != v}
    if fixed: raise ValueError(f"resuming {path} cannot change " + ', '.join(f"{k} ({a!r} → {b!r})" for k, (a, b) in fixed.items())
                               + ": they define the run it holds; start a new run (another out) for that")
    if 'device' not in changes:
        try: pick_device(saved.device)
        except ValueError as e:
            warnings.warn(f"{e}: {path} was saved on {saved.device}; resuming on {pick_device('auto')} instead (pass device to choose)")
            changes['device'] = 'auto'
    cfg = dataclasses.replace(saved, **changes)
    if cfg.steps < state['step']: raise ValueError(f"the checkpoint is at step {state['step']}; steps={cfg.steps} would end before it")
    run = Run(cfg)
    run.model.load_state_dict(state['model']); run.ema.load_state_dict(state['ema'])
    run.opt.load_state_dict(state['opt'])
    if state['scaler'] and run.scaler.is_enabled(): run.scaler.load_state_dict(state['scaler'])  # fp16 then and now
    run.step, run.history, run.checkpoint = state['step'], list(state['history']), (Path(path), state['step'])
    if (cfg.steps, cfg.lr) == (saved.steps, saved.lr): run.sched.load_state_dict(state['sched'])
    else: set_steps(run, cfg.steps, cfg.lr)
    return run


# %% [markdown]
# ## A trained model in one small file
#
# A checkpoint holds all it takes to carry on training, and for the tiny model most of its 17 MB are
# the optimiser's moment estimates. To *use* a model you need only the weights, the config and the class
# names: `export_model` writes those, the EMA and the raw weights both, in half precision (about 4 MB
# for `tiny`; lesson 08 compares the two), and `load_model` reads either kind of file. `load_model()`
# with no path gives the tiny digits model that ships inside minddpm, trained by `minddpm_train` (the
# command is in `data/README.md`), which lessons 02 to 05 use to show real samples before you have
# trained anything.

# %%
#| export
@dataclass
class Trained:
    "A model ready to sample (EMA or raw weights, in eval mode), its diffusion, class names and image shape."
    model: ConditionalUNet # the network (EMA or raw weights) in eval mode, on the requested device
    diffusion: Diffusion   # the forward process (schedule, T) it was trained with
    classes: list          # class names; label i is classes[i]
    shape: tuple           # (C, H, W) it was trained at
    config: TrainConfig    # the config of the run that trained it
    step: int              # optimiser steps it was trained for

EXPORT_FORMATS = ('minddpm', 'torch.export', 'onnx')
GRAPH_SUFFIXES = {'.pt2': 'torch.export', '.onnx': 'onnx'}   # the graph formats `export_model` picks by a path's ending

class _Arithmetic(nn.Module):
    "What `torch.export` traces: the network's arithmetic alone, with labels arriving as embedding rows already checked."
    def __init__(self, net: ConditionalUNet): super().__init__(); self.net = net
    def forward(self, x, t, rows): return self.net.body(x, self.net.time_emb(t) + self.net.label_emb(rows))

class ExportedUNet(nn.Module):
    "A network read from a `torch.export` file (.pt2): it checks its input as `ConditionalUNet` does, then runs the exported graph."
    exported = True   # its weights live in the graph: `sample` autocasts it to bf16 rather than casting a copy
    def __init__(self, program,            # a `torch.export.ExportedProgram` of `_Arithmetic`, batch size dynamic
                 num_classes: int,         # labels are 0 … num_classes − 1, or `NULL_LABEL`
                 shape: tuple):            # (C, H, W) of the images it takes: fixed when it was exported
        super().__init__()
        self.graph, self.num_classes, self.shape = program.module(), num_classes, tuple(shape)

    def check_input(self, x: torch.Tensor):
        "Raise `ValueError` unless x is (B, C, H, W) with the (C, H, W) the network was exported for."
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"this exported network takes images of shape (B, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        "The network's prediction for images `x` (B, C, H, W) at timesteps `t` (B,) given labels `y` (B,); `y=None` is unconditional."
        self.check_input(x)
        return self.graph(x, t.long(), ConditionalUNet.check_labels(self, y, len(x), x.device))

    def train(self, mode: bool = True): # ignored: an exported graph has one mode, inference
        "Keep the flag only: `sample` switches models to eval and back, and an exported graph cannot change mode."
        self.training = mode
        return self

class OnnxUNet(ExportedUNet):
    "A network read from an ONNX file (.onnx), run by ONNX Runtime on the CPU in float32: checked as `ExportedUNet`, then the session runs."
    def __init__(self, session,            # an `onnxruntime.InferenceSession` of `_Arithmetic`'s graph, batch size dynamic
                 num_classes: int,         # labels are 0 … num_classes − 1, or `NULL_LABEL`
                 shape: tuple):            # (C, H, W) of the images it takes
        nn.Module.__init__(self)
        self.session, self.num_classes, self.shape = session, num_classes, tuple(shape)
        self.graph = lambda x, t, rows: torch.from_numpy(self.session.run(None, {
            'x': x.detach().float().cpu().numpy(), 't': t.cpu().numpy(), 'rows': rows.cpu().numpy()})[0]).to(x.device)

def export_model(source,               # a `Run`, a checkpoint file, or a file from `export_model` (to re-export it as .pt2)
                 path,                 # the file to write (replaced if it exists); missing folders are made
                 dtype=torch.float16,  # 'minddpm' format: floating-point weights are cast to it; integer buffers are kept
                 format: str | None = None,  # 'minddpm' (weights), 'torch.export' or 'onnx' (the EMA network's graph); None: by path's ending, .pt2 → torch.export, .onnx → onnx
                 ) -> Path:
    """Write a model to `path`, atomically. 'minddpm': the EMA and raw weights (in `dtype`), config and classes, for
    `load_model`. 'torch.export': the EMA network as an exported float32 graph with a dynamic batch size (PyTorch's
    `.pt2` archive), with the config and classes beside it; `load_model` samples from it as from the weights, and it
    runs without minddpm's model code (`torch.export.load(path).module()`, called with labels as embedding rows).
    'onnx': the same graph through PyTorch's dynamo ONNX exporter (the `onnx` extra), with the config and classes in
    the model's metadata, for ONNX Runtime and other runtimes; inputs x, t, rows, output prediction.
    Raises `ValueError` for an unknown format, `ImportError` naming the extra when ONNX's packages are missing."""
    path = Path(path)
    format = format or GRAPH_SUFFIXES.get(path.suffix, 'minddpm')
    if format not in EXPORT_FORMATS: raise ValueError(f"Unknown format {format!r}; use {' or '.join(map(repr, EXPORT_FORMATS))}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    if format in ('torch.export', 'onnx'):
        if isinstance(source, Run):
            net, cfg, classes, step, shape = copy.deepcopy(source.ema.model), source.cfg, source.classes, source.step, source.shape
        else:
            m = load_model(source)
            net, cfg, classes, step, shape = m.model, m.config, m.classes, m.step, m.shape
        net = net.float().cpu().eval()
        example = (torch.zeros(2, *shape), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
        batch = torch.export.Dim('batch', min=1)
        meta = dict(config=asdict(cfg), classes=list(classes), step=step, shape=list(shape), version=minddpm.__version__)
        if format == 'onnx':
            try: import onnxscript  # noqa: F401  (the dynamo exporter's translator)
            except ImportError: raise ImportError('exporting to ONNX needs onnx and onnxscript: pip install "minddpm[onnx]"') from None
            with warnings.catch_warnings():   # it names the batch axis by its own rule, and says so
                warnings.filterwarnings('ignore', message='# The axis name')
                onnx_program = torch.onnx.export(_Arithmetic(net).eval(), example, dynamo=True, verbose=False,
                                                 dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
                                                 input_names=['x', 't', 'rows'], output_names=['prediction'])
            onnx_program.model.metadata_props['minddpm.json'] = json.dumps(meta)
            tmp = path.with_name(path.stem + '.tmp.onnx')
            onnx_program.save(tmp)
        else:
            program = torch.export.export(_Arithmetic(net).eval(), example, dynamic_shapes=({0: batch}, {0: batch}, {0: batch}))
            tmp = path.with_name(path.stem + '.tmp.pt2')   # torch.export wants its archives to end in .pt2
            torch.export.save(program, tmp, extra_files={'minddpm.json': json.dumps(meta)})
        os.replace(tmp, path)
        return path
    if isinstance(source, Run):
        state = {'model': source.model.state_dict(), 'ema': source.ema.state_dict(), 'config': asdict(source.cfg),
                 'classes': source.classes, 'step': source.step}
    else: state = load_checkpoint(source)
    cast = lambda sd: {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({'weights': cast(state['ema']['model']), 'raw_weights': cast(state['model']), 'config': state['config'],
                'classes': state['classes'], 'step': state['step'], 'version': minddpm.__version__}, tmp)
    os.replace(tmp, path)
    return path

def _load_exported(path, device) -> Trained:
    "A `.pt2` file from `export_model` as a `Trained` model."
    extra = {'minddpm.json': ''}
    if not zipfile.is_zipfile(path):   # checked here: torch.export.load would log a traceback before failing
        raise ValueError(f"{path} is not a readable torch.export file: it is not a zip archive (a .pt2 file is one)")
    try: program = torch.export.load(path, extra_files=extra)
    except Exception as e:
        raise ValueError(f"{path} is not a readable torch.export file ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})") from e
    if not extra['minddpm.json']: raise ValueError(f"{path} is a torch.export file, but not one from minddpm's export_model: it has no config")
    meta = json.loads(extra['minddpm.json'])
    cfg = saved_config(meta)
    model = ExportedUNet(program, len(meta['classes']), meta['shape']).to(device)
    diffusion = Diffusion(cfg.schedule, cfg.T, objective=cfg.objective).to(device)
    return Trained(model.eval(), diffusion, list(meta['classes']), tuple(meta['shape']), cfg, meta['step'])

def _load_onnx(path, device) -> Trained:
    "An `.onnx` file from `export_model` as a `Trained` model, run by ONNX Runtime on the CPU."
    try: import onnxruntime
    except ImportError: raise ImportError(f'reading {path} needs ONNX Runtime: pip install "minddpm[onnx]"') from None
    try: session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    except Exception as e:
        raise ValueError(f"{path} is not a readable ONNX file ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})") from e
    meta = session.get_modelmeta().custom_metadata_map.get('minddpm.json')
    if not meta: raise ValueError(f"{path} is an ONNX file, but not one from minddpm's export_model: it has no config")
    meta = json.loads(meta)
    cfg = saved_config(meta)
    model = OnnxUNet(session, len(meta['classes']), meta['shape'])
    diffusion = Diffusion(cfg.schedule, cfg.T, objective=cfg.objective).to(device)
    return Trained(model.eval(), diffusion, list(meta['classes']), tuple(meta['shape']), cfg, meta['step'])

def load_model(path=None,            # a checkpoint, a file from `export_model` (weights, a .pt2 or an .onnx graph); None: the shipped tiny digits model
               device='cpu',         # where the model and its diffusion go
               weights: str = 'ema', # 'ema': the EMA weights; 'raw': the trained weights, not averaged (not in a graph file)
               ) -> Trained:
    "The model of a checkpoint or of a file from `export_model` (`weights`: 'ema' or 'raw'); no path: the tiny digits model shipped with minddpm."
    if weights not in ('ema', 'raw'): raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    if path is None: path = resources.files('minddpm.assets') / 'digits_tiny.pt'
    if Path(path).suffix in GRAPH_SUFFIXES and Path(path).is_file():
        if weights == 'raw': raise ValueError(f"{path} holds the EMA network only; weights='raw' needs a checkpoint or a weights export")
        return (_load_exported if Path(path).suffix == '.pt2' else _load_onnx)(path, device)
    state = _read(path, {'config', 'classes', 'step'})
    key = ('weights', 'ema') if weights == 'ema' else ('raw_weights', 'model')
    if key[0] in state: weights = state[key[0]]
    elif key[1] in state: weights = state['ema']['model'] if key[1] == 'ema' else state['model']
    else: raise ValueError(f"{path} holds no {weights} weights")
    cfg = saved_config(state)
    c = weights['inc.net.0.weight'].shape[1]
    model = ConditionalUNet(len(state['classes']), **unet_preset(cfg.unet, in_channels=c))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    diffusion = Diffusion(cfg.schedule, cfg.T, objective=cfg.objective).to(device)
    return Trained(model.to(device).eval(), diffusion, list(state['classes']),
                   (c, cfg.img_size, cfg.img_size), cfg, state['step'])


# %% [markdown]
# ### The network alone: `torch.export`
#
# A weights file needs minddpm's model code to rebuild the network. To run the network somewhere that code
# is not (a server, another program), `export_model(…, format='torch.export')`, or any path ending in
# `.pt2`, traces the EMA network with `torch.export` into PyTorch's own archive: the graph of its arithmetic and
# its weights, float32, for any batch size at the trained image size. The checks stay in Python, where they
# can say what is wrong: `load_model` wraps the graph in an `ExportedUNet` that checks the images and maps the
# labels, and the same sampling loop runs on it. Its outputs equal the eager network's:

# %%
from minddpm.sampling import sample
shipped = resources.files('minddpm.assets') / 'digits_tiny.pt'
exported = export_model(shipped, Path(tempfile.mkdtemp())/'tiny.pt2')   # also: minddpm_train … --export tiny.pt2
tiny, graph = load_model(), load_model(exported)
for b in (1, 7, 300):
    xb, tb, yb = torch.randn(b, *graph.shape), torch.randint(0, 1000, (b,)), torch.randint(-1, 10, (b,))
    with torch.no_grad(): test_close(graph.model(xb, tb, yb), tiny.model(xb, tb, yb), eps=1e-5)
g0 = lambda: torch.Generator().manual_seed(0)
test_close(sample(graph.model, graph.diffusion, torch.arange(10), shape=graph.shape, generator=g0()),
           sample(tiny.model, tiny.diffusion, torch.arange(10), shape=tiny.shape, generator=g0()), eps=1e-5)
test_fail(lambda: graph.model(torch.zeros(2, 1, 32, 32), torch.zeros(2)), contains='takes images of shape (B, 1, 16, 16)')
print(f"{exported.name}: {exported.stat().st_size / 1e6:.1f} MB, float32; the weights file: "
      f"{shipped.stat().st_size / 1e6:.1f} MB, two sets of weights in float16")

# %% [markdown]
# The same graph also goes to ONNX, the format most other runtimes read (ONNX Runtime, TensorRT, browsers through
# ONNX Runtime Web): a path ending in `.onnx` runs PyTorch's dynamo exporter (`torch.onnx.export(…, dynamo=True)`,
# which starts from `torch.export`'s graph; the `onnx` extra installs it and ONNX Runtime). `load_model` runs the file
# with ONNX Runtime on the CPU, and the same sampling loop draws the same images:

# %%
onnx_file = export_model(shipped, Path(tempfile.mkdtemp())/'tiny.onnx')   # also: minddpm_train … --export tiny.onnx
in_onnx = load_model(onnx_file)
for b in (1, 7, 300):
    xb, tb, yb = torch.randn(b, *in_onnx.shape), torch.randint(0, 1000, (b,)), torch.randint(-1, 10, (b,))
    with torch.no_grad(): test_close(in_onnx.model(xb, tb, yb), tiny.model(xb, tb, yb), eps=1e-5)
test_close(sample(in_onnx.model, in_onnx.diffusion, torch.arange(10), shape=in_onnx.shape, generator=g0()),
           sample(tiny.model, tiny.diffusion, torch.arange(10), shape=tiny.shape, generator=g0()), eps=1e-5)
print(f"{onnx_file.name}: {onnx_file.stat().st_size / 1e6:.1f} MB, float32, inputs x, t, rows")

# %% [markdown]
# ## The loop
#
# `train` runs until `cfg.steps`, validates every `val_every` steps with the EMA weights (a true mean over
# the held-out split), checkpoints every `ckpt_every` steps and at the end, and shows a progress bar with
# the step, the loss (on the run's target, weighted), the learning rate and `val_eps`, the held-out ε-MSE
# (the same measure for every target), in a terminal or a notebook. Each epoch's data order comes from
# a generator seeded with `seed + epoch`, which is what lets a resumed run pick up mid-epoch.
#
# Every `sample_every` epochs (at least 500 steps apart), and at the end, it draws a grid with one row per class from the EMA weights
# (DDIM, 50 steps, w = 3, always the same seed, so the grids of one run are comparable) into
# `out/samples/`. With a time budget (`minutes`), it times the first steps of a fresh run, fits the step
# count (and so the OneCycle schedule) to the budget, and stops at the budget whatever happens. Each event's
# cost is kept with the pace of the steps when it was timed and scaled by their pace since, so a grid probed
# while the machine was busy holds no time back once it is idle.

# %%
#| export
def _batches(run: Run):
    "The training batches from the run's current step on, epoch after epoch, each epoch in a seeded order."
    epoch, skip = divmod(run.step, len(run.train_dl))
    while True:
        run.train_dl.sampler.set_epoch(epoch)   # the permutation of epoch e is seeded by seed + e, on every rank
        for i, batch in enumerate(run.train_dl):
            if i >= skip: yield batch
        epoch, skip = epoch + 1, 0

def save_samples(run: Run,         # its EMA model, diffusion, classes, image shape and step are used
                 path,             # the PNG to write; missing folders are made
                 n: int = 8,       # samples per class: the columns of the grid
                 steps: int = 50,  # DDIM steps
                 w: float = 3.0,   # guidance weight: 0 unconditional, 1 conditional, >1 guided
                 seed: int = 0,    # seeds the sampler's own generator (training's RNG is untouched)
                 ) -> Path:
    "Draw `n` samples of every class with the EMA weights (DDIM, fixed seed) and save them as a grid, one row per class."
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid
    from minddpm.sampling import sample
    y = torch.arange(len(run.classes)).repeat_interleave(n)
    g = torch.Generator(run.device).manual_seed(seed)
    x = sample(run.ema.model, run.diffusion, y, shape=run.shape, steps=steps, w=w, generator=g, uint8=True)  # own generator: training's RNG is untouched
    grid = make_grid(x.cpu(), nrow=n, padding=1, pad_value=128).permute(1, 2, 0).numpy()  # matplotlib takes arrays
    h = run.shape[1] + 1
    fig, ax = plt.subplots(figsize=(0.5 + n * 0.45, 0.4 + len(run.classes) * 0.45))
    ax.imshow(grid, interpolation='nearest')
    ax.set(xticks=[], yticks=[h * (i + .5) for i in range(len(run.classes))], yticklabels=run.classes)
    ax.set_title(f'step {run.step}, EMA, DDIM {steps}, w={w:g}', fontsize=8); ax.tick_params(labelsize=7, length=0)
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches='tight'); plt.close(fig)
    return path

class _Wandb:
    "Weights & Biases logging: online with credentials, else offline (never a prompt)."
    def __init__(self, run: Run):
        try: import wandb
        except ImportError: raise RuntimeError('W&B logging needs wandb: pip install "minddpm[wandb]"') from None
        mode = os.environ.get('WANDB_MODE') or ('online' if wandb.login(prompt=False, verify=False) else 'offline')
        Path(run.cfg.out).mkdir(parents=True, exist_ok=True)
        self.wandb, self.run = wandb, wandb.init(project='minddpm', config=asdict(run.cfg), dir=run.cfg.out, mode=mode)
    def log(self, step, **values): self.run.log({k: v for k, v in values.items() if v is not None}, step=step)
    def image(self, step, name, path): self.run.log({name: self.wandb.Image(str(path))}, step=step)
    def finish(self, ckpt: Path):
        art = self.wandb.Artifact(f'minddpm-{self.run.id}', type='model'); art.add_file(str(ckpt))
        self.run.log_artifact(art); self.run.finish()

_clock = time.monotonic   # seconds; the loop's only clock, so a test can run it on simulated time

GRID_MIN_STEPS = 500   # a small folder's epoch is a step or two: its grids would cost more than its training

def grid_every(cfg: TrainConfig, # its `sample_every`, in epochs; 0: no grids at all
               per_epoch: int,   # optimiser steps in one epoch
               ) -> int:
    "Steps between two sample grids: `sample_every` epochs, but at least `GRID_MIN_STEPS`; 0 when `sample_every` is 0."
    return max(cfg.sample_every * per_epoch, GRID_MIN_STEPS) if cfg.sample_every else 0

class _Budget:
    """Fits a run's length to a time budget as it goes. It times every step, validation, sample grid and checkpoint, and
    chooses the step count whose remaining steps and events (the final ones included) end at `fill` of the budget."""
    def __init__(self, run: Run, seconds: float, fill: float = 0.97):
        self.run, self.seconds, self.fill, self.start = run, seconds, fill, _clock()
        self.step_s, self.cost = [], {'val': 0.0, 'grid': 0.0, 'ckpt': 0.0}   # seconds per step; per event, measured
        self.pace = {'val': None, 'grid': None, 'ckpt': None}   # seconds per step when each event cost was measured
    def elapsed(self) -> float: return _clock() - self.start
    def pace_now(self) -> float | None:
        "Mean seconds of the last 50 steps: the machine now, not at the start of the run."
        recent = self.step_s[-50:]
        return sum(recent) / len(recent) if recent else None
    def measured(self, kind: str, seconds: float):
        "Keep `seconds` as the cost of one event of `kind`, with the steps' pace then: a busy machine slows both alike."
        self.cost[kind], self.pace[kind] = seconds, self.pace_now()
    def timed(self, kind: str, fn, *args, **kwargs):
        "Call `fn`, keeping its duration as the cost of one event of `kind`."
        t0 = _clock(); out = fn(*args, **kwargs); self.measured(kind, _clock() - t0)
        return out
    def probe_grid(self, steps: int = 50, n: int = 8):
        "Estimate a sample grid's cost before the first one: one guided sampling step on its batch, times `steps`."
        from minddpm.sampling import sample
        y, t0 = torch.arange(len(self.run.classes)).repeat_interleave(n), _clock()
        sample(self.run.ema.model, self.run.diffusion, y, shape=self.run.shape, steps=1, generator=torch.Generator(self.run.device))
        self.measured('grid', steps * (_clock() - t0))
    def _events(self, every: int, end: int) -> int:
        "Events due after the current step, up to `end`: one every `every` steps (0: none), plus the final one."
        step = self.run.step
        return 0 if not every else end // every - step // every + (end % every != 0)
    def fit(self) -> int:
        "The largest step count whose remaining time fits the budget (at least one more step)."
        cfg, per_epoch = self.run.cfg, len(self.run.train_dl)
        step_s, left = self.pace_now(), self.fill * self.seconds - self.elapsed()
        # an event timed while the machine was busier (or idler) costs what it cost then, scaled by the steps' pace since
        each = {k: c * (step_s / self.pace[k] if self.pace[k] else 1.0) for k, c in self.cost.items()}
        def cost(end):
            return ((end - self.run.step) * step_s + self._events(cfg.val_every, end) * each['val']
                    + self._events(grid_every(cfg, per_epoch), end) * each['grid']
                    + self._events(cfg.ckpt_every, end) * each['ckpt'])
        lo, hi = self.run.step + 1, self.run.step + 2
        while cost(hi) <= left: lo, hi = hi, 2 * hi           # then bisect: cost grows with the end
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if cost(mid) <= left else (lo, mid)
        return lo

def train(cfg: TrainConfig | None = None, # config of a fresh run; None: `TrainConfig()`; unused when `run` is given
          run: Run | None = None,          # a run to continue (e.g. from `resume`); None: a new `Run(cfg)`
          progress: bool = True,           # show a progress bar with the step, loss, learning rate and held-out ε-MSE
          until: int | None = None,        # stop at this step, with a checkpoint, before `cfg.steps`; None: to the end
          calibrate: int = 20,             # with `cfg.minutes`: the steps timed before the step count is first fitted
          ) -> Run:
    """Train from scratch (`cfg`) or continue a resumed `run`, to `cfg.steps` (or stop and save at step `until`). With
    `cfg.minutes`, a fresh run refits its step count to the budget as it goes; any run stops when the budget is spent
    (then `run.step < run.cfg.steps`). Raises `FloatingPointError` on a non-finite loss, saying which checkpoint is kept.
    Under `torchrun` every rank calls it: rank 0 alone writes checkpoints and grids, logs and shows the bar, and its clock
    decides for all when a budget is spent; a failed collective (another rank died) raises `RuntimeError` naming the
    checkpoint kept."""
    run = run or Run(cfg or TrainConfig())
    cfg, out, place = run.cfg, writable_dir(run.cfg.out), run.place
    ckpt, per_epoch = out/'checkpoint.pt', len(run.train_dl)
    budget = _Budget(run, cfg.minutes * 60) if cfg.minutes is not None else None
    fit = budget is not None and run.step == 0              # a fresh run fits its length to the budget
    timed = budget.timed if budget else lambda kind, fn, *a, **k: fn(*a, **k)
    log = _Wandb(run) if cfg.wandb and place.main else None
    bar = tqdm(total=cfg.steps, initial=run.step, disable=not (progress and place.main), desc='train')
    def kept():
        return (f"the last checkpoint, {run.checkpoint[0]} at step {run.checkpoint[1]}, is kept" if run.checkpoint else
                f"no checkpoint was written: the first was due at step {cfg.ckpt_every}")
    def save():
        if place.main: save_checkpoint(run, ckpt)
        else: run.checkpoint = (ckpt, run.step)
        place.barrier()                                     # no rank runs ahead of a checkpoint being written
    batches, refitted = _batches(run), 0.0
    try:
        while run.step < min(until or run.cfg.steps, run.cfg.steps):
            t0, lr = _clock(), run.sched.get_last_lr()[0]         # the learning rate this step takes
            x, y = next(batches)
            try: loss = train_step(run, x, y)
            except FloatingPointError as e:
                bar.close()
                raise FloatingPointError(f"{e}; {kept()}. A lower learning rate than lr={run.cfg.lr:g} often helps") from None
            if budget: budget.step_s.append(_clock() - t0)
            last = run.step == run.cfg.steps
            first_fit = fit and run.step == calibrate       # time a validation and a checkpoint, probe a grid, then fit
            if first_fit and cfg.sample_every and not budget.cost['grid'] and place.main: budget.probe_grid()
            val = timed('val', validate, run) if run.step % cfg.val_every == 0 or last or first_fit else None
            run.history.append((run.step, loss, lr, val))
            if log: log.log(run.step, loss=loss, lr=lr, val_loss=val)
            bar.update(1); bar.set_postfix(loss=f'{loss:.4f}', lr=f'{lr:.2e}', **({'val_eps': f'{val:.4f}'} if val else {}))
            out_of_time = budget is not None and bool(place.from_main(budget.elapsed() > budget.seconds, device=run.device)[0])
            if cfg.sample_every and (run.step % grid_every(cfg, per_epoch) == 0 or last) and not out_of_time and place.main:
                grid = timed('grid', save_samples, run, out/'samples'/f'step_{run.step:06d}.png')
                if log: log.image(run.step, 'samples', grid)
            if run.step % cfg.ckpt_every == 0 or run.step == until or last or out_of_time or first_fit: timed('ckpt', save)
            if out_of_time: break
            if fit and not last and run.step >= calibrate:  # refit every 2% of the budget: the machine may have changed
                due = first_fit or budget.elapsed() - refitted > 0.02 * budget.seconds
                due, steps = place.from_main(due, budget.fit() if due and place.main else 0, device=run.device)
                if due:
                    refitted = budget.elapsed()
                    if abs(steps - run.cfg.steps) > max(1, 0.01 * steps):
                        set_steps(run, int(steps)); bar.total = int(steps); bar.refresh()
    except RuntimeError as e:   # under torchrun: which rank stopped where, and what is kept
        if not place.parallel: raise
        bar.close()
        why = re.sub(r'^\[[^\]]*\]\s*', '', (str(e).strip() or type(e).__name__).splitlines()[0])   # gloo's source location
        why = why.split('. This is typically')[0]                                                   # and its advice
        lost = isinstance(e, torch.distributed.DistError) or re.search('gloo|nccl|connection|timed out', str(e), re.I)
        raise RuntimeError(f"rank {place.rank} of {place.world_size} stopped in step {run.step + 1}: "
                           + ("it lost touch with the other processes, most likely because one of them stopped (torchrun's "
                              f"report names it) ({why})" if lost else why) + f"; {kept()}") from e
    bar.close()
    if log: log.finish(ckpt)
    return run


# %% [markdown]
# A short run of the tiny preset on the bundled digits, on whatever this machine has:

# %%
out = Path(tempfile.mkdtemp())
run = train(dataclasses.replace(TRAIN_PRESETS['tiny'], steps=120, val_every=40, ckpt_every=100, out=str(out)), progress=False)
steps_, losses, lrs, vals = zip(*run.history)
fig, axs = plt.subplots(1, 2, figsize=(9, 2.4))
axs[0].plot(steps_, losses, lw=.8, label='training loss (v, min-SNR-5 weights)')
axs[0].plot([s for s, v in zip(steps_, vals) if v], [v for v in vals if v], 'o-', label='held-out ε-MSE (EMA)')
axs[0].set(xlabel='step', ylabel='loss', ylim=(0, 1.1)); axs[0].legend(fontsize=8)
axs[1].plot(steps_, lrs); axs[1].set(xlabel='step', title='OneCycleLR');

# %%
assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:10]) / 10, 'the loss should fall clearly'
assert (out/'checkpoint.pt').exists()

# %% [markdown]
# The run drew its sample grid at the end, one row per class: after 120 steps, blobs with a hint of their
# class. The 4,000-step run that made the shipped model (`load_model()`) drew the same grids, with digits
# in every row from about step 1,000 on.

# %%
Image(out/'samples'/'step_000120.png', width=260)

# %% [markdown]
# **A NaN stops the run, and the last good checkpoint stays.** The loss is checked before the backward
# pass, so a bad batch never reaches the weights or the checkpoint:

# %%
nan_run = train(dataclasses.replace(TRAIN_PRESETS['tiny'], steps=12, batch_size=8, ckpt_every=5, val_every=100,
                                    sample_every=0, out=str(out/'nan')), progress=False, until=5)
with torch.no_grad(): next(nan_run.model.parameters()).fill_(float('nan'))   # something goes badly wrong
test_fail(lambda: train(run=nan_run, progress=False), contains='the loss became nan in step 6; the last checkpoint, ')
test_fail(lambda: train(run=nan_run, progress=False), contains='at step 5, is kept')
test_eq(load_checkpoint(out/'nan'/'checkpoint.pt')['step'], 5)

# %% [markdown]
# **Resume is exact.** Stop a 30-step run at step 20, rebuild it from its checkpoint and finish it: every
# loss matches the uninterrupted run's (small batches, to keep this quick).

# %%
cfg = dataclasses.replace(TRAIN_PRESETS['tiny'], steps=30, batch_size=16, val_every=1000, ckpt_every=1000, out=str(out/'a'))
straight = train(cfg, progress=False)
train(dataclasses.replace(cfg, out=str(out/'b')), progress=False, until=20)
resumed = train(run=resume(out/'b'/'checkpoint.pt'), progress=False)
test_eq([h[1] for h in resumed.history], [h[1] for h in straight.history])

# %%
test_fail(lambda: load_checkpoint(out/'nothing.pt'), contains='no checkpoint at')
(out/'bad.pt').write_bytes(b'not a checkpoint')
test_fail(lambda: load_checkpoint(out/'bad.pt'), contains='is not a readable minddpm checkpoint')
test_fail(lambda: resolve_precision(cpu, 'fp8'), contains='use auto, bf16, fp16 or fp32')

# %% [markdown]
# ## On a GPU
#
# The same `train` on CUDA runs in bf16 (fp16 with a scaler on a T4), with channels_last weights, and can
# compile the model. The cell below trains the `colab` preset's UNet (15.7 M parameters) on the bundled
# digits at 32×32, compiled. On an H200 it took 4½ minutes (measured: compilation, validation and eight
# sample grids included) and drew clean digits of every class; on a T4 expect roughly twice that (an
# estimate: the 2,000 steps are 2.4 PFLOP, 2½ minutes at 16 TFLOP/s, plus the same overheads).
# `tests/test_cuda.py` checks on a GPU that autocast is on, the weights are channels_last, the scaler
# scales in fp16 and compiled training matches eager. On a CPU the lesson runs the short run above
# instead.

# %%
#| cuda
gpu = train(dataclasses.replace(TRAIN_PRESETS['colab'], dataset='digits', hflip=False, steps=2000, compile=True,
                                sample_every=20, out=str(out/'gpu')))
print(gpu.device, gpu.dtype, f"held-out ε-MSE {gpu.history[-1][3]:.4f}")
Image(sorted((out/'gpu'/'samples').glob('*.png'))[-1], width=300)

# %% [markdown]
# ## The two commands
#
# ```sh
# minddpm_train --preset tiny --out runs/digits --export digits_tiny.pt      # 4,000 steps, about 8 minutes on 2 CPU cores
# minddpm_train --preset tiny --minutes 3 --out runs/quick                   # or: fit the run to a time budget
# minddpm_train --resume runs/digits/checkpoint.pt --steps 6000              # carry on where it stopped
# minddpm_train --preset colab --wandb --out /content/drive/MyDrive/minddpm  # CIFAR-10 on a Colab GPU, logged to W&B
# minddpm_sample runs/digits/checkpoint.pt --labels 0 1 2 --n 8 --out samples.png --each samples/
# ```
#
# `--epochs` sets the length in passes over the training split instead of steps. `--wandb` logs the loss,
# learning rate, held-out loss, the sample grids and, at the end, the checkpoint as an artifact; without
# W&B credentials it writes an offline run under the run directory (`wandb sync` uploads it later), and it
# never asks for a key. `minddpm_sample` takes a checkpoint or an exported model, and refuses a missing or
# corrupt file, a label the model does not know and an image size its UNet cannot take, saying what would
# work. Both are built, with the checks that keep a typo from costing a run, on the [Commands](cli.ipynb) page.
