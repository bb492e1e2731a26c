# %%
#| default_exp training

# %% [markdown]
# # Training
# > A training step in ten lines, then the run that makes it last: a config, one step with every target and weighting, validation, a loop that yields each step, checkpoints that resume exactly, and a trained model in one small file

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/07_training.ipynb)
# On a free Colab T4 its one GPU cell takes about 7 minutes: an estimate from its 2.4 PFLOP at a quarter of the T4's fp16 peak, plus the overheads measured on an H200 (see "On a GPU"). Without a GPU it ran top to bottom in about a minute on a 2-core CPU (measured: 63 s).

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
import contextlib, math, os, socket, time, urllib.parse, warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minddpm.device import autocast
from minddpm.run import TRAIN_PRESETS, Run, TrainConfig
from minddpm.sampling import sample

# %%
#| export
#| hide
# the loop's bookkeeping, and the names a run's pages define, importable from here as before they had pages
from minddpm.args import writable_dir
from minddpm.budget import GRID_MIN_STEPS, TimeBudget, grid_every
from minddpm.checkpoint import RESUME_CHANGES, load_checkpoint, resume, save_checkpoint, saved_config, set_steps
from minddpm.conditioning import NULL_LABEL
from minddpm.device import resolve_precision
from minddpm.distributed import rank_failure, rank_positions, step_draws
from minddpm.run import small_batch
from minddpm.trained import EXPORT_FORMATS, GRAPH_SUFFIXES, ExportedNetwork, OnnxNetwork, Trained, export_model, load_model

# %%
#| hide
from fastcore.test import *
from minddpm.exercises import check   # the exercises at the end
from nbdev.showdoc import show_doc
from IPython.display import Image
import matplotlib.pyplot as plt
from minddpm.device import pick_device, pick_preset

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # 'colab' sizes on a CUDA GPU, 'tiny' elsewhere

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)              # the same pictures on every run

# %%
import dataclasses, itertools, tempfile
import torch.nn.functional as F
from minddpm.data import get_dataloaders, show_images          # lesson 00
from minddpm.forward import Diffusion                          # lesson 02
from minddpm.unet import unet_preset                           # lesson 03
from minddpm.conditioning import NULL_LABEL, ConditionalUNet   # lesson 04

# %% [markdown]
# Everything the earlier lessons built comes together here. One training step:
#
# 1. take a batch of images $x_0$ and labels $y$; drop each label with probability 0.1 (lesson 04);
# 2. draw a timestep per image, uniformly over **all** of $\{0, \dots, T-1\}$, and noise it (lesson 02);
# 3. predict the target ($\varepsilon$, $v$ or $x_0$, lesson 02) and take the mean squared error;
# 4. step the optimiser;
# 5. fold the new weights into the EMA (lesson 06).
#
# ## A training step in ten lines
#
# Before any of the machinery, the algorithm itself, on the bundled digits: a tiny conditional UNet
# predicting $v$, AdamW, 150 steps.

# %%
train_dl, _ = get_dataloaders('digits', size=16, batch_size=64)
diffusion = Diffusion('linear', 1000, objective='v')
model = ConditionalUNet(10, **unet_preset('tiny', in_channels=1))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
losses = []
for x0, y in itertools.islice(itertools.cycle(train_dl), 150):     # 1. a batch of images and labels
    y = torch.where(torch.rand(len(y)) < 0.1, NULL_LABEL, y)          #    10 % of the labels dropped
    t = diffusion.sample_timesteps(len(x0))                           # 2. a timestep per image, all of 0…T−1,
    xt, eps = diffusion.add_noise(x0, t)                              #    and x_t in closed form
    loss = F.mse_loss(model(xt, t, y), diffusion.target(x0, eps, t))  # 3. regress the target
    opt.zero_grad(); loss.backward(); opt.step()                      # 4. step (5, the EMA, comes with the run)
    losses.append(loss.item())
plt.figure(figsize=(5, 2.2)); plt.plot(losses, lw=.8); plt.xlabel('step'); plt.ylabel('v-loss');

