# %% [markdown]
# # CIFAR-10 on a free GPU
# > The capstone: conditional CIFAR-10 at 32×32 with nothing but the package, checkpoints that outlive a Colab disconnect, optional W&B, a grid per class, guided-sample accuracy from a classifier trained here, and Inception FID

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/16_cifar10.ipynb)
# On a free Colab T4 its GPU cells take about 50 minutes: an estimate from their floating-point work at a quarter of the T4's fp16 peak (37 minutes of arithmetic for training, about 40 with the overheads lesson 07 measured, then 7 minutes of sampling and 3 of Inception features; see "How long, and how much memory"). Without a GPU its dress rehearsal ran top to bottom in 22 seconds on a 2-core CPU (measured).

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
#| hide
import dataclasses, tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import Image
from matplotlib.colors import hsv_to_rgb
from PIL import Image as PILImage

from torch.utils.flop_counter import FlopCounterMode

from minddpm.conditioning import ConditionalUNet
from minddpm.data import get_datasets, pick_device, pick_preset, show_images, to_uint8, to_unit_range
from minddpm.metrics import evaluate, frechet_distance, inception_features, real_floor, train_judge
from minddpm.sampling import sample
from minddpm.training import TRAIN_PRESETS, TrainConfig, Run, autocast, resume, save_samples, train
from minddpm.unet import unet_preset

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)              # the same pictures on every run

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # 'colab' sizes on a CUDA GPU, 'tiny' elsewhere

# %% [markdown]
# Everything so far ran on 16×16 digits that a CPU can learn in minutes. This lesson trains the same
# conditional DDPM on CIFAR-10, the data set of the DDPM paper: 50,000 colour photographs at 32×32 in
# ten classes. It uses only what `pip install minddpm` gives you, and it is written for a free Colab
# GPU (Runtime → Change runtime type → T4 GPU).
#
# A free Colab runtime is not a workstation. It disconnects after about 90 minutes without interaction
# and after at most about 12 hours in all, and its disk goes with it. So before spending 40 minutes of
# GPU time, the lesson does two things: it keeps every checkpoint where a disconnect cannot reach it,
# and it runs the whole pipeline once on a tiny stand-in, in seconds, to catch a mistake before it costs
# an hour.
#
# | step | the real run (the GPU cells) | the dress rehearsal (every machine, CI included) |
# |---|---|---|
# | data | CIFAR-10, downloaded by torchvision (170 MB) | 10 folders of synthetic 32×32 colour images, written here |
# | model | the `colab` preset: the seed UNet, batch 128, 30,000 steps, random flips | the tiny UNet, batch 16, 12 steps |
# | checkpoints | Google Drive when mounted, else `runs/` | a temporary folder, with a simulated disconnect |
# | logging | W&B when installed: online with a key, else offline | the same |
# | pictures | a grid of every class | the same (noise, after 12 steps) |
# | class accuracy | a classifier trained here on CIFAR-10 | one trained on the stand-in |
# | FID | Inception-v3 features, 10,000 samples | the classifier's features (Inception's weights are a download) |
#
# On Colab every cell runs, the rehearsal first. The GPU cells are flagged `#| cuda`, which `nbdev_test`
# skips, so CI runs the rehearsal alone.

# %% [markdown]
# ## A stand-in for CIFAR-10
#
# The rehearsal needs data with CIFAR-10's shape and no download: a folder with one sub-folder of images
# per class, which `get_datasets` (lesson 00) reads like any other. Each class gets its own hue, so that
# a classifier has something to learn.

# %%
CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']

def make_standin(root, per_class: int = 20, size: int = 32, seed: int = 0) -> Path:
    "Write `per_class` PNGs per CIFAR-10 class to `root`/<class>/: a disc of the class's hue on a random dark background."
    g, root = torch.Generator().manual_seed(seed), Path(root)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing='ij')
    for k, name in enumerate(CIFAR10_CLASSES):
        (root/name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cy, cx, r = (torch.rand(3, generator=g) * torch.tensor([size / 2, size / 2, size / 4]) + torch.tensor([size / 4, size / 4, size / 6])).tolist()
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)[..., None]
            colour = torch.tensor(hsv_to_rgb([k / 10, 0.8, 0.9]), dtype=torch.float32)
            img = torch.where(disc, colour, torch.rand(3, generator=g) * 0.3) + 0.05 * torch.randn(size, size, 3, generator=g)
            PILImage.fromarray((img.clamp(0, 1) * 255).round().byte().numpy()).save(root/name/f'{i:03d}.png')
    return root

