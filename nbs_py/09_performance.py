# %%
#| default_exp bench

# %% [markdown]
# # Performance
# > The original UNet, training step and sampler written out as a baseline, each speed-up switched on one at a time with its measurement, and `minddpm_bench`: minddpm against the baseline side by side, with ratios

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/09_performance.ipynb)
# This lesson has no GPU-only cells: it ran top to bottom in 4½ minutes on a 2-core CPU (measured); a Colab runtime is no slower.

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
import argparse, json, math, platform, random, re, sys, time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, asdict, replace
from multiprocessing import get_context
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minddpm.conditioning import ConditionalUNet
from minddpm.data import cpu_has_bf16, get_datasets, pick_device
from minddpm.forward import Diffusion
from minddpm.sampling import sample
from minddpm.training import TrainConfig, Run, train_step, autocast, resolve_precision
from minddpm.unet import unet_preset

# %%
#| hide
from fastcore.test import *
import matplotlib.pyplot as plt
from minddpm.data import get_dataloaders, pick_device, pick_preset

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)              # the same weights on every run

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # 'colab' sizes on a CUDA GPU, 'tiny' elsewhere


# %% [markdown]
# Lessons 03–07 made choices for speed and said why: attention through
# `F.scaled_dot_product_attention`, the time embedding broadcast rather than copied, both guidance
# branches in one batched pass, channels-last weights, mixed precision that really runs, and
# `torch.compile`. This lesson measures each one. It writes out the original recipe as a baseline,
# switches the changes on one at a time, and ends with `minddpm_bench`: the package against the
# baseline at the same architecture and batch, with the ratios.
#
# How the figures are taken:
#
# - **Time** is the median of several runs, after warm-up runs that are not counted: the first calls
#   pay for memory allocation, kernel selection and, with `torch.compile`, compilation.
# - **Memory** is measured in a fresh process for each setting. On a GPU it is PyTorch's allocator
#   peak. On a CPU there is no allocator to ask, so it is the process's peak resident memory (Linux
#   `VmHWM`), which a second measurement in the same process would not see: freed memory stays
#   with the process.
# - **Baseline and minddpm run in the same session**, one after the other. Only ratios measured
#   together mean anything, since another machine, or this one while busy, gives other seconds.
#
# ## The baseline, written out
#
# The original conditional UNet as the seed article shows it (channels 64-128-256-256, the two-conv
# bottleneck, 15.66 M weights). Each block is written as the original computes it: GroupNorm(1) conv
# blocks, the time embedding `.repeat`ed to every pixel, bilinear upsampling, and
# `nn.MultiheadAttention` called with its default `need_weights=True`. Two things differ, and neither
# changes the speed: the attention takes its size from its input (the original fixes it at
# construction, so only 64×64 images work), and a label of −1 means "no label", so one batch can hold
# both guidance branches once that change is switched on.
#
# The switches (`kernel`, `broadcast`) are attributes, so one model can be measured with each change on
# or off.

# %%
#| export
class SeedConv(nn.Module):
    "The original conv block: Conv3×3 (no bias) → GroupNorm(1) → GELU → Conv3×3 → GroupNorm(1), with `residual` gelu(x + block(x))."
    def __init__(self, c_in,           # input channels
                 c_out,                # output channels (equal to `c_in` when `residual`)
                 c_mid=None,           # channels between the two convs; None: `c_out`
                 residual=False):      # return gelu(x + block(x)) instead of block(x)
        super().__init__()
        c_mid = c_mid or c_out
        self.residual = residual
        self.double_conv = nn.Sequential(
            nn.Conv2d(c_in, c_mid, 3, padding=1, bias=False), nn.GroupNorm(1, c_mid), nn.GELU(),
            nn.Conv2d(c_mid, c_out, 3, padding=1, bias=False), nn.GroupNorm(1, c_out))
    def forward(self, x): return F.gelu(x + self.double_conv(x)) if self.residual else self.double_conv(x)

class SeedDown(nn.Module):
    "Max-pool, two conv blocks, then the time embedding `.repeat`ed to every pixel (`broadcast=True`: broadcast instead)."
    broadcast = False
    def __init__(self, c_in,           # input channels
                 c_out,                # output channels
                 emb_dim=256):         # width of the time embedding `t` given to `forward`
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), SeedConv(c_in, c_in, residual=True), SeedConv(c_in, c_out))
        self.emb_layer = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))
    def forward(self, x, t):
        x = self.maxpool_conv(x)
        return x + _time_map(self.emb_layer(t), x, self.broadcast)

