# %%
#| default_exp run

# %% [markdown]
# # The run
# > A training run's config, with commented defaults and named presets, and the state it carries from step to step

# %%
#| export
from __future__ import annotations
import dataclasses, math, warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from minddpm.data import get_datasets
from minddpm.device import resolve_precision
from minddpm.distributed import join, local_batch_size
from minddpm.ema import EMA
from minddpm.distill import DISTILL_OBJECTIVES, StudentDiffusion
from minddpm.dit import NETWORKS, denoiser, image_multiple
from minddpm.flow import T_SAMPLINGS, FlowMatching
from minddpm.forward import OBJECTIVES, WEIGHTINGS, Diffusion

# %%
#| hide
from fastcore.test import *
from nbdev.showdoc import show_doc
import matplotlib.pyplot as plt
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it

# %% [markdown]
# Lesson 07 trains with these. A run is defined by one dataclass (as nanoGPT's `GPTConfig`), saved in every
# checkpoint, and named presets for the machines the course runs on: `tiny` for a CPU and the bundled
# digits, `colab` for a T4 and CIFAR-10, `full` for the originals' 64×64.

# %%
#| export
@dataclass
class TrainConfig:
    "Everything a training run depends on; saved in every checkpoint."
    dataset: str = 'digits'      # a name in `DATASETS`, or a folder with one sub-folder of images per class
    img_size: int = 16           # images are resized to img_size × img_size
    hflip: bool = False          # random horizontal flips of training images (for photos, not digits)
    unet: str = 'tiny'           # the network, one of `NETWORKS`: UNet 'tiny' or 'seed' (lesson 03), DiT 'dit-tiny' or 'dit-colab' (lesson 15)
    schedule: str = 'linear'     # noise schedule: 'linear' or 'cosine'
    T: int = 1000                # diffusion steps
    objective: str = 'v'         # what the network predicts: 'eps', 'v' or 'x0' (lesson 02, `OBJECTIVES`); lesson 08 measured v best; or 'flow' (lesson 13, preset `flow`)
    t_sampling: str = 'uniform'  # how a flow run draws t in [0, 1]: 'uniform' or 'logit_normal' (SD3); diffusion runs draw steps uniformly
    weighting: str = 'min_snr'   # loss weighting over t: 'uniform' or 'min_snr' (min-SNR-γ, Hang et al. 2023); lesson 08 measured min-SNR far faster
    snr_gamma: float = 5.0       # min-SNR's γ
    batch_size: int = 64         # the global batch: images per optimiser step, over all processes and micro-batches
    grad_accum: int = 1          # micro-batches per optimiser step on each process (lesson 10)
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
    precision: str = 'auto'      # 'auto', 'bf16', 'fp16' or 'fp32' (lesson 00's `resolve_precision`)
    out: str = 'runs/minddpm'    # run directory: checkpoint.pt and samples/
    minutes: float | None = None # time budget: a fresh run fits its step count to it as it goes, and every run stops by it
    sample_every: int = 40       # epochs between per-class sample grids drawn with the EMA, at least `GRID_MIN_STEPS` steps apart (one more at the end); 0: none
    wandb: bool = False          # log to Weights & Biases; offline when there are no credentials
    compile: bool = False        # train through `torch.compile(model)`
    teacher: str | None = None   # distillation (lesson 14): the checkpoint or weights export whose two steps each student step learns; 'shipped': the shipped model
    calls: int | None = None     # distillation: the network calls the student samples in (its teacher walks twice as many)
    guidance: float | None = None # distillation: the guidance weight w folded into the student

    def __post_init__(self): _check_config(self)

# %%
#| export
#| hide
TRAIN_OBJECTIVES = OBJECTIVES + ('flow',)   # what a run may train: lesson 02's targets, or lesson 13's flow matching

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
    if cfg.unet not in NETWORKS: bad('unet', ' or '.join(map(repr, NETWORKS)))
    m, why = image_multiple(cfg.unet)
    if cfg.img_size % m:   # refused here, before a dataset is read or downloaded, in the network's own words
        raise ValueError(f"image size {cfg.img_size}×{cfg.img_size} does not fit the network {cfg.unet!r}: height and width must be "
                         f"multiples of {m} ({why}); valid sizes: {', '.join(str(m * k) for k in range(1, 9))}, …")
    if cfg.objective not in TRAIN_OBJECTIVES: bad('objective', ' or '.join(map(repr, TRAIN_OBJECTIVES)))
    if cfg.t_sampling not in T_SAMPLINGS: bad('t_sampling', ' or '.join(map(repr, T_SAMPLINGS)))
    if cfg.t_sampling != 'uniform' and cfg.objective != 'flow':
        raise ValueError(f"TrainConfig.t_sampling {cfg.t_sampling!r} draws a flow run's t (objective 'flow'); objective "
                         f"{cfg.objective!r} draws its steps uniformly: keep t_sampling='uniform', or train with objective='flow'")
    if cfg.weighting not in WEIGHTINGS: bad('weighting', ' or '.join(map(repr, WEIGHTINGS)))
    if not (number(cfg.snr_gamma) and cfg.snr_gamma > 0): bad('snr_gamma', 'a finite number greater than 0')
    if cfg.minutes is not None and not (number(cfg.minutes) and cfg.minutes > 0): bad('minutes', 'None or a finite number greater than 0')
    if cfg.teacher is None:
        for name in ('calls', 'guidance'):
            if getattr(cfg, name) is not None: bad(name, 'None unless a teacher is given (distillation, lesson 14)')
        return
    if not isinstance(cfg.teacher, str) or not cfg.teacher: bad('teacher', "a model file's path")
    if isinstance(cfg.calls, bool) or not isinstance(cfg.calls, int) or not 1 <= cfg.calls <= cfg.T // 2:
        bad('calls', f"a whole number from 1 to T/2 = {cfg.T // 2} (the teacher walks twice as many steps)")
    if not (number(cfg.guidance) and cfg.guidance >= 0): bad('guidance', 'a finite number of at least 0')
    if cfg.objective not in DISTILL_OBJECTIVES:
        bad('objective', f"{' or '.join(map(repr, DISTILL_OBJECTIVES))} for distillation: a network predicting ε cannot give x̂0 "
                         "at the noisiest step, where a one-call student does all its work (Salimans & Ho 2022, §4)")