standin = make_standin(Path(tempfile.mkdtemp())/'standin')
train_set, _ = get_datasets(str(standin), 32)
assert train_set.classes == CIFAR10_CLASSES and train_set[0][0].shape == (3, 32, 32)
first = {}                                      # two images of every class
for x, y in (train_set[i] for i in range(len(train_set))):
    if len(first.setdefault(y, [])) < 2: first[y].append(x)
show_images(torch.stack([x for y in sorted(first) for x in first[y]]), labels=[y for y in sorted(first) for _ in first[y]],
            classes=train_set.classes, ncols=10, scale=0.8)

# %% [markdown]
# ## The dress rehearsal
#
# The `colab` preset with the stand-in data, the tiny UNet and a handful of steps, through everything the
# real run does: checkpoints where a disconnect cannot reach them, W&B when it is there, and a disconnect
# half-way.
#
# ### Checkpoints that outlive the runtime
#
# On Colab, mount Google Drive (it asks for permission once) and the run directory goes there; anywhere
# else it is `runs/`. `train` writes `checkpoint.pt` every `ckpt_every` steps (2,000 in the `colab`
# preset, about 3 minutes on a T4), atomically, so a disconnect loses at most those steps and never the
# file. After reconnecting, run the notebook again from the top: `start_or_resume` finds the checkpoint
# and `resume` (lesson 07) restores the weights, the EMA, the optimiser, the learning-rate schedule and
# the random state, so the run goes on exactly as if it had never stopped.

# %%
if importlib.util.find_spec('google.colab') is not None:   # on Colab: keep runs on Google Drive
    from google.colab import drive
    drive.mount('/content/drive')

def run_dir(name: str) -> Path:
    "Where a run lives: minddpm/<name> on Google Drive when it is mounted (Colab), else runs/<name> here."
    drive = Path('/content/drive/MyDrive')
    return (drive/'minddpm' if drive.is_dir() else Path('runs'))/name

def start_or_resume(cfg: TrainConfig) -> Run:
    "The run in `cfg.out`: resumed from its checkpoint when there is one, else started fresh from `cfg`."
    ckpt = Path(cfg.out)/'checkpoint.pt'
    if not ckpt.exists(): return Run(cfg)
    run = resume(ckpt)
    print(f"resumed {ckpt} at step {run.step} of {run.cfg.steps}")
    return run

print(run_dir('cifar10'))

# %% [markdown]
# ### W&B, if you want it
#
# `TrainConfig(wandb=True)` logs the loss, learning rate, held-out loss and sample grids to Weights &
# Biases, and the final checkpoint as an artifact. With credentials (`wandb login`, or `WANDB_API_KEY`
# in Colab's secrets) the run is online; without them minddpm writes an offline run into the run
# directory, to upload later with `wandb sync`, and never stops to ask for a key. Without `wandb`
# installed (`pip install "minddpm[wandb]"`), the lesson trains without it.

# %%
use_wandb = importlib.util.find_spec('wandb') is not None
print('W&B logging:', 'on' if use_wandb else 'off (pip install "minddpm[wandb]")')

# %% [markdown]
# ### A disconnect half-way
#
# Six steps, then the run is dropped, as a disconnect drops it, and `start_or_resume` must pick it up from
# the checkpoint for the other six:

# %%
rehearsal = dataclasses.replace(TRAIN_PRESETS['colab'], dataset=str(standin), unet='tiny', batch_size=16, steps=12,
                                ema_start=0, val_every=6, ckpt_every=6, sample_every=0, wandb=use_wandb,
                                out=str(Path(tempfile.mkdtemp())/'cifar10'))
run = train(run=start_or_resume(rehearsal), until=6, progress=False)
del run                                         # the runtime disconnects here
run = start_or_resume(rehearsal)                # after reconnecting: the checkpoint on "Drive"
assert run.step == 6 and run.cfg.hflip and run.shape == (3, 32, 32)
run = train(run=run, progress=False)
assert run.step == 12 and [h[0] for h in run.history] == list(range(1, 13))
print(f"step {run.step}, held-out ε-MSE {run.history[-1][3]:.3f}, on {run.device}")