class SeedUp(nn.Module):
    "Bilinear ×2, concatenate the skip, two conv blocks, then the time embedding as in `SeedDown`."
    broadcast = False
    def __init__(self, c_in,           # channels of the skip and the upsampled input, concatenated
                 c_out,                # output channels
                 emb_dim=256):         # width of the time embedding `t` given to `forward`
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)
        self.conv = nn.Sequential(SeedConv(c_in, c_in, residual=True), SeedConv(c_in, c_out, c_in // 2))
        self.emb_layer = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))
    def forward(self, x, skip_x, t):
        x = self.conv(torch.cat([skip_x, self.up(x)], dim=1))
        return x + _time_map(self.emb_layer(t), x, self.broadcast)

def _time_map(emb, x, broadcast: bool):
    "(B, C) → (B, C, 1, 1) that broadcasts over H×W, or the original's (B, C, H, W) copy."
    emb = emb[:, :, None, None]
    return emb if broadcast else emb.repeat(1, 1, x.shape[-2], x.shape[-1])


# %%
#| export
class SeedAttention(nn.Module):
    "The original self-attention block. `kernel`: 'weights' (the original call), 'no_weights' (`need_weights=False`) or 'sdpa' (the same weights through `F.scaled_dot_product_attention`)."
    kernel = 'weights'
    def __init__(self, channels,       # C of the (B, C, H, W) input: the attention's width
                 heads=4):             # attention heads; must divide `channels`
        super().__init__()
        self.channels, self.heads = channels, heads
        self.mha = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.ln = nn.LayerNorm([channels])
        self.ff_self = nn.Sequential(nn.LayerNorm([channels]), nn.Linear(channels, channels), nn.GELU(), nn.Linear(channels, channels))

    def forward(self, x):
        B, C, H, W = x.shape
        x = x.view(B, C, H * W).swapaxes(1, 2)      # (B, HW, C)
        x_ln = self.ln(x)
        if self.kernel == 'sdpa': a = self._sdpa(x_ln)
        else: a, _ = self.mha(x_ln, x_ln, x_ln, need_weights=self.kernel == 'weights')
        a = a + x
        a = self.ff_self(a) + a
        return a.swapaxes(2, 1).reshape(B, C, H, W)

    def _sdpa(self, h):
        "The `mha` weights applied by hand, with the fused attention kernel in the middle."
        B, L, C = h.shape
        q, k, v = F.linear(h, self.mha.in_proj_weight, self.mha.in_proj_bias).view(B, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        return self.mha.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, C))