# %% [markdown]
# The loss falls fast from the target's mean square (an untrained network outputs about 0) and stays
# noisy: each step sees a different mix of timesteps, some far easier to predict than others.
# That loop trains a model. What it lacks is everything that makes a run *last*: the same result when it
# is stopped and resumed, a held-out score, a learning-rate schedule, an EMA, mixed precision on a GPU,
# pictures as it goes, a time budget. The rest of the lesson adds them, one at a time.
#
# ## The run and its step
#
# A run is defined by one dataclass with commented defaults, `TrainConfig`, saved in every checkpoint, and
# named presets for the machines the course runs on: `tiny` for a CPU, `colab` for a T4, `full` for the
# originals' 64×64. A `Run` holds everything that changes during training, so that a checkpoint can hold it
# all: the data loaders (with a held-out split), the diffusion, the model and its EMA, AdamW with a OneCycle
# learning-rate schedule, a gradient scaler for fp16, and the step. Both are plumbing, built on their own
# page, [The run](run.ipynb). The config's fields, with the `tiny` preset's values as defaults:

# %%
show_doc(TrainConfig)


# %%
#| export
#| hide
def step_inputs(run: Run,        # the run: its seed, step, batch size, device and label-drop rate
                x: torch.Tensor, # the batch's images (batch_size, C, H, W) in [-1, 1], on any device
                y: torch.Tensor, # their labels (batch_size,)
                ) -> tuple:      # x0, y, t, ε on the run's device
    """This step's images, labels, timesteps and noise on the run's device, with labels dropped and images flipped. The
    draws follow from (seed, step, position in the global batch) alone (`step_draws`, lesson 10), so a resumed run, or one
    split over processes, draws the same. Raises `ValueError` for a batch of the wrong size."""
    cfg, K = run.cfg, run.cfg.grad_accum
    if len(x) != K * run.micro_batch:
        raise ValueError(f"this process takes {K * run.micro_batch} images per step (batch_size {cfg.batch_size} over "
                         f"{run.place.world_size} process(es)), got {len(x)}")
    x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
    # t from the noising process's own draw: uniform steps, a flow run's continuous t (lesson 13), a student's own steps (lesson 14)
    d = step_draws(cfg.seed, run.step, cfg.batch_size, rank_positions(run.place, cfg.batch_size), x.shape[1:], run.diffusion.T,
                   cfg.p_uncond, run.generator, run.diffusion.sample_timesteps)
    if cfg.hflip: x = torch.where(d.flip[:, None, None, None], x.flip(-1), x)
    return x, torch.where(d.drop, NULL_LABEL, y), d.t, d.eps

# %%
show_doc(step_inputs)

# %% [markdown]
# The step is the ten-line loop's body with four additions: each image's error is weighted by its
# timestep (`cfg.weighting`, lesson 02's min-SNR-γ), the forward pass runs under autocast (lesson 00: bf16 on a
# GPU that has it, fp16 with a gradient scaler on one that does not, fp32 on a CPU), the gradient norm is
# clipped at 1, and the EMA follows the weights. `step_inputs` moves the batch to the run's device and draws
# its label drops, timesteps and noise from a generator seeded by the run's seed and the step, so step 2,001
# draws the same after a resume as in one go. `run.forward` is the model itself, or its compiled self with
# `compile=True`. The backward pass runs over one batch, or, with `grad_accum` > 1, over several smaller ones
# whose gradients add up before the step (lesson 10): `_backward` below, which is a single `backward()` when
# `grad_accum` is 1 and one process trains.

# %%
#| exports
def _backward(run: Run, loss_fn, *batch) -> float:
    """Backpropagate `loss_fn(run, *micro_batch)` over `cfg.grad_accum` micro-batches of `batch`; the mean loss of the global
    batch, the same on every process (under DDP the gradients are all-reduced once, on the last micro-batch: lesson 10)."""
    K = run.cfg.grad_accum
    total = torch.zeros((), device=run.device)
    for k, micro in enumerate(zip(*(v.chunk(K) for v in batch))):
        sync = k == K - 1 or run.ddp is None
        with contextlib.nullcontext() if sync else run.ddp.no_sync():
            loss = loss_fn(run, *micro)
            run.scaler.scale(loss / K).backward()
        total += loss.detach()
    return run.place.mean(total / K).item()