# %%
#| export
DIT_DEFAULTS = dict(lr=6e-3)   # what `minddpm_train --unet dit-tiny` takes unless told: lesson 15 measured it on the digits and shapes
TRAIN_PRESETS = {
    'tiny': TrainConfig(),                                                                       # CPU: the bundled digits
    'colab': TrainConfig(dataset='cifar10', img_size=32, unet='seed', batch_size=128, steps=30_000, lr=1e-3,
                         hflip=True, ema_start=2000, val_every=2000, ckpt_every=2000,
                         objective='eps', weighting='uniform'),                                   # one T4
    'full': TrainConfig(dataset='cifar10', img_size=64, unet='seed', batch_size=64, steps=150_000, lr=5e-4,
                        hflip=True, ema_start=2000, val_every=5000, ckpt_every=5000,
                        objective='eps', weighting='uniform'),                                    # the originals' 64×64
    'flow': TrainConfig(objective='flow', t_sampling='logit_normal', weighting='uniform'),      # CPU: tiny, flow matching (lesson 13)
    'dit': TrainConfig(unet='dit-tiny', **DIT_DEFAULTS),                                         # CPU: tiny, a transformer (lesson 15)
}
FLOW_DEFAULTS = dict(t_sampling='logit_normal', weighting='uniform')   # what `minddpm_train --objective flow` takes unless told

# %% [markdown]
# `tiny` predicts $v$ and weighs each image's error with min-SNR-5: lesson 08 chose both by measuring, on the
# digits and on image folders the course never saw. `colab` and `full` keep the originals' ε with uniform
# weights, as CIFAR-10 was not measured here. `tiny` runs 4,000 steps in about 8 minutes on two CPU cores; on
# an H200, `colab` ran 16 steps/s in bf16 (31 minutes), and a T4 is estimated at about 40 minutes
# (1.2 TFLOP a step, counted with `torch.utils.flop_counter`, at a quarter of its 65 TFLOP/s fp16 peak).
# `flow` is `tiny` trained with flow matching (lesson 13) as SD3 trains: t drawn logit-normally, uniform weights,
# the pair that scored best of four on the digits and on a folder of coloured shapes (lesson 13 gives the figures).
# `dit` is `tiny` with lesson 15's transformer in place of the UNet, at the learning rate that scored best of four for it
# on the same two data sets; `minddpm_train --unet dit-tiny` takes that rate too, unless `--lr` is given.
# Each preset's learning rate follows OneCycleLR: a warm-up over 30 % of the run to `lr`, then a cosine
# down to 1/25 × 1/10⁴ of it.

# %%
fig, ax = plt.subplots(figsize=(5, 2))
for name, cfg in TRAIN_PRESETS.items():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps)
    lrs = []
    for _ in range(cfg.steps): lrs.append(sched.get_last_lr()[0]); opt.step(); sched.step()
    ax.plot([i / cfg.steps for i in range(cfg.steps)], lrs, label=f"{name}: {cfg.steps:,} steps")
ax.set(xlabel='share of the run', ylabel='learning rate'); ax.legend(fontsize=8);

# %% [markdown]
# A `Run` holds everything that changes during training, so that a checkpoint can hold it all: the data
# loaders (a held-out split for validation), the diffusion, the model and its EMA, AdamW, the OneCycle
# schedule, a gradient scaler (used in fp16) and the step. A folder of a few dozen images holds fewer than
# one batch: then every step takes the whole training split (under `torchrun`, the largest share of it that
# splits evenly over the processes), and the run says so once.

# %%
#| hide
test_fail(lambda: TrainConfig(lr=float('nan')), contains='TrainConfig.lr must be a finite number greater than 0, got nan')

# %%
#| export
def noising_process(cfg: TrainConfig, # the run's config: its objective, schedule, T and t sampling
                    ) -> Diffusion | FlowMatching:
    """What `cfg` trains on: a `Diffusion` with its schedule and objective, for the objective 'flow' a `FlowMatching` path
    (lesson 13), or for a distilled student a `StudentDiffusion` with its calls and guidance (lesson 14)."""
    if cfg.objective == 'flow': return FlowMatching(cfg.t_sampling, cfg.T)
    if cfg.calls is not None: return StudentDiffusion(cfg.schedule, cfg.T, cfg.objective, cfg.calls, cfg.guidance)
    return Diffusion(cfg.schedule, cfg.T, objective=cfg.objective)

# %%
#| export
#| hide
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


# %%
show_doc(small_batch)

# %%
#| export
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
        self.diffusion = noising_process(cfg).to(self.device)
        self.model = denoiser(cfg.unet, len(classes), c).to(self.device)
        self.teacher = None
        if cfg.teacher is not None:   # distillation (lesson 14): the student starts as its teacher, which gives its targets
            from minddpm.distill import load_teacher
            self.teacher = load_teacher(cfg, self.device)
            self.model.load_state_dict(self.teacher.net.state_dict())
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