# %%
#| export
class SeedUNet(nn.Module):
    "The original conditional UNet (the seed article's two-conv bottleneck): sinusoidal time embedding with no MLP, plus a label embedding."
    def __init__(self, c_in=3,         # image channels in
                 c_out=3,              # channels of the predicted ε (normally `c_in`)
                 time_dim=256,         # width of the sinusoidal time and label embeddings; the blocks expect 256
                 num_classes=10):      # labels y in [0, num_classes); −1 for no label
        super().__init__()
        self.time_dim = time_dim
        self.inc = SeedConv(c_in, 64)
        self.down1, self.sa1 = SeedDown(64, 128), SeedAttention(128)
        self.down2, self.sa2 = SeedDown(128, 256), SeedAttention(256)
        self.down3, self.sa3 = SeedDown(256, 256), SeedAttention(256)
        self.bot1, self.bot3 = SeedConv(256, 256), SeedConv(256, 256)
        self.up1, self.sa4 = SeedUp(512, 128), SeedAttention(128)
        self.up2, self.sa5 = SeedUp(256, 64), SeedAttention(64)
        self.up3, self.sa6 = SeedUp(128, 64), SeedAttention(64)
        self.outc = nn.Conv2d(64, c_out, kernel_size=1)
        self.label_emb = nn.Embedding(num_classes, time_dim)

    def pos_encoding(self, t, channels):
        "sin and cos of t at frequencies 1/10000^(2i/channels), i < channels/2."
        inv_freq = 1.0 / (10000 ** (torch.arange(0, channels, 2, device=t.device).float() / channels))
        angles = t.repeat(1, channels // 2) * inv_freq
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def forward(self, x, t, y=None):
        t = self.pos_encoding(t.unsqueeze(-1).float(), self.time_dim)
        if y is not None:   # −1: no label for that image (the original has only y=None, for the whole batch)
            t = t + torch.where((y >= 0)[:, None], self.label_emb(y.clamp(min=0)), 0)
        x1 = self.inc(x)
        x2 = self.sa1(self.down1(x1, t))
        x3 = self.sa2(self.down2(x2, t))
        x4 = self.sa3(self.down3(x3, t))
        x4 = self.bot3(self.bot1(x4))
        x = self.sa4(self.up1(x4, x3, t))
        x = self.sa5(self.up2(x, x2, t))
        x = self.sa6(self.up3(x, x1, t))
        return self.outc(x)


# %% [markdown]
# Is it the same network as minddpm's `seed` preset? Same weights, block for block: only the names
# differ, and minddpm's label table has one more row, the null label, which the original expresses
# by adding no label at all (a zero row does the same). `seed_to_minddpm` renames the weights, and
# with them both networks compute the same function:

# %%
#| export
_RENAMES = [  # (a pattern in the original's weight names, what minddpm calls it)
    (r'double_conv\.', 'net.'),
    (r'^down(\d)\.maxpool_conv\.', lambda m: f'downs.{int(m[1]) - 1}.convs.'),
    (r'^down(\d)\.emb_layer\.', lambda m: f'downs.{int(m[1]) - 1}.emb.'),
    (r'^up(\d)\.conv\.', lambda m: f'ups.{int(m[1]) - 1}.convs.'),
    (r'^up(\d)\.emb_layer\.', lambda m: f'ups.{int(m[1]) - 1}.emb.'),
    (r'^sa([1-3])\.', lambda m: f'down_attn.{int(m[1]) - 1}.'),
    (r'^sa([4-6])\.', lambda m: f'up_attn.{int(m[1]) - 4}.'),
    (r'^bot1\.', 'mid.0.'), (r'^bot3\.', 'mid.1.'),
    (r'\.mha\.in_proj_', '.qkv.'), (r'\.mha\.out_proj\.', '.proj.'), (r'\.ln\.', '.norm.'), (r'\.ff_self\.', '.ff.')]

def _rename(name: str) -> str:
    for pattern, new in _RENAMES: name = re.sub(pattern, new, name)
    return name

def seed_to_minddpm(state: dict,      # `SeedUNet.state_dict()`
                   ) -> dict:
    "A `SeedUNet` state dict as weights for `ConditionalUNet(**unet_preset('seed'))`: renamed, plus a zero null-label row."
    out = {_rename(k): v for k, v in state.items()}
    emb = out['label_emb.weight']
    out['label_emb.weight'] = torch.cat([emb, emb.new_zeros(1, emb.shape[1])])
    return out


# %%
seed_net = SeedUNet(1, 1).eval()
ours = ConditionalUNet(10, **unet_preset('seed', in_channels=1)).eval()
ours.load_state_dict(seed_to_minddpm(seed_net.state_dict()))   # strict: every weight has its place, none left over
n_seed, n_ours = (sum(p.numel() for p in m.parameters()) for m in (seed_net, ours))
print(f"weights: original {n_seed:,}, minddpm {n_ours:,} (+{n_ours - n_seed}: the null label row)")
x, t, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 10, 500, 999]), torch.tensor([3, -1, 7, 0])
with torch.no_grad():
    e_seed, e_ours = seed_net(x, t, y), ours(x, t, y)
    e_none = seed_net(x, t), ours(x, t)
print(f"largest difference in ε̂: {(e_seed - e_ours).abs().max():.1e} (ε̂ itself is of order {e_seed.abs().mean():.2f})")
test_close(e_seed, e_ours, eps=1e-4)
test_close(*e_none, eps=1e-4)


# %% [markdown]
# The training step and the sampler are written out the same way. The step is float32 with no
# gradient clipping. It draws t from 1 to 999 (the original never trains t = 0) and drops the labels
# of the whole batch one time in ten. Its EMA loops over the parameters in Python, and before
# `step_start_ema` it reloads the whole state dict every step. The sampler runs the 999 steps
# t = 999 … 1, with two forward passes per guided step.
#
# `SeedSettings` holds the six changes this lesson measures, all off by default. `SeedTrainer` and
# `seed_sample` apply them to the baseline so each can be switched on by itself.