# %% [markdown]
# The same 12 steps in one go, for comparison: the resumed run's losses lie on the uninterrupted run's.

# %%
straight = train(dataclasses.replace(rehearsal, out=str(Path(tempfile.mkdtemp())/'straight'), wandb=False), progress=False)
n, resumed, whole = [h[0] for h in run.history], [h[1] for h in run.history], [h[1] for h in straight.history]
fig, ax = plt.subplots(figsize=(6, 2.2))
ax.plot(n, whole, lw=5, alpha=.35, label='12 steps in one go')
ax.plot(n, resumed, 'k--', marker='.', label='6 steps, disconnect, resume, 6 more')
ax.axvline(6.5, color='r', lw=.8); ax.set(xlabel='step', ylabel='training loss'); ax.legend(fontsize=8)
print(f"largest difference of the 12 losses: {max(abs(a - b) for a, b in zip(resumed, whole)):.1e}")

# %% [markdown]
# ## The real run
#
# The same two lines with the `colab` preset as it is: CIFAR-10, the seed UNet at 32×32 (16 M
# weights), batch 128, 30,000 steps (77 epochs), random horizontal flips, AdamW with OneCycle, EMA from
# step 2,000, and fp16 with a gradient scaler on a T4 (bf16 on GPUs that have it). A T4 should take
# about 40 minutes (lesson 07's estimate). Should the runtime disconnect, reconnect and run the notebook
# again: this cell then resumes where the last checkpoint left off.

# %%
#| cuda
cfg = dataclasses.replace(TRAIN_PRESETS['colab'], out=str(run_dir('cifar10')), wandb=use_wandb)
run = train(run=start_or_resume(cfg))
print(f"step {run.step}, held-out ε-MSE {run.history[-1][3]:.4f}, {run.device}, {run.dtype}")

# %% [markdown]
# ### A grid per class
#
# `save_samples` draws with the EMA weights, DDIM with 50 steps and guidance w = 3, from a fixed seed,
# one row per class. `train` also leaves grids under `samples/` in the run directory as it goes (every
# 40 epochs in the `colab` preset). The rehearsal's grid, three per class to keep this page small and
# drawn in 10 DDIM steps (as are all of the rehearsal's samples, to keep it quick on a CPU), is noise after 12
# training steps, yet its rows already differ in colour from one another: the label has begun to
# steer what is drawn.

# %%
Image(save_samples(run, Path(run.cfg.out)/'grid.png', n=3, steps=10), width=150)

# %%
#| cuda
Image(save_samples(run, Path(run.cfg.out)/'grid.png', n=10), width=400)


# %% [markdown]
# ## Judging the samples
#
# Two questions: does each sample show the class it was drawn for, and how far are the samples, all
# together, from the real photographs (FID)?
#
# ### Does it draw what was asked? A classifier trained here
#
# `train_judge` (lesson 08) fits a small CNN to the real training images and reports its accuracy on the
# held-out ones. A guided sample counts as right when this classifier gives it the class it was drawn
# for. The classifier's own held-out accuracy is the ceiling: on real CIFAR-10 photographs a CNN this
# small is right far less often than on digits, and samples cannot be judged more reliably than that.

# %%
def real_images(dataset, device) -> tuple[torch.Tensor, torch.Tensor]:
    "Every image of `dataset` as one (N, C, H, W) tensor in [-1, 1] on `device`, and its labels."
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]).to(device), torch.tensor([y for _, y in items], device=device)