# %%
#| exports
def weighted_loss(run: Run,        # gives the network, the diffusion, the weighting and the precision
                  x0: torch.Tensor, # (B, C, H, W) clean images in [-1, 1]
                  y: torch.Tensor,  # (B,) labels, some already `NULL_LABEL`
                  t: torch.Tensor,  # (B,) timesteps in {0, …, T−1}, or a flow run's times in [0, 1]
                  eps: torch.Tensor, # (B, C, H, W) the noise
                  ) -> torch.Tensor: # scalar: the batch's mean weighted MSE
    "The loss of one (micro-)batch: each image's MSE on the run's target, times its timestep's weight (DDPM's L_simple for ε, uniform)."
    with autocast(run.device, run.dtype):
        xt = run.diffusion.add_noise(x0, t, eps)[0]
        out = run.forward(xt, run.diffusion.network_time(t), y).float()               # the prediction, in fp32
    target = run.diffusion.target(x0, eps, t) if run.teacher is None else run.teacher(xt, t, y)   # a student's: lesson 14
    err = (out - target).square().flatten(1).mean(1)                                  # (B,) each image's MSE
    return (run.diffusion.loss_weights(t, run.cfg.weighting, run.cfg.snr_gamma) * err).mean()

def train_step(run: Run,        # the run to advance: its weights, EMA, optimiser, schedule and step change in place
               x: torch.Tensor, # a batch of images (batch_size, C, H, W) in [-1, 1]
               y: torch.Tensor, # their class labels (batch_size,); a share `cfg.p_uncond` of them is dropped
               ) -> float:      # the batch's loss
    "One optimiser step. Raises `FloatingPointError` on a non-finite loss, before the weights change."
    return fit_step(run, *step_inputs(run, x, y))   # to the device, with seeded label drops, timesteps and noise

def fit_step(run: Run,          # the run to advance, as `train_step`
             x0: torch.Tensor,  # (B, C, H, W) clean images in [-1, 1], on the run's device
             y: torch.Tensor,   # (B,) their labels, some `NULL_LABEL`
             t: torch.Tensor,   # (B,) their timesteps (a flow run's times in [0, 1])
             eps: torch.Tensor, # (B, C, H, W) their noise
             ) -> float:        # the batch's loss
    "`train_step` given its inputs (as `weighted_loss` takes them, on the run's device): reflow (lesson 13) brings its own pairs."
    run.model.train()
    run.opt.zero_grad(set_to_none=True)
    loss = _backward(run, weighted_loss, x0, y, t, eps)
    if not math.isfinite(loss): raise FloatingPointError(f"the loss became {loss} in step {run.step + 1}")
    run.scaler.unscale_(run.opt)                    # fp16: gradients back to their true scale before clipping
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.scaler.step(run.opt); run.scaler.update(); run.sched.step()
    run.ema.update(run.model)
    run.step += 1
    return loss

# %% [markdown]
# What one step of a fresh run sees:

# %%
run = Run(dataclasses.replace(TRAIN_PRESETS['tiny'], out=tempfile.mkdtemp()))
xb, yb = next(iter(run.train_dl))
x0, y, t, eps = step_inputs(run, xb, yb)
xt = run.diffusion.add_noise(x0, t, eps)[0]
i = t.argsort()[::8]                                   # 8 of the 64, from the smallest t to the largest
x0, y, t, xt = x0[i], y[i], t[i], xt[i]
names = ['∅' if int(l) == NULL_LABEL else str(int(l)) for l in y[:8]] + [f't={int(s)}' for s in t[:8]]
show_images(torch.cat([x0[:8], xt[:8]]), names, ncols=8)

# %% [markdown]
# Above, eight of the batch's clean images with their labels (∅: dropped, so that the network also learns to
# denoise without one), below them what the network gets: $x_t$ at the drawn $t$, from the smallest to the
# largest.
#
# Validation scores the EMA weights on the held-out split with fixed timesteps and noise, so two calls see
# the same, and it reads $\hat\varepsilon$ back from whatever the network predicts: runs with different
# targets are compared on one scale.