# %%
#| export
@dataclass(frozen=True)
class SeedSettings:
    "Which speed-ups the baseline runs with; all off is the original."
    attention: str = 'weights'    # SeedAttention.kernel: 'weights' (original), 'no_weights' or 'sdpa'
    broadcast: bool = False       # broadcast the time embedding instead of `.repeat`
    batched: bool = False         # both guidance branches in one forward pass (sampling only)
    channels_last: bool = False   # weights and images in channels-last memory format
    amp: str = 'fp32'             # autocast dtype: 'fp32' (none, the original), 'bf16' or 'fp16'
    compile: bool = False         # run the network through `torch.compile`

def seed_model(settings: SeedSettings,  # the speed-ups to apply (`attention`, `broadcast`, `channels_last`, `compile`)
               size: int,               # image side in pixels; not used: the network takes any multiple of 8
               channels: int = 1,       # image channels, in and out
               num_classes: int = 10,   # number of labels
               device='cpu'):           # where the weights go: a torch device or its name
    "A `SeedUNet` on `device` with `settings` applied; returns (module, the callable to run: compiled or not)."
    m = SeedUNet(channels, channels, num_classes=num_classes).to(device)
    for mod in m.modules():
        if isinstance(mod, SeedAttention): mod.kernel = settings.attention
        if isinstance(mod, (SeedDown, SeedUp)): mod.broadcast = settings.broadcast
    if settings.channels_last: m = m.to(memory_format=torch.channels_last)
    return m, (torch.compile(m) if settings.compile else m)

_DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}

def _images(x, settings):
    return x.contiguous(memory_format=torch.channels_last) if settings.channels_last else x


# %%
#| export
class SeedTrainer:
    "The original training step: AdamW (eps 1e-5) with OneCycleLR, no clipping, whole-batch label drop, the per-parameter EMA."
    def __init__(self, settings: SeedSettings,  # the speed-ups to train with (`batched` has no effect here)
                 size: int,               # image side in pixels; not used: the batches given to `step` set it
                 steps: int,              # OneCycleLR's total steps: `step` may be called this many times
                 channels: int = 1,       # image channels
                 num_classes: int = 10,   # number of labels
                 device='cpu',            # where to train: a torch device or its name
                 lr: float = 1e-3,        # AdamW's peak learning rate (OneCycleLR's max_lr)
                 T: int = 1000,           # diffusion steps: β linear from 1e-4 to 0.02; t is drawn from 1 … T−1
                 ema_beta: float = 0.995,  # EMA decay per step, once it averages
                 step_start_ema: int = 2000):  # steps before the EMA averages; until then it copies the weights
        self.settings, self.device, self.T = settings, torch.device(device), T
        self.model, self.forward = seed_model(settings, size, channels, num_classes, device)
        self.ema_model = SeedUNet(channels, channels, num_classes=num_classes).to(device).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, eps=1e-5)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=lr, total_steps=steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=settings.amp == 'fp16')
        self.alpha_hat = torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, device=device), 0)
        self.ema_beta, self.step_start_ema, self.ema_step = ema_beta, step_start_ema, 0

    def step(self, x, y) -> torch.Tensor:
        x, y = _images(x.to(self.device), self.settings), y.to(self.device)
        t = torch.randint(1, self.T, (len(x),), device=self.device)
        noise = torch.randn_like(x)
        x_t = self.alpha_hat[t].sqrt()[:, None, None, None] * x + (1 - self.alpha_hat[t]).sqrt()[:, None, None, None] * noise
        if random.random() < 0.1: y = None                                  # the whole batch loses its labels
        with autocast(self.device, _DTYPES[self.settings.amp]):
            loss = F.mse_loss(noise, self.forward(x_t, t, y).float())
        self.opt.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt); self.scaler.update()
        self.ema_update()
        self.sched.step()
        return loss.detach()

    @torch.no_grad()
    def ema_update(self):
        "Reload the whole state dict before `step_start_ema`, then average parameter by parameter in Python."
        if self.ema_step < self.step_start_ema: self.ema_model.load_state_dict(self.model.state_dict())
        else:
            for p, p_ema in zip(self.model.parameters(), self.ema_model.parameters()):
                p_ema.data = p_ema.data * self.ema_beta + (1 - self.ema_beta) * p.data
        self.ema_step += 1