@torch.no_grad()
def judge_features(judge, images: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    "The judge's features of `images` (floats in [-1, 1] or uint8), a chunk at a time."
    dev = next(judge.parameters()).device
    x = to_unit_range(images) if images.dtype == torch.uint8 else images
    return torch.cat([judge.features(b.to(dev)) for b in x.split(chunk)])

def class_accuracy(run, dataset, per_class: int, steps: int = 50, **judge_kwargs) -> dict:
    "Train a judge on `dataset`'s real images, then score `per_class` guided samples (DDIM, `steps`) of every class against them."
    judge, judge_acc = train_judge(dataset, run.shape[-1], device=run.device, **judge_kwargs)
    train_split, val_split = get_datasets(dataset, run.shape[-1])
    (x_train, _), (x_val, y_val) = real_images(train_split, run.device), real_images(val_split, run.device)
    reference = judge_features(judge, x_train)
    res = evaluate(run.ema.model, run.diffusion, judge, reference, per_class=per_class,
                   num_classes=len(run.classes), shape=run.shape, steps=steps, w=3.0)
    return dict(judge=judge, judge_accuracy=judge_acc, real=real_floor(judge, reference, x_val, y_val), samples=res, steps=steps)

def report(scores: dict):
    "Print the scores, and draw the samples' accuracy between the ceiling (real images) and chance."
    s, r = scores['samples'], scores['real']
    print(f"guided samples (w = 3, DDIM {scores['steps']}): {s['accuracy']:.1%} right, judge-FID {s['fid']:.2f} ({s['samples']} samples)")
    print(f"real held-out images:            {r['accuracy']:.1%} right, judge-FID {r['fid']:.2f} ({r['samples']} images)")
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.barh(['chance', 'guided samples', 'real held-out images'], [1 / len(CIFAR10_CLASSES), s['accuracy'], r['accuracy']],
            color=['0.7', 'C1', 'C0'])
    ax.set(xlim=(0, 1), xlabel='share the classifier labels as the class drawn (or photographed)')


# %% [markdown]
# In the rehearsal these figures only show that the code runs: the classifier learns the hues at once,
# and the samples of a 12-step model are noise, which it gets right at most by luck (chance is 10 %).

# %%
scores = class_accuracy(run, str(standin), per_class=5, steps=10)
report(scores)
assert 0 <= scores['samples']['accuracy'] <= 1 and scores['samples']['samples'] == 50

# %%
#| cuda
scores = class_accuracy(run, 'cifar10', per_class=100)
report(scores)


# %% [markdown]
# ### Inception FID
#
# The FID of papers is measured in the features of one Inception-v3 network (lesson 08). Its weights are
# downloaded on first use (92 MB), which Colab can do and CI cannot, so the rehearsal runs the same
# function with the classifier's features in Inception's place. `draw` samples in chunks, under the
# run's mixed precision, so that 10,000 images fit in a T4's memory.

# %%
@torch.no_grad()
def draw(run, per_class: int, w: float = 3.0, steps: int = 50, chunk: int = 1000, seed: int = 0) -> torch.Tensor:
    "`per_class` guided samples of every class from the EMA weights, as uint8 on the CPU, `chunk` images at a time."
    y = torch.arange(len(run.classes)).repeat(per_class)
    out = []
    for i, labels in enumerate(y.split(chunk)):
        with autocast(run.device, run.dtype):
            out.append(sample(run.ema.model, run.diffusion, labels, shape=run.shape, steps=steps, w=w, uint8=True,
                              generator=torch.Generator(run.device).manual_seed(seed + i)).cpu())
    return torch.cat(out)

def fid(run, features, real_features: torch.Tensor, per_class: int, w: float, steps: int = 50) -> float:
    "FID between the real images' `real_features` and the `features` of `per_class` samples per class drawn at guidance `w`."
    return frechet_distance(real_features, features(draw(run, per_class, w, steps)))


# %%
real_u8 = to_uint8(real_images(get_datasets(str(standin), 32)[0], 'cpu')[0])
stand_in_features = lambda images: judge_features(scores['judge'], images)
real_features = stand_in_features(real_u8)      # once, for every w
rehearsal_fid = {w: fid(run, stand_in_features, real_features, per_class=5, w=w, steps=10) for w in (1, 3)}
print({f'w={w}': round(v, 2) for w, v in rehearsal_fid.items()}, "(the classifier's features, 50 samples)")

# %% [markdown]
# On the GPU: 10,000 samples (1,000 per class) at w = 1 (no guidance) and w = 3, against all 50,000
# training images, which is how the DDPM paper measured its FID of 3.17 (with 50,000 samples; fewer
# samples bias FID upwards). Do not expect that figure: the paper trained 800,000 steps with a UNet of
# 35.7 M weights, and this run is 30,000 steps with 16 M. Guidance trades variety for class fidelity,
# so FID is usually better at w = 1 than at w = 3 while class accuracy goes the other way.

# %%
#| cuda
if importlib.util.find_spec('torch_fidelity') is None:   # Colab has no torch-fidelity: the Inception port
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', 'torch-fidelity'], check=True)
real_u8 = to_uint8(real_images(get_datasets('cifar10', 32)[0], 'cpu')[0])
inception = lambda images: inception_features(images, device=run.device)
real_features = inception(real_u8)
inception_fid = {w: fid(run, inception, real_features, per_class=1000, w=w) for w in (1, 3)}
print({f'w={w}': round(v, 2) for w, v in inception_fid.items()}, '(Inception-v3, 10,000 samples against 50,000 training images)')


# %% [markdown]
# ## How long, and how much memory
#
# No T4 was at hand to time the GPU cells, so here is an estimate from the work each does: its
# floating-point operations, counted by PyTorch's `FlopCounterMode` on the `colab` preset's UNet, at a
# quarter of the T4's 65 TFLOP/s fp16 peak (16 TFLOP/s). Sampling is 20,000 images for FID and 1,000 for
# accuracy, at 50 guided steps; Inception's 11 GFLOP an image (at 299×299) run in float32, at half the T4's
# 8.1 TFLOP/s fp32 peak, for the 50,000 real images once and the 20,000 samples.

# %%
def flops(fn) -> float:
    "Floating-point operations `fn()` runs, as PyTorch's `FlopCounterMode` counts them."
    with FlopCounterMode(display=False) as count: fn()
    return count.get_total_flops()

cfg, T4 = TRAIN_PRESETS['colab'], 65e12 / 4                   # a quarter of the T4's fp16 peak, in FLOP/s
net = ConditionalUNet(len(CIFAR10_CLASSES), **unet_preset(cfg.unet, in_channels=3))
x, t, y = torch.randn(2, 3, cfg.img_size, cfg.img_size), torch.tensor([0, 999]), torch.tensor([0, 1])
step = flops(lambda: net(x, t, y).square().mean().backward()) / 2 * cfg.batch_size   # forward and backward, one batch
with torch.no_grad(): image = flops(lambda: net(x, t, y)) / 2                        # one image through the UNet
minutes = {f'training: {cfg.steps:,} steps': cfg.steps * step / T4 / 60,
           'sampling: 21,000 images × 50 steps × 2 (guidance)': 21_000 * 50 * 2 * image / T4 / 60,
           'Inception: 70,000 images, fp32': 70_000 * 11e9 / (8.1e12 / 2) / 60}
print(f"a training step: {step / 1e12:.2f} TFLOP; one image through the UNet: {image / 1e9:.2f} GFLOP")
fig, ax = plt.subplots(figsize=(7, 1.2))
left = 0
for name, m in minutes.items(): ax.barh(0, m, left=left, label=f'{name}: {m:.0f} min'); left += m
ax.set(yticks=[], xlabel=f'minutes on a T4, estimated: {left:.0f} in all')
_ = ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.02, 1.3), frameon=False)