# %%
#| exports
@torch.no_grad()
def validate(run: Run,       # gives the held-out split, the diffusion, the device and the precision
             model=None,     # the network to score; None: the run's EMA model
             seed: int = 0,  # seeds the timesteps and the noise: every call sees the same
             ) -> float:
    "Mean ε-MSE over the whole held-out split (a true mean over images), with fixed timesteps and noise, whatever the target."
    model = run.ema.model if model is None else model
    was_training = model.training
    model.eval()                                  # scored as it samples; its mode is given back at the end
    g = torch.Generator(device=run.device).manual_seed(seed)
    total, n = 0.0, 0
    for x, y in run.val_dl:
        x, y = x.to(run.device), y.to(run.device)
        t = run.diffusion.sample_timesteps(len(x), generator=g)      # steps, or a flow's times in [0, 1]
        xt, eps = run.diffusion.add_noise(x, t, torch.randn(x.shape, device=run.device, generator=g))
        with autocast(run.device, run.dtype):
            out = model(xt, run.diffusion.network_time(t), y).float()
        total += F.mse_loss(run.diffusion.predictions(xt, t, out)[0], eps, reduction='sum').item()
        n += eps.numel()
    model.train(was_training)
    return total / n

# %% [markdown]
# **Mixed precision that is really on.** The originals (the code of W&B's conditional-diffusion article,
# dome272/Diffusion-Models-pytorch) write `with torch.autocast("cuda") and (...):`.
# Python's `and` returns its second operand, so only the second context manager is entered: autocast never
# runs, and their gradient scaler scales float32 gradients for nothing. Here autocast has its own `with`:

# %%
with autocast(torch.device('cpu'), torch.bfloat16): print('in its own with, autocast is on: ', torch.is_autocast_enabled('cpu'))
originals_and = torch.autocast('cpu', dtype=torch.bfloat16) and contextlib.nullcontext()  # the originals' `and`
with originals_and: print("after the originals' `and`, it is on:", torch.is_autocast_enabled('cpu'))

# %% [markdown]
# ## The loop
#
# The loop itself is short, and it knows nothing of progress bars, checkpoints or pictures: like
# [smalldiffusion](https://github.com/yuanchenyang/smalldiffusion)'s `training_loop`, it yields after every step, and whoever iterates it decides what to
# do with the step. Each epoch's data order comes from a generator seeded with `seed + epoch`, so a resumed
# run picks up mid-epoch with the batch it would have taken.

# %%
#| export
#| hide
def _batches(run: Run):
    "The training batches from the run's current step on, epoch after epoch, each epoch in a seeded order."
    epoch, skip = divmod(run.step, len(run.train_dl))
    while True:
        run.train_dl.sampler.set_epoch(epoch)   # the permutation of epoch e is seeded by seed + e, on every rank
        for i, batch in enumerate(run.train_dl):
            if i >= skip: yield batch
        epoch, skip = epoch + 1, 0

_clock = time.monotonic   # seconds; the loop's one clock (tests replace it with a simulated one)

# %%
#| exports
@dataclass(frozen=True)
class TrainStep:
    "What `train_steps` yields after each optimiser step."
    loss: float     # the batch's loss, on the run's target and weighting
    lr: float       # the learning rate the step took
    seconds: float  # how long the step took, loading its batch included

def train_steps(run: Run,                 # the run to advance
                until: int | None = None, # stop at this step; None: at `run.cfg.steps` (read at every step: a time budget changes it)
                ):
    "Train `run` step by step, yielding a `TrainStep` after each."
    batches = _batches(run)
    while run.step < min(until or run.cfg.steps, run.cfg.steps):
        t0, lr = _clock(), run.sched.get_last_lr()[0]   # the learning rate this step takes
        loss = train_step(run, *next(batches))
        yield TrainStep(loss, lr, _clock() - t0)

# %% [markdown]
# Iterating it is training. The tiny preset, shortened to 150 steps with the EMA averaging from step 50 on
# (the preset starts it at 200), and the validation score of the EMA every 25 steps:

# %%
run = Run(dataclasses.replace(TRAIN_PRESETS['tiny'], steps=150, ema_start=50, out=tempfile.mkdtemp()))
curve, lrs, held_out = [], [], []
for s in train_steps(run):
    curve.append(s.loss); lrs.append(s.lr)
    if run.step % 25 == 0: held_out.append((run.step, validate(run)))
fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(9, 2.2), gridspec_kw=dict(width_ratios=(2, 1)))
ax.plot(range(1, 151), curve, lw=.8, label='training loss (v, min-SNR-5)')
ax.plot(*zip(*held_out), 'o-', label='held-out ε-MSE of the EMA'); ax.set_xlabel('step'); ax.legend(fontsize=8)
ax_lr.plot(range(1, 151), lrs); ax_lr.set(xlabel='step', title='learning rate (OneCycle)');

# %% [markdown]
# The learning rate (right) warms up for 30 % of the run, peaks at `lr` and anneals to almost nothing: the
# OneCycle schedule the originals use, fitted to the run's length. The training loss is on the run's own target,
# weighted with min-SNR-5 (lesson 02), which is one reason it sits below the first plot's; the held-out ε-MSE is one yardstick for every target. Until `ema_start` the EMA is a
# copy of the weights; from then on it averages them (with β = 0.995, over roughly the last 200 steps), so
# early on it carries weights from a worse moment and improves slowly; later in a run it averages out their
# noise (lesson 08 measures what it buys). It is what the samplers draw with.
#
# `train` is that loop with the bookkeeping around it, each concern a few lines: a progress bar with the
# loss, learning rate and held-out score; validation every `val_every` steps; a checkpoint every
# `ckpt_every` (and at the end); a sample grid every `sample_every` epochs (at least 500 steps apart, and at
# the end), one row per class from the EMA weights with a fixed seed so that the grids of a run compare;
# optional Weights & Biases logging; and a time budget (`minutes`), for which it times the first steps and
# every event, fits the step count (and so the OneCycle schedule) to the budget, and refits as the machine
# speeds up or slows down ([Time budget](budget.ipynb)). Under `torchrun` (lesson 10) every process runs
# the same loop, and only the first one writes, draws and logs.

# %%
#| export
#| hide
def save_samples(run: Run,         # its EMA model, diffusion, classes, image shape and step are used
                 path,             # the PNG to write; missing folders are made
                 n: int = 8,       # samples per class: the columns of the grid
                 steps: int | None = None, # DDIM steps (a flow run's: Euler steps); None: 50, or a student's calls (lesson 14)
                 w: float | None = None,   # guidance weight: 0 unconditional, 1 conditional, >1 guided; None: 3, or a student's
                 seed: int = 0,    # seeds the sampler's own generator (training's RNG is untouched)
                 ) -> Path:
    "Draw `n` samples of every class with the EMA weights (DDIM, or Euler for a flow run; fixed seed) and save them as a grid, one row per class."
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid
    y = torch.arange(len(run.classes)).repeat_interleave(n)
    g = torch.Generator(run.device).manual_seed(seed)
    x = sample(run.ema.model, run.diffusion, y, shape=run.shape, steps=steps, w=w, generator=g, uint8=True)
    grid = make_grid(x.cpu(), nrow=n, padding=1, pad_value=128).permute(1, 2, 0).numpy()  # matplotlib takes arrays
    h = run.shape[1] + 1
    fig, ax = plt.subplots(figsize=(0.5 + n * 0.45, 0.4 + len(run.classes) * 0.45))
    ax.imshow(grid, interpolation='nearest')
    ax.set(xticks=[], yticks=[h * (i + .5) for i in range(len(run.classes))], yticklabels=run.classes)
    calls, folded = getattr(run.diffusion, 'calls', None), getattr(run.diffusion, 'guidance', None)   # a student's (lesson 14)
    steps, w = steps or calls or 50, folded if w is None and folded is not None else 3.0 if w is None else w
    ax.set_title(f'step {run.step}, EMA, {"Euler" if run.diffusion.objective == "flow" else "DDIM"} {steps}, w={w:g}', fontsize=8); ax.tick_params(labelsize=7, length=0)
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches='tight'); plt.close(fig)
    return path