# %%
#| export
@torch.inference_mode()
def seed_sample(forward,                 # the network (or its compiled callable), called as forward(x, t, y)
                labels: torch.Tensor,    # (B,) class of each image, on the device to sample on
                shape,                   # (C, H, W) of one image
                settings: SeedSettings = SeedSettings(),  # the speed-ups: here `batched`, `channels_last`, `amp`
                cfg_scale: float = 3.0,  # guidance weight w: ε_u + w·(ε_c − ε_u)
                T: int = 1000,           # diffusion steps: β linear from 1e-4 to 0.02; the loop runs t = T−1 … 1
                stop_after: int | None = None,  # stop after this many steps (for timing); None: all T−1
                generator: torch.Generator | None = None,  # seeds the starting noise (later draws use the global RNG)
               ) -> torch.Tensor:
    "The original sampler: DDPM for t = T−1 … 1, guidance by lerp(ε_u, ε_c, cfg_scale); `stop_after` steps, for timing."
    device = labels.device
    beta = torch.linspace(1e-4, 0.02, T, device=device)
    alpha, alpha_hat = 1 - beta, torch.cumprod(1 - beta, 0)
    n = len(labels)
    x = _images(torch.randn((n, *shape), generator=generator, device=device), settings)
    for k, i in enumerate(reversed(range(1, T))):
        if stop_after is not None and k == stop_after: break
        t = (torch.ones(n, device=device) * i).long()
        with autocast(device, _DTYPES[settings.amp]):
            if settings.batched:
                eps, eps_u = forward(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, torch.full_like(labels, -1)])).float().chunk(2)
            else:
                eps, eps_u = forward(x, t, labels).float(), forward(x, t, None).float()
        eps = torch.lerp(eps_u, eps, cfg_scale)
        a, ah, b = alpha[t][:, None, None, None], alpha_hat[t][:, None, None, None], beta[t][:, None, None, None]
        noise = torch.randn_like(x) if i > 1 else torch.zeros_like(x)
        x = 1 / a.sqrt() * (x - ((1 - a) / (1 - ah).sqrt()) * eps) + b.sqrt() * noise
    return x


# %% [markdown]
# A few steps of each, to see them run: the loss is a number, the sampler returns images of the right
# shape.

# %%
dl, _ = get_dataloaders('digits', 32, 8)
xb, yb = next(iter(dl))
trainer = SeedTrainer(SeedSettings(), 32, steps=3)
losses = torch.stack([trainer.step(xb, yb) for _ in range(3)])
assert losses.isfinite().all()
test_eq(seed_sample(trainer.model.eval(), yb[:2], (1, 32, 32), stop_after=2).shape, (2, 1, 32, 32))


# %% [markdown]
# ## Measuring
#
# `median_time` times a function after warm-up calls, waiting for the GPU where there is one.
# `PeakMemory` reads the peak above the level at entry. `isolated` runs a measurement in a fresh
# Python process, so each memory peak starts from a clean process and no measurement inherits another's
# allocations or compiled kernels. Starting a process costs a few seconds, which is not timed.

# %%
#| export
def _sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()

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

def _child(name: str, kwargs: dict):
    return globals()[name](**kwargs)

def isolated(fn,         # a function of `minddpm.bench`, looked up by its `__name__` in the new process
             **kwargs):  # its keyword arguments; they and the result must be picklable
    "Run `fn(**kwargs)` (a function of this module) in a fresh Python process and return its result."
    from minddpm import bench   # the package's copy: a fresh process can import it, not a notebook's
    with ProcessPoolExecutor(1, mp_context=get_context('spawn')) as pool:
        return pool.submit(bench._child, fn.__name__, kwargs).result()


# %% [markdown]
# The two measurements everything below is made of, each for either the baseline (a `SeedSettings`)
# or `'minddpm'`, the package itself:
#
# - `measure_training` runs training steps on the bundled digits (resized to `size`; one channel, so
#   both networks have the same shape) and returns the median step time, images per second and the
#   peak memory. The baseline's EMA is measured in its averaging phase, the one a long run spends its
#   time in. minddpm trains through `Run` and `train_step`, exactly as `minddpm_train` does.
# - `measure_sampling` times guided sampling steps (w = 3) on a batch of labels and divides by the
#   count, and with `steps` set to a sampler's full length it times the whole sampler. minddpm samples
#   through `sample`.

