# %%
#| default_exp original

# %% [markdown]
# # The original recipe
# > The seed article's conditional UNet, training step and sampler written out as the benchmark's baseline, with a switch for each of minddpm's speed-ups

# %%
#| export
from __future__ import annotations
import random, re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from minddpm.device import autocast

# %%
#| hide
from fastcore.test import *
import matplotlib.pyplot as plt
from minddpm.conditioning import ConditionalUNet
from minddpm.data import get_dataloaders
from minddpm.unet import unet_preset

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)              # the same weights on every run


# %% [markdown]
# Lesson 09 measures minddpm against the recipe it started from. This page writes that recipe out: the
# conditional UNet as the seed article shows it (channels 64-128-256-256, the two-conv bottleneck,
# 15.66 M weights), its training step and its sampler, each computed as the original computes it —
# GroupNorm(1) conv blocks, the time embedding `.repeat`ed to every pixel, bilinear upsampling, and
# `nn.MultiheadAttention` called with its default `need_weights=True`.
#
# Two things differ, and neither changes the speed: the attention takes its size from its input (the
# original fixes it at construction, so only 64×64 images work), and a label of −1 means "no label", so
# one batch can hold both guidance branches once that change is switched on. The switches (`kernel`,
# `broadcast`) are class attributes, so one model can be measured with each change on or off.

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


# %% [markdown]
# The down and up blocks add the time embedding to every pixel. The original first copies it there
# with `.repeat`, a tensor as large as the block's output; `broadcast = True` adds it as (B, C, 1, 1)
# instead, with no copy:

# %%
#| export
def _time_map(emb, x, broadcast: bool):
    "(B, C) → (B, C, 1, 1) that broadcasts over H×W, or the original's (B, C, H, W) copy."
    emb = emb[:, :, None, None]
    return emb if broadcast else emb.repeat(1, 1, x.shape[-2], x.shape[-1])

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


# %% [markdown]
# The attention block asks `nn.MultiheadAttention` for its attention map, averaged over the heads, and
# throws it away. `kernel` chooses how it runs: 'weights' (the original call), 'no_weights'
# (`need_weights=False`) or 'sdpa' (the same weights around `F.scaled_dot_product_attention`).

# %%
#| export
class SeedAttention(nn.Module):
    "The original self-attention block, run as `kernel` says: 'weights' (the original), 'no_weights' or 'sdpa'."
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
        else: a, _ = self.mha(x_ln, x_ln, x_ln, need_weights=self.kernel == 'weights')   # the map: (B, HW, HW)
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
# It is the same network as minddpm's `seed` preset, block for block: only the names differ, and
# minddpm's label table has one more row, the null label, which the original expresses by adding no
# label at all (a zero row does the same). `seed_to_minddpm` renames the weights:

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
print('\n'.join(f"{k:38s} → {_rename(k)}" for k in list(seed_net.state_dict())[:4]))

# %% [markdown]
# With the weights renamed, both networks compute the same function, to float32 rounding, with labels,
# with the null label (−1) and with none at all:

# %%
x, t, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 10, 500, 999]), torch.tensor([3, -1, 7, 0])
with torch.no_grad(): e_seed, e_ours = seed_net(x, t, y), ours(x, t, y)
test_close(e_seed, e_ours, eps=1e-4)
with torch.no_grad(): test_close(seed_net(x, t), ours(x, t), eps=1e-4)
fig, ax = plt.subplots(figsize=(3.2, 3.2))
ax.scatter(e_seed.flatten()[::4], e_ours.flatten()[::4], s=1)
ax.set(xlabel='ε̂ of the original', ylabel="ε̂ of minddpm's seed preset", title=f'largest difference {(e_seed - e_ours).abs().max():.0e}');


# %% [markdown]
# The training step and the sampler are written out the same way. The step is float32 with no
# gradient clipping. It draws t from 1 to 999 (the original never trains t = 0) and drops the labels
# of the whole batch one time in ten. Its EMA loops over the parameters in Python, and before
# `step_start_ema` it reloads the whole state dict every step. The sampler runs the 999 steps
# t = 999 … 1, with two forward passes per guided step.
#
# `SeedSettings` holds the six changes lesson 09 measures, all off by default. `SeedTrainer` and
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
        self.opt.zero_grad(); self.scaler.scale(loss).backward()
        self.scaler.step(self.opt); self.scaler.update()
        self.ema_update(); self.sched.step()
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
# A few training steps on the bundled digits, at the start of a 1,000-step OneCycle schedule, and a few
# sampling steps, to see them run:

# %%
dl, _ = get_dataloaders('digits', 32, 8)
xb, yb = next(iter(dl))
trainer = SeedTrainer(SeedSettings(), 32, steps=1000)
losses = [trainer.step(xb, yb).item() for _ in range(3)]
x = seed_sample(trainer.model.eval(), yb[:2], (1, 32, 32), stop_after=2)
print(f"losses {', '.join(f'{l:.3f}' for l in losses)}; samples of shape {tuple(x.shape)}")
test_eq(x.shape, (2, 1, 32, 32))