# %% [markdown]
# The classifier (15 epochs of a 0.1 M-weight CNN) adds under a minute. Together it fits in one sitting of a
# free runtime; if the runtime disconnects, a rerun resumes from the last checkpoint on Drive. An H200 ran
# the same training in 31 minutes (lesson 07), held back by Python rather than arithmetic; on a T4 the
# arithmetic is the limit.
#
# Memory, measured on the CPU in float32 (`minddpm.bench.measure_training` and `PeakMemory`, the rise
# of the process's peak resident memory): one training step of the `colab` model at batch 128 took
# 2.7 GiB, and one guided DDIM step of `draw`'s 1,000-image chunk (2,000 images through the UNet) took
# 4.6 GiB. On the T4 the same work runs in fp16, whose activations are half as large, so both fit its
# 15 GB with room to spare: an estimate from CPU measurements, not a T4 measurement.
#
# ### What next
#
# - Train longer: `minddpm_train --resume <run dir>/checkpoint.pt --steps 60000` stretches the schedule
#   and carries on; the samples keep improving well past 30,000 steps.
# - The `full` preset trains at 64×64, as the originals did; it needs more GPU time than a free runtime gives in one go, so it relies on resuming.
# - Your own images: `dataset='path/to/folder'` with one sub-folder per class, exactly like the stand-in.
# - Export the model (`export_model`, lesson 07) and sample it anywhere with `minddpm_sample`.