# %%
#| export
def _settings(variant) -> SeedSettings | None:
    if variant == 'minddpm': return None
    return variant if isinstance(variant, SeedSettings) else SeedSettings(**variant)

def _dtype_name(dtype) -> str: return {None: 'fp32', torch.bfloat16: 'bf16', torch.float16: 'fp16'}[dtype]

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
        trainer = SeedTrainer(settings, size, steps + warmup, device=device, step_start_ema=0)
        step = trainer.step
    batches = training_batches(size, batch, steps + warmup, seed)
    times = []
    with PeakMemory(device) as mem:
        for i, (x, y) in enumerate(batches):
            _sync(device); t0 = time.perf_counter()
            step(x, y); _sync(device)
            if i >= warmup: times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]
    return dict(step_s=step_s, images_per_s=batch / step_s, peak_bytes=mem.peak, total_bytes=mem.total)

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
# Mixed precision pays only where the hardware multiplies half-precision numbers natively. Every CUDA GPU
# with tensor cores (a T4 or newer) does; among CPUs, those with AMX or AVX512-BF16 do for bf16 (the 2-core Xeon the
# figures below come from has AMX). `bench_precision` makes that choice for the benchmark:

# %%
#| export
def bench_precision(device,            # a torch device or its name
                   ) -> str:
    "The autocast precision minddpm is benchmarked at on `device`: 'bf16', 'fp16' or 'fp32'."
    device = torch.device(device)
    if device.type == 'cpu': return 'bf16' if cpu_has_bf16() else 'fp32'
    return _dtype_name(resolve_precision(device, 'auto'))


# %%
print(f"bf16 instructions on this CPU: {cpu_has_bf16()}; minddpm is benchmarked here at {bench_precision('cpu')}")


# %% [markdown]
# ## Each change, one at a time
#
# `ladder` starts from the original and switches the changes on in the order the lessons introduced
# them, each on top of the ones before. Every rung is measured in its own process, at the bench's
# setting: the seed UNet at 32×32, batch 16. The figures quoted in the text are from one run on a 2-core
# Xeon with AMX; the plots show this run's.

# %%
#| export
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
#| hide
sdpa_seconds = {}   # the attention block alone, per kernel: filled in below

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
with torch.inference_mode():
    ref = blk(h)
    for kernel in ('weights', 'no_weights', 'sdpa'):
        blk.kernel = kernel
        test_close(blk(h), ref, eps=1e-4)   # the same function
        sdpa_seconds[kernel] = median_time(lambda: blk(h), reps=5)
print(', '.join(f"{k}: {1000 * v:.0f} ms" for k, v in sdpa_seconds.items()))

# %% [markdown]
# In two runs: 151–168 ms with the map, 119–132 ms without it, 40–46 ms through
# `scaled_dot_product_attention`.
# `need_weights=False` alone is not enough everywhere: in inference, `nn.MultiheadAttention` takes a
# "fast path" of its own, which on a CPU can be slower than calling `scaled_dot_product_attention`
# directly. minddpm's `SelfAttention` (lesson 03) calls it directly, so it gets the fused kernel in
# training and in sampling alike.
#
# ### Broadcasting
#
# The original adds the time embedding to every pixel by first copying it there with `.repeat`. Adding
# a (B, C, 1, 1) tensor to (B, C, H, W) broadcasts with no copy. Each repeat is a tensor as large as
# the block's output, written once and read once:

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
# The first call pays for the compilation: on this 2-core CPU 100 s for the training step and 45 s for
# the sampling step, which never paid back here (see below). So the ladders on this page stop before
# the compile rung; `ladder(kind)` with its default `compile=True` adds it, as the `#| slow` cell at the
# end of this section does.
#
# ### The ladder
#
# Training first: AdamW, the EMA and all, as in `SeedTrainer`. Batched guidance does not apply.

# %%
train_rungs = ladder('training', compile=False)
plot_ladder(train_rungs, 'training step, seed UNet 32×32, batch 16', memory=True);

# %% [markdown]
# One guided sampling step (w = 3), on 16 images:

# %%
sample_rungs = ladder('sampling', compile=False)
plot_ladder(sample_rungs, 'guided sampling step, 32×32, batch 16');