def _reachable(url: str, seconds: float = 5.0) -> bool:
    "Can a TCP connection to `url`'s host be opened within `seconds`?"
    u = urllib.parse.urlsplit(url)
    try: socket.create_connection((u.hostname, u.port or (443 if u.scheme == 'https' else 80)), timeout=seconds).close()
    except (OSError, ValueError): return False
    return True

class _Wandb:
    """Weights & Biases logging: online with credentials and a route to the server, else offline (never a prompt). With
    credentials and no route (a cluster node, a laptop on a plane), wandb would wait minutes and raise; this says so in a
    line and logs offline, for `wandb sync` later."""
    def __init__(self, run: Run):
        try: import wandb
        except ImportError: raise RuntimeError('W&B logging needs wandb: pip install "minddpm[wandb]"') from None
        mode = os.environ.get('WANDB_MODE') or ('online' if wandb.login(prompt=False, verify=False) else 'offline')
        server = os.environ.get('WANDB_BASE_URL', 'https://api.wandb.ai')
        proxied = any(os.environ.get(k) for k in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy'))
        if mode == 'online' and not proxied and not _reachable(server):   # through a proxy, wandb knows the way
            warnings.warn(f"W&B credentials found, but {server} cannot be reached: logging offline to {run.cfg.out}/wandb "
                          f"(`wandb sync` uploads it later; WANDB_MODE=offline skips this check)")
            mode = 'offline'
        Path(run.cfg.out).mkdir(parents=True, exist_ok=True)
        self.wandb, self.run = wandb, wandb.init(project='minddpm', config=asdict(run.cfg), dir=run.cfg.out, mode=mode)
    def log(self, step, **values): self.run.log({k: v for k, v in values.items() if v is not None}, step=step)
    def image(self, step, name, path): self.run.log({name: self.wandb.Image(str(path))}, step=step)
    def finish(self, ckpt: Path):
        art = self.wandb.Artifact(f'minddpm-{self.run.id}', type='model'); art.add_file(str(ckpt))
        self.run.log_artifact(art); self.run.finish()

def _kept(run: Run) -> str:
    "Which checkpoint a failed run leaves, for its error message."
    return (f"the last checkpoint, {run.checkpoint[0]} at step {run.checkpoint[1]}, is kept" if run.checkpoint else
            f"no checkpoint was written: the first was due at step {run.cfg.ckpt_every}")

@contextlib.contextmanager
def _kept_on_failure(run: Run, bar):
    "Re-raise a non-finite loss, or a lost process under `torchrun` (lesson 10), saying which checkpoint is kept."
    try: yield
    except FloatingPointError as e:
        bar.close()
        raise FloatingPointError(f"{e}; {_kept(run)}. A lower learning rate than lr={run.cfg.lr:g} often helps") from None
    except RuntimeError as e:
        if not run.place.parallel: raise
        bar.close()
        raise rank_failure(run.place, run.step, e, _kept(run)) from e

def _save(run: Run, path: Path):
    "Checkpoint the run (rank 0 writes; every rank waits for it, so none runs ahead of a checkpoint being written)."
    if run.place.main: save_checkpoint(run, path)
    else: run.checkpoint = (path, run.step)
    run.place.barrier()

# %%
show_doc(save_samples)

# %%
#| exports
def train(cfg: TrainConfig | None = None, # config of a fresh run; None: `TrainConfig()`; unused when `run` is given
          run: Run | None = None,          # a run to continue (e.g. from `resume`); None: a new `Run(cfg)`
          progress: bool = True,           # show a progress bar with the step, loss, learning rate and held-out ε-MSE
          until: int | None = None,        # stop at this step, with a checkpoint, before `cfg.steps`; None: to the end
          calibrate: int = 20,             # with `cfg.minutes`: the steps timed before the step count is first fitted
          ) -> Run:
    """Train a fresh run (`cfg`) or continue one (`run`) to `cfg.steps`, or to step `until`. With `cfg.minutes` it stops
    when the budget is spent (then `run.step < run.cfg.steps`). Raises `FloatingPointError` on a non-finite loss, naming
    the checkpoint kept. Under `torchrun` every process calls it, and rank 0 alone writes, draws and logs (lesson 10)."""
    run = run or Run(cfg or TrainConfig())
    cfg, out, main = run.cfg, writable_dir(run.cfg.out), run.place.main
    ckpt, per_epoch = out/'checkpoint.pt', len(run.train_dl)
    budget = TimeBudget(run, cfg.minutes * 60, calibrate, clock=_clock) if cfg.minutes is not None else None
    timed = budget.timed if budget else lambda kind, fn, *a, **k: fn(*a, **k)
    log = _Wandb(run) if cfg.wandb and main else None
    bar = tqdm(total=cfg.steps, initial=run.step, disable=not (progress and main), desc='train')
    with _kept_on_failure(run, bar):
        for s in train_steps(run, until):
            if budget: budget.step_s.append(s.seconds)
            last = run.step == run.cfg.steps
            first = budget is not None and budget.first_fit()   # time a validation and a checkpoint, then fit the run
            val = timed('val', validate, run) if run.step % cfg.val_every == 0 or last or first else None
            run.history.append((run.step, s.loss, s.lr, val))
            if log: log.log(run.step, loss=s.loss, lr=s.lr, val_loss=val)
            bar.update(1); bar.set_postfix(loss=f'{s.loss:.4f}', lr=f'{s.lr:.2e}', **({'val_eps': f'{val:.4f}'} if val else {}))
            out_of_time = budget is not None and budget.spent()
            if cfg.sample_every and (run.step % grid_every(cfg, per_epoch) == 0 or last) and not out_of_time and main:
                grid = timed('grid', save_samples, run, out/'samples'/f'step_{run.step:06d}.png')
                if log: log.image(run.step, 'samples', grid)
            if run.step % cfg.ckpt_every == 0 or run.step == until or last or out_of_time or first: timed('ckpt', _save, run, ckpt)
            if out_of_time: break
            if budget and (steps := budget.refit(first, last)):
                set_steps(run, steps); bar.total = steps; bar.refresh()
    bar.close()
    if log: log.finish(ckpt)
    return run

# %% [markdown]
# A short run of the tiny preset on the bundled digits, with its grid drawn at the end, one row per class:
# after 120 steps, blobs with a hint of their class. The 4,000-step run that made the shipped model
# (`load_model()`) drew the same grids, with digits in every row from about step 1,000 on.

# %%
out = Path(tempfile.mkdtemp())
run = train(dataclasses.replace(TRAIN_PRESETS['tiny'], steps=120, val_every=40, ckpt_every=100, out=str(out)), progress=False)
Image(out/'samples'/'step_000120.png', width=260)

# %% [markdown]
# **A NaN stops the run, and the last good checkpoint stays.** The loss is checked before the optimiser
# step, so a bad batch never reaches the weights or the checkpoint:

# %%
nan_run = train(dataclasses.replace(TRAIN_PRESETS['tiny'], steps=12, batch_size=8, ckpt_every=5, val_every=100,
                                    sample_every=0, out=str(out/'nan')), progress=False, until=5)
with torch.no_grad(): next(nan_run.model.parameters()).fill_(float('nan'))   # something goes badly wrong
try: train(run=nan_run, progress=False)
except FloatingPointError as e: print(e)

# %%
#| hide
test_fail(lambda: train(run=nan_run, progress=False), contains='the loss became nan in step 6; the last checkpoint, ')
test_eq(load_checkpoint(out/'nan'/'checkpoint.pt')['step'], 5)

# %% [markdown]
# ### On a GPU
#
# The same `train` on CUDA runs in bf16 (fp16 with a scaler on a T4), with channels_last weights, and can
# compile the model. The cell below trains the `colab` preset's UNet (15.7 M parameters) on the bundled
# digits at 32×32, compiled. On an H200 it took 4½ minutes (measured: compilation, validation and eight
# sample grids included; it now draws four, at least 500 steps apart) and drew clean digits of every class. On a
# T4 expect about 7 minutes (an estimate: the 2,000 steps are 2.4 PFLOP, 2½ minutes at 16 TFLOP/s, plus at most
# the H200's 4½ minutes of compilation, grids and Python).
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
# ## Checkpoints that resume exactly
#
# A checkpoint is one file with every state of the run, written to a temporary file and renamed over the
# old one, so a run killed while saving leaves the previous checkpoint intact; `resume` rebuilds the run from
# it (the code, and what a checkpoint holds, are on the [Checkpoints](checkpoint.ipynb) page). No random
# generator's state is saved: each step's draws follow from `(seed, step)`, and each epoch's order from
# `seed + epoch`. So a run stopped at step 20 and resumed takes the very losses of one that never stopped:

# %%
cfg = dataclasses.replace(TRAIN_PRESETS['tiny'], steps=30, batch_size=16, val_every=1000, ckpt_every=1000, sample_every=0, out=str(out/'a'))
straight = train(cfg, progress=False)
train(dataclasses.replace(cfg, out=str(out/'b')), progress=False, until=20)
resumed = train(run=resume(out/'b'/'checkpoint.pt'), progress=False)
plt.figure(figsize=(5, 2)); plt.plot(range(1, 31), [h[1] for h in straight.history], lw=3, alpha=.4, label='in one go')
plt.plot(range(21, 31), [h[1] for h in resumed.history][20:], 'k.', label='resumed at step 20'); plt.xlabel('step'); plt.ylabel('loss')
plt.legend(fontsize=8);

# %%
#| hide
test_eq([h[1] for h in resumed.history], [h[1] for h in straight.history])

# %% [markdown]
# ## A trained model in one small file
#
# Half of a checkpoint is the optimiser's two moment estimates per weight, which only training needs. To *use* a model,
# `export_model` keeps the weights (EMA and raw, in half precision), the config and the class names, and
# `load_model` reads either kind of file into a network ready to sample; a path ending in `.pt2` or `.onnx`
# exports the EMA network alone, in fp32, as a graph that runs without minddpm's model code
# ([Trained models](trained.ipynb)).
# `load_model()` with no path gives the tiny digits model shipped inside minddpm, trained by the first
# command below, which lessons 02 to 05 used.

# %%
files = {'checkpoint': out/'checkpoint.pt', 'weights (fp16)': export_model(run, out/'tiny.pt'),
         'torch.export (fp32)': export_model(run, out/'tiny.pt2')}
plt.figure(figsize=(5, 1.4)); plt.barh(list(files), [p.stat().st_size / 1e6 for p in files.values()]); plt.xlabel('MB');

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
# work. The [Commands](cli.ipynb) page builds both. `minddpm_sample` with `--n 10` on the shipped model, which
# the first command made, draws these:
#
# ![ten guided samples of each digit from the shipped tiny model](images/digits_tiny_samples.png)

# %% [markdown]
# ## Exercises
#
# Write each function in place of its `...` and run its cell: `check` prints ✓, or where your answer differs and a hint
# ([how the checks work](exercises.ipynb)). Keep the stub's parameter names (`check` passes its inputs by name) and
# return the inputs' dtype unless the stub asks for another. Solutions: `tests/solutions/` in the course's repository.
#
# 1. **The weighted loss.** Given the network's outputs `pred` and the targets (B, C, H, W) and one weight per image
#    (B,), return the loss a training step minimises, a number (a 0-dimensional tensor).

# %%
def weighted_mse(pred, target, weights):   # (B, C, H, W), (B, C, H, W), (B,)
    ...                                     # return a 0-d tensor

check(weighted_mse)

# %% [markdown]
# 2. **min-SNR weights for v.** Given the SNR of each image's timestep (B,) and γ, return the weights (B,) a
#    v-predicting run multiplies each image's v error by. Then plot them against log SNR for γ = 5, beside the same
#    weights for ε (min(SNR, γ)/SNR): which timesteps does each recipe stop caring about?

# %%
def min_snr_v_weights(snr, gamma):   # (B,) SNR, γ > 0
    ...                               # return (B,) weights

check(min_snr_v_weights)