# %% [markdown]
# What two runs showed (the bars above are this page's latest run; the ratios move by a tenth or so from
# run to run on a shared machine):
#
# - **The attention kernel is the big structural win**: 1.53–1.60× in training and 1.36–1.43× in sampling,
#   and the training peak falls from about 1,500 MB to 650 MB, because the maps the original keeps for
#   the backward pass are gone.
# - **Broadcasting, channels_last and batched guidance are small on this CPU**: within the noise in
#   training; in sampling, batched guidance and channels_last add 5–10% between them. They matter more
#   on a GPU, where each kernel launch and memory pass costs more relative to the arithmetic.
# - **bf16 autocast gives the second big step** on this AMX CPU: 2.04–2.56× in training, 3.98–4.16× in
#   sampling, and another 130 MB off the training peak.
# - **`torch.compile` does not pay here**: from 13% slower to 6% faster than eager, after 100 s
#   (training) and 45 s (sampling) of compiling (the compile rungs of two runs of the `#| slow` cell below). On a GPU it does: on an H200, the `colab` preset
#   trained at 16.1 steps/s in bf16 and 20.7 compiled (lesson 07's GPU check). So minddpm compiles on
#   request (`--compile`), and `minddpm_bench` turns it on for CUDA only.

# %%
#| hide
test_eq([r['change'] for r in train_rungs][:3], ['original', 'attention kernel', 'broadcasting'])
test_eq(sample_rungs[-1]['settings'], dict(attention='sdpa', broadcast=True, batched=True, channels_last=True,
                                            amp=bench_precision('cpu'), compile=False))   # every change but compile on at the top

# %% [markdown]
# The ladders with their compile rungs, about 4 minutes more on this CPU (flagged `slow`, so the tests
# skip it; run it with `nbdev_test --flags slow --path nbs/09_performance.ipynb`):

# %%
#| slow
for kind in ('training', 'sampling'):
    rungs = ladder(kind, log=lambda m: None)
    plot_ladder(rungs, f'{kind}, every change and torch.compile, seed UNet 32×32, batch 16', memory=kind == 'training')
    test_eq(rungs[-1]['settings']['compile'], True)

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
# for CUDA and off on a CPU, where it does not pay (see "Each change, one at a time" below).
# On CUDA it also finds the largest batch that trains in 15 GB.

# %%
#| export
TARGETS = {  # device type → (figure, least ratio to the baseline); from the course's performance goals
    'cpu': {'training images/s': 2.0, 'guided step': 1.8, 'DDIM-50 end to end': 35.0},
    'cuda': {'training images/s': 3.0, 'largest batch in 15 GB': 4.0},
}

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

_VARIANT_NAMES = ('original', 'minddpm fp32', 'minddpm')

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
    if size < 8 or size % 8: raise ValueError(f"size must be a multiple of 8 (the seed UNet halves it 3 times), got {size}")
    if batch < 1 or steps < 1: raise ValueError(f"batch and steps must be at least 1, got batch={batch}, steps={steps}")
    device = pick_device(device)
    precision = bench_precision(device) if precision == 'auto' else precision
    resolve_precision(device, precision)   # refuses unknown names
    compile = device.type == 'cuda' if compile == 'auto' else bool(compile)
    find_largest_batch = device.type == 'cuda' if find_largest_batch is None else find_largest_batch
    variants = {'original': asdict(SeedSettings()), 'minddpm fp32': dict(precision='fp32', compile=False),
                'minddpm': dict(precision=precision, compile=compile)}
    if precision == 'fp32' and not compile: del variants['minddpm fp32']
    raw = {}
    for name, v in variants.items():
        kw = dict(variant=v, size=size, batch=batch, device=str(device)) if name == 'original' else \
             dict(variant='minddpm', size=size, batch=batch, device=str(device), **v)
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
    res['rows'], res['estimated'] = _rows(raw, full)
    res['ratios'] = {row: {name: _ratio(row, vals['original'], vals[name]) for name in raw if name != 'original'}
                     for row, vals in res['rows'].items()}
    res['targets'] = TARGETS.get(device.type, {})
    return res

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

def minddpm_bench(argv=None):  # the command-line arguments, without the program's name; None: `sys.argv[1:]`
    "Command line: measure minddpm against the original recipe, print the table and write the results as JSON."
    p = argparse.ArgumentParser(prog='minddpm_bench', description=minddpm_bench.__doc__)
    p.add_argument('--size', type=int, default=32, help="image size, a multiple of 8 (default 32)")
    p.add_argument('--batch', type=int, default=16, help="images per training step and per sampling batch (default 16)")
    p.add_argument('--device', default='auto', help="auto (cuda, then mps, then cpu), cpu, cuda, …")
    p.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'bf16', 'fp16'),
                   help="minddpm's autocast precision; auto: what the device does best (bf16 on a CPU only with AMX or AVX512-BF16)")
    p.add_argument('--compile', default='auto', choices=('auto', 'on', 'off'), help="torch.compile minddpm; auto: on for CUDA only")
    p.add_argument('--full', action='store_true', help="run the 999- and 1000-step samplers to the end instead of estimating them")
    p.add_argument('--largest-batch', default='auto', choices=('auto', 'on', 'off'),
                   help="find the largest training batch within 15 GiB; auto: on for CUDA only")
    p.add_argument('--steps', type=int, default=5, help="training steps timed per setting, after 2 warm-up steps (default 5)")
    p.add_argument('--json', default='minddpm_bench.json', help="where to write the results (default minddpm_bench.json)")
    a = p.parse_args(argv)
    if a.size < 8 or a.size % 8: p.error(f"--size must be a multiple of 8 (the seed UNet halves it 3 times), got {a.size}")
    if a.batch < 1: p.error(f"--batch must be at least 1, got {a.batch}")
    if a.steps < 1: p.error(f"--steps must be at least 1, got {a.steps}")
    try: device = pick_device(a.device); torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as e: p.error(f"--device {a.device} is not usable here: {e}")
    on_off = {'auto': None, 'on': True, 'off': False}
    compile = 'auto' if a.compile == 'auto' else on_off[a.compile]
    t0 = time.perf_counter()
    res = run_bench(a.size, a.batch, device, a.precision, compile, a.full, on_off[a.largest_batch], a.steps,
                    log=lambda m: print(m, file=sys.stderr, flush=True))
    res['seconds'] = time.perf_counter() - t0
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    print(format_table(res))
    print(f"\n{res['seconds'] / 60:.1f} min; results in {a.json}")


# %% [markdown]
# The run the course's figures come from, on this machine: the command `minddpm_bench` does the same
# and also writes the results as JSON (`--json`, default `minddpm_bench.json`).

# %%
res = run_bench(log=lambda m: None)
print(format_table(res))

# %% [markdown]
# The same command with `--full`, which runs the 999- and 1000-step samplers to the end (29 minutes),
# gave on this 2-core Xeon (torch 2.14.1):
#
# | seed UNet, 32×32, batch 16 | original | minddpm fp32 | minddpm bf16 |
# |---|---|---|---|
# | training images/s | 11.4 | 19.5 (1.70×) | 26.5 (2.32×) |
# | training peak memory (MB) | 1,513 | 617 (2.45× less) | 506 (2.99× less) |
# | guided step (ms) | 856 | 522 (1.64×) | 236 (3.63×) |
# | DDPM end to end (s) | 849 (999 steps) | 494 (1.72×) | 235 (3.61×) |
# | DDIM-50 end to end (s) | 849 (its 999 steps) | 24.8 (34.2×) | 12.0 (70.9×) |
#
# The estimate of the default run was right: 999 × 856 ms is 855 s, and the measured run took 849 s.
# Without mixed precision minddpm's own changes give 1.6–1.7× here. bf16 on the CPU's AMX units is what
# lifts training above 2× and a guided step to 3.6×. Between runs the ratios move by about 15% (training
# 2.02× to 2.42× in four runs on this machine), so read them to one digit.

# %%
#| hide
test_eq(res['columns'][0], 'original')
test_eq(set(res['rows']), {'training images/s', 'training peak memory (MB)', 'guided step (ms)', 'DDPM end to end (s)', 'DDIM-50 end to end (s)'})
test_eq(json.loads(json.dumps(res))['rows'], res['rows'])   # the results are plain JSON

# %% [markdown]
# On a GPU, `minddpm_bench --size 64` measures the original's 64×64 setting, compiled, and adds the
# largest batch that trains in 15 GiB, the memory of a free Colab T4:
#
# ```sh
# minddpm_bench --size 64 --batch 16
# ```
