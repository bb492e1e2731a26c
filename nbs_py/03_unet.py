# %%
#| default_exp unet

# %% [markdown]
# # UNet
# > The ε-predicting network, block by block: sinusoidal time embedding, conv block, Down, Up, self-attention with scaled_dot_product_attention, and the assembled UNet for any image size and channel count

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/03_unet.ipynb)
# This lesson has no GPU-only cells: it ran top to bottom in 6 seconds on a 2-core CPU (measured); a Colab runtime is no slower.

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
import math

import torch
import torch.nn.functional as F
from torch import nn

# %%
#| hide
from fastcore.test import *
from minddpm.exercises import check   # the exercises at the end
import time
import matplotlib.pyplot as plt
from minddpm.data import get_datasets
from minddpm.forward import Diffusion
from minddpm.training import load_model
from minddpm.data import pick_device, pick_preset

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)              # the same pictures on every run

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # 'colab' sizes on a CUDA GPU, 'tiny' elsewhere


# %% [markdown]
# The network of a DDPM takes a noisy image $x_t$ and its timestep $t$ and predicts the noise
# $\varepsilon$ that was added (lesson 02). Input and output have the same shape, and the prediction
# for every pixel depends on the whole image, so the classic choice is a **UNet**: convolutions that
# halve the resolution level by level (seeing more context at each), a bottleneck, then the way back
# up, where each level concatenates the features of the same resolution from the way down (the skip
# connections carry the fine detail). Every block also learns how to use $t$.
#
# This lesson builds the recipe of the well-known conditional DDPM notebooks block by block, keeping
# their layout so the parameter counts can be compared, and fixing two things that make the originals
# slow and fragile: the time embedding is broadcast instead of `.repeat`ed, and attention runs on
# `F.scaled_dot_product_attention` at any image size. (Lesson 15 builds the other network today's large image models
# use, a transformer that works on patches of the image, and measures it against this one.)
#
# ## Time embedding
#
# The network needs $t$ as a vector, not as one number. The sinusoidal embedding of the Transformer
# paper, which DDPM borrows, maps $t$ to $\sin(t\,\omega_i)$ and $\cos(t\,\omega_i)$ at `dim/2`
# frequencies $\omega_i = 10000^{-i/(\mathrm{dim}/2)}$, from one cycle per step down to one per ~60,000
# steps: nearby timesteps get similar vectors, distant ones different vectors, and every
# $t$ in $\{0,\dots,999\}$ gets its own.

# %%
#| exports
def timestep_embedding(t: torch.Tensor,              # (B,) timesteps, integer or float
                       dim: int,                     # embedding size; even (an odd dim gives dim − 1 columns)
                       max_period: float = 10000.0,  # frequencies run from 1 down to ≈1/max_period radians per step
                       ) -> torch.Tensor:
    "Sinusoidal embedding (B, dim) of timesteps (B,): sin and cos of t at dim/2 geometrically spaced frequencies."
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]                       # (B, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)        # (B, dim)


# %%
emb = timestep_embedding(torch.arange(1000), 256)
sim = F.normalize(emb, dim=1) @ F.normalize(emb, dim=1).T
fig, axs = plt.subplots(1, 2, figsize=(7, 2.2), width_ratios=(1.6, 1))
axs[0].imshow(emb[::5, ::2].T, aspect='auto', cmap='RdBu', interpolation='nearest', extent=(0, 1000, 256, 0))  # every 5th t, 2nd dim
axs[0].set(title='timestep_embedding(t, 256)', xlabel='t', ylabel='dimension')
axs[1].imshow(sim[::5, ::5], cmap='viridis', extent=(0, 1000, 1000, 0)); axs[1].set(title='cosine similarity between t and t′', xlabel='t', ylabel='t′')
fig.tight_layout()


# %% [markdown]
# The DDPM paper puts a small MLP after the sinusoids (two linear layers with a swish between), so the
# network can learn which features of $t$ matter, once, for all blocks. The original notebooks skip
# it: each block gets only its own `Linear(SiLU(embedding))`, a single linear map of fixed sinusoids.
# `TimeEmbedding` offers both; the `seed` preset below leaves the MLP out to match the originals' layout
# and parameter count, the `tiny` one keeps it.

# %%
#| exports
class TimeEmbedding(nn.Module):
    "Sinusoidal embedding of t, optionally followed by DDPM's MLP (dim → 4·dim → dim, SiLU between)."
    def __init__(self, dim: int,     # embedding size, of the sinusoids and of the output
                 mlp: bool = True):  # DDPM's MLP after the sinusoids; False: the bare sinusoids (as the originals)
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim)) if mlp else nn.Identity()
    def forward(self, t: torch.Tensor) -> torch.Tensor:
        e, w = timestep_embedding(t, self.dim), next(self.mlp.parameters(), None)
        return self.mlp(e if w is None else e.to(w.dtype))   # float32 sinusoids into the weights' dtype (bf16 weights: bf16)


# %%
def n_params(m: nn.Module) -> int: return sum(p.numel() for p in m.parameters())
test_eq(TimeEmbedding(256)(torch.tensor([3, 7])).shape, (2, 256))
print(f"time MLP at dim 256: {n_params(TimeEmbedding(256)):,} parameters; without it: {n_params(TimeEmbedding(256, mlp=False))}")


# %% [markdown]
# ## Conv block
#
# Two 3×3 convolutions, each followed by GroupNorm, with GELU between. With `residual=True` the block
# learns a change to its input, $\mathrm{gelu}(x + f(x))$, which keeps gradients flowing through deep
# stacks. The convolutions have no bias because the GroupNorm right after removes any constant anyway.
# The originals use `GroupNorm(1, C)` (one group: normalise over all channels together); `groups` sets it.

# %%
#| exports
class ConvBlock(nn.Module):
    "Conv3×3 → GroupNorm → GELU → Conv3×3 → GroupNorm; with `residual`, gelu(x + block(x))."
    def __init__(self, c_in: int,               # input channels
                 c_out: int,                    # output channels
                 c_mid: int | None = None,      # channels between the two convs; default `c_out`
                 residual: bool = False,        # return gelu(x + block(x)); needs c_in == c_out
                 groups: int = 1):              # GroupNorm groups, reduced to gcd(groups, channels)
        super().__init__()
        c_mid = c_mid or c_out
        if residual and c_in != c_out: raise ValueError(f"a residual ConvBlock needs c_in == c_out, got {c_in} → {c_out}")
        self.residual = residual
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_mid, 3, padding=1, bias=False), nn.GroupNorm(math.gcd(groups, c_mid), c_mid), nn.GELU(),
            nn.Conv2d(c_mid, c_out, 3, padding=1, bias=False), nn.GroupNorm(math.gcd(groups, c_out), c_out))
    def forward(self, x): return F.gelu(x + self.net(x)) if self.residual else self.net(x)


# %%
print(f"ConvBlock(64, 128): {n_params(ConvBlock(64, 128)):,} parameters = 9·64·128 + 9·128·128 weights + 2·(2·128) norm")

# %% [markdown]
# What a conv block computes, on a trained one: minddpm ships the network this lesson builds, trained on the
# bundled digits (lesson 07). Its first block lifts a noisy digit to 32 channels at full size; here are eight of
# them (red above the channel's mean, blue below). Each is one 3×3-then-3×3 filter's response: strokes, edges,
# background, and the noise.

# %%
trained = load_model()                            # the shipped network, built from these blocks: ConditionalUNet (lesson 04)
_, val = get_datasets('digits', 16)
digit, label = val[0][0][None], torch.tensor([val.labels[0]])
xt_digit, _ = trained.diffusion.add_noise(digit, 100, torch.randn(digit.shape, generator=torch.Generator().manual_seed(0)))
with torch.no_grad(): feats = trained.model.inc(xt_digit)[0]      # (32, 16, 16)
fig, axs = plt.subplots(1, 9, figsize=(9, 1.3))
axs[0].imshow(xt_digit[0, 0], cmap='gray'); axs[0].set_title('x_t, t = 100', fontsize=8)
for i, ax in enumerate(axs[1:]):
    f = feats[i] - feats[i].mean()
    ax.imshow(f, cmap='RdBu_r', vmin=-f.abs().max(), vmax=f.abs().max()); ax.set_title(f'channel {i}', fontsize=8)
for ax in axs: ax.axis('off')


# %% [markdown]
# ## Down and Up
#
# `Down` halves the resolution with a 2×2 max-pool, then runs a residual conv block and a conv block
# that changes the channel count. Then it adds the time embedding, projected to its channel count:
# one number per channel, the same at every pixel. The originals build that by `.repeat`ing the
# (B, C) vector to a full (B, C, H, W) tensor, which allocates and then adds a copy the size of the
# feature map; indexing it as (B, C, 1, 1) lets PyTorch **broadcast** the add with no copy at all.

# %%
#| exports
class Down(nn.Module):
    "Max-pool to half the resolution, a residual conv block, a conv block to `c_out`, plus the time embedding."
    def __init__(self, c_in: int,   # input channels
                 c_out: int,        # output channels
                 emb_dim: int,      # size of the time embedding passed to forward
                 groups: int = 1):  # GroupNorm groups of the conv blocks
        super().__init__()
        self.convs = nn.Sequential(nn.MaxPool2d(2), ConvBlock(c_in, c_in, residual=True, groups=groups),
                                   ConvBlock(c_in, c_out, groups=groups))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))
    def forward(self, x, emb):
        return self.convs(x) + self.emb(emb)[:, :, None, None]  # (B, C, 1, 1): broadcast over H×W, never repeated


# %% [markdown]
# `Up` doubles the resolution (bilinear), concatenates the skip connection from the same level of the
# way down, and runs the same pair of conv blocks (the second one narrowing through `c_in // 2`).

# %%
#| exports
class Up(nn.Module):
    "Bilinear ×2, concatenate the skip features, a residual conv block, a conv block to `c_out`, plus the time embedding."
    def __init__(self, c_in: int,   # channels after the concatenation: the skip's plus the input's
                 c_out: int,        # output channels
                 emb_dim: int,      # size of the time embedding passed to forward
                 groups: int = 1):  # GroupNorm groups of the conv blocks
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)
        self.convs = nn.Sequential(ConvBlock(c_in, c_in, residual=True, groups=groups),
                                   ConvBlock(c_in, c_out, c_in // 2, groups=groups))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, c_out))
    def forward(self, x, skip, emb):
        x = torch.cat([skip, self.up(x)], dim=1)                 # (B, C_skip + C, H, W)
        return self.convs(x) + self.emb(emb)[:, :, None, None]


# %% [markdown]
# The same trained network, one block after the other: the mean activation magnitude over each block's channels,
# for the noisy digit above. Each `Down` halves the resolution, each `Up` doubles it back, and the way up gets its
# detail from the skip connections:

# %%
m = trained.model
blocks = {'inc': m.inc, **{f'down {i + 1}': b for i, b in enumerate(m.downs)}, 'mid': m.mid, **{f'up {i + 1}': b for i, b in enumerate(m.ups)}}
outs = {}
hooks = [b.register_forward_hook(lambda mod, i, o, n=n: outs.__setitem__(n, o[0])) for n, b in blocks.items()]
with torch.no_grad(): m(xt_digit, torch.tensor([100]), label)
for h in hooks: h.remove()
fig, axs = plt.subplots(1, len(outs), figsize=(9, 1.6))
for ax, (name, o) in zip(axs, outs.items()):
    ax.imshow(o.abs().mean(0), cmap='magma'); ax.set_title(f'{name}\n{"×".join(map(str, o.shape))}', fontsize=8); ax.axis('off')
print(f"Down(64, 128): {n_params(Down(64, 128, 256)):,} parameters; Up(192, 64): {n_params(Up(192, 64, 256)):,}")

# %% [markdown]
# What broadcasting saves, measured on this machine with the add alone (the seed's
# `emb[:, :, None, None].repeat(1, 1, H, W)` against the (B, C, 1, 1) view) at a 32×32, 128-channel level:

# %%
feat, proj = torch.randn(16, 128, 32, 32), torch.randn(16, 128)
def timed(f, n=20):
    f(); t0 = time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter() - t0) / n
t_repeat = timed(lambda: feat + proj[:, :, None, None].repeat(1, 1, 32, 32))
t_bcast = timed(lambda: feat + proj[:, :, None, None])
print(f"repeat: {t_repeat * 1e3:.2f} ms, broadcast: {t_bcast * 1e3:.2f} ms ({t_repeat / t_bcast:.1f}× faster), "
      f"and no extra {feat.numel() * 4 / 2**20:.0f} MiB tensor")
test_close(feat + proj[:, :, None, None].repeat(1, 1, 32, 32), feat + proj[:, :, None, None])


# %% [markdown]
# ## Self-attention
#
# Convolutions see a 3×3 neighbourhood; attention lets every position look at every other one, so the
# top of a digit can agree with its bottom. The block flattens the H×W positions into a sequence of
# C-dimensional tokens, applies multi-head self-attention and then a small feed-forward layer, each
# with a LayerNorm before it and a residual around it, and folds the tokens back into an image.
#
# The originals call `nn.MultiheadAttention` with its default `need_weights=True`, which makes PyTorch
# take its slow path and build the full attention map, heads × (HW)² numbers per image: at 64×64 that is
# 4 × 4096² × 4 bytes ≈ 268 MB per image, the reason their batch size stops at 10–14.
# `F.scaled_dot_product_attention` computes the same thing without returning the map, with fused
# kernels (FlashAttention, memory-efficient attention) where the hardware has them.

# %%
#| exports
class SelfAttention(nn.Module):
    "Multi-head self-attention over the H×W positions (F.scaled_dot_product_attention), then a feed-forward layer; both pre-norm and residual."
    def __init__(self, channels: int,  # channels C of the feature map, the size of each position's token
                 heads: int = 4):      # attention heads; must divide `channels`
        super().__init__()
        if channels % heads: raise ValueError(f"{channels} channels cannot be split into {heads} attention heads; use a divisor of {channels}")
        self.heads = heads
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.ff = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, channels), nn.GELU(), nn.Linear(channels, channels))

    def forward(self, x):
        B, C, H, W = x.shape
        h = x.flatten(2).transpose(1, 2)                                    # (B, HW, C): one token per position
        q, k, v = self.qkv(self.norm(h)).view(B, H * W, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # 3 × (B, nh, HW, hs)
        a = F.scaled_dot_product_attention(q, k, v)                         # (B, nh, HW, hs)
        h = h + self.proj(a.transpose(1, 2).reshape(B, H * W, C))          # back to (B, HW, C)
        h = h + self.ff(h)
        return h.transpose(1, 2).reshape(B, C, H, W)


# %% [markdown]
# It computes exactly what the originals' block computes. Copy the weights of an `nn.MultiheadAttention`
# version of the same block into ours and compare:

# %%
sa = SelfAttention(64)
mha = nn.MultiheadAttention(64, 4, batch_first=True)
with torch.no_grad():
    mha.in_proj_weight.copy_(sa.qkv.weight); mha.in_proj_bias.copy_(sa.qkv.bias)
    mha.out_proj.weight.copy_(sa.proj.weight); mha.out_proj.bias.copy_(sa.proj.bias)
def seed_attention(x):  # the originals' forward, with their need_weights=True default
    B, C, H, W = x.shape
    h = x.flatten(2).transpose(1, 2)
    hn = sa.norm(h)
    h = mha(hn, hn, hn)[0] + h
    return (sa.ff(h) + h).transpose(1, 2).reshape(B, C, H, W)
xa = torch.randn(4, 64, 16, 16)
test_close(sa(xa), seed_attention(xa), eps=1e-5)
test_eq(n_params(sa), n_params(mha) + n_params(sa.norm) + n_params(sa.ff))
print(f"SelfAttention(64): {n_params(sa):,} parameters, the same as the originals' block")

# %% [markdown]
# And the time and memory it saves, forward and backward at 32×32 (1,024 tokens), on this machine:

# %%
xa = torch.randn(8, 64, 32, 32, requires_grad=True)
def fwd_bwd(f): return lambda: f(xa).sum().backward()
t_seed, t_sdpa = timed(fwd_bwd(seed_attention), 5), timed(fwd_bwd(sa), 5)
fig, ax = plt.subplots(figsize=(5, 1.4))
ax.barh(['nn.MultiheadAttention\n(need_weights=True)', 'scaled_dot_product_attention'], [t_seed * 1e3, t_sdpa * 1e3], color=['C7', 'C0'])
ax.set(xlabel='ms per forward + backward, batch 8, 64 channels, 32×32')
ax.set_title(f'{t_seed / t_sdpa:.1f}× faster on {"CUDA" if torch.cuda.is_available() else "the CPU"}; '
             f'the map it no longer returns: {8 * 4 * 1024**2 * 4 / 2**20:.0f} MiB', fontsize=9);


# %% [markdown]
# ## The assembled UNet
#
# The levels are described by a base width and channel multipliers: `base=64, mults=(1, 2, 4, 4)` gives
# the originals' 64 → 128 → 256 → 256. An input conv block lifts the image to `base` channels; each
# further multiplier adds a `Down` (so there are `len(mults) - 1` halvings); the bottleneck is two conv
# blocks at the lowest resolution; an `Up` per `Down` comes back, each taking the skip features of its
# level; a 1×1 conv maps to the output channels. `attn_factors` says at which downsampling factors a
# `SelfAttention` follows a `Down` or an `Up`: the originals attend at every one of them, 1 (full
# resolution, on the way up) to 8.
#
# The image size is free: any height and width divisible by $2^{\text{halvings}}$ works, and anything
# else is refused before the first layer with the sizes that would work. (The originals hard-code their
# attention sizes for 64×64 inputs and crash on anything else.) That check, `check_input`, lives in a hidden cell
# (`minddpm/unet.py` shows it), with the one on `mults`.

# %%
#| hide
#| export
def _check_images(x: torch.Tensor, channels: int, multiple: int, network: str, why: str):
    "Refuse anything but images (B, `channels`, H, W) with H and W multiples of `multiple`, naming the sizes that work."
    if x.ndim != 4: raise ValueError(f"expected images (B, C, H, W), got a tensor of shape {tuple(x.shape)}")
    if x.shape[1] != channels: raise ValueError(f"this {network} takes {channels}-channel images, got {x.shape[1]} channels")
    if x.shape[-2] % multiple or x.shape[-1] % multiple:
        sizes = ', '.join(str(multiple * k) for k in range(1, 9))
        raise ValueError(f"image size {x.shape[-2]}×{x.shape[-1]} does not fit: height and width must be multiples of {multiple} "
                         f"({why}); valid sizes: {sizes}, …")

def _check_timesteps(t, x: torch.Tensor) -> torch.Tensor:
    "`t` as (B,) timesteps on x's device: B of them, or one number (or 0-d tensor) for every image; else a `ValueError`."
    t = torch.as_tensor(t, device=x.device)
    if t.ndim == 0: t = t.expand(len(x)).contiguous()
    if t.shape != (len(x),) or t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"t must hold one timestep per image, a tensor of shape ({len(x)},), or one number for all {len(x)}; "
                         f"got a {t.dtype} tensor of shape {tuple(t.shape)}")
    return t

class _UNetChecks:
    "Argument checks of `UNet`: each raises a `ValueError` that names what was wrong and what would work."
    def check_timesteps(self, t, x: torch.Tensor) -> torch.Tensor:
        "`t` as (B,) timesteps for the images `x`: B of them, or one number for all; else a `ValueError` naming the shape wanted."
        return _check_timesteps(t, x)

    @staticmethod
    def check_mults(mults) -> int:
        "The number of halvings, len(mults) − 1, if it is at least one."
        if len(mults) < 2: raise ValueError(f"mults needs at least two entries (one halving), got {mults}")
        return len(mults) - 1

    def check_input(self, x: torch.Tensor):
        "Refuse inputs the UNet cannot take, naming what it can."
        _check_images(x, self.in_channels, 2 ** self.levels, 'UNet', f'this UNet halves them {self.levels} times')

# %%
#| exports
class UNet(_UNetChecks, nn.Module):
    "ε-prediction UNet: conv blocks, Down/Up with time embedding, self-attention at chosen downsampling factors."
    def __init__(self, in_channels: int = 3,     # image channels in
                 out_channels: int | None = None, # channels predicted; default `in_channels`
                 base: int = 64,                  # channels after the input block
                 mults=(1, 2, 4, 4),              # channels per level, as multiples of `base`; len(mults) − 1 halvings
                 attn_factors=(1, 2, 4, 8),       # downsampling factors (1 = full size) whose blocks get self-attention
                 time_dim: int = 256,             # size of the time embedding
                 time_mlp: bool = True,           # DDPM's MLP after the sinusoids (the originals have none)
                 heads: int = 4,                  # attention heads
                 groups: int = 1):                # GroupNorm groups (the originals use 1)
        super().__init__()
        self.in_channels, self.time_dim, self.levels = in_channels, time_dim, self.check_mults(mults)
        ch = [base * m for m in mults]                   # channels at each level
        attn = lambda factor, c: SelfAttention(c, heads) if factor in attn_factors else nn.Identity()
        self.time_emb = TimeEmbedding(time_dim, time_mlp)
        self.inc = ConvBlock(in_channels, ch[0], groups=groups)
        self.downs, self.down_attn = nn.ModuleList(), nn.ModuleList()
        for level in range(1, self.levels + 1):          # level k works at 1/2^k of the input size
            self.downs.append(Down(ch[level - 1], ch[level], time_dim, groups)); self.down_attn.append(attn(2 ** level, ch[level]))
        self.mid = nn.Sequential(ConvBlock(ch[-1], ch[-1], groups=groups), ConvBlock(ch[-1], ch[-1], groups=groups))
        self.ups, self.up_attn, c = nn.ModuleList(), nn.ModuleList(), ch[-1]
        for level in reversed(range(self.levels)):       # back up to 1/2^level, joining that level's skip
            c_out = ch[max(level - 1, 0)]                  # narrow to the width of the next skip (level 0's at the end)
            self.ups.append(Up(c + ch[level], c_out, time_dim, groups)); self.up_attn.append(attn(2 ** level, c_out))
            c = c_out
        self.outc = nn.Conv2d(ch[0], out_channels or in_channels, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        "Predicted noise for images `x` (B, C, H, W) at timesteps `t` (B,), or one timestep for all."
        self.check_input(x)
        return self.body(x, self.time_emb(self.check_timesteps(t, x)))

    def body(self, x, emb):
        "The network proper, given the (B, time_dim) embedding of whatever conditions it: t, and later labels."
        emb, skips = emb.to(x.dtype), []     # the cast: a no-op unless x is bf16 (sampling, lesson 05) and emb is not
        x = self.inc(x)
        for down, attn in zip(self.downs, self.down_attn):
            skips.append(x); x = attn(down(x, emb))      # each level's input waits for the Up of its size
        x = self.mid(x)                                  # the deepest features go through the bottleneck, not a skip
        for up, attn in zip(self.ups, self.up_attn): x = attn(up(x, skips.pop(), emb))
        return self.outc(x)


# %% [markdown]
# The shapes as a 32×32 RGB batch flows through a UNet of the originals' layout (the defaults), drawn from forward
# hooks on every block: the height of a box is the block's resolution, its width its channel count, and the
# arrows are the skip connections that join two levels of the same size.

# %%
net = UNet(in_channels=3)
parts = {'inc': net.inc, **{f'down{i + 1}': d for i, d in enumerate(net.downs)}, 'mid': net.mid,
         **{f'up{i + 1}': u for i, u in enumerate(net.ups)}, 'outc': net.outc}
shapes = {}
hooks = [b.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:]))) for n, b in parts.items()]
with torch.no_grad(): out = net(torch.randn(2, 3, 32, 32), torch.tensor([10, 500]))
for h in hooks: h.remove()
fig, ax = plt.subplots(figsize=(9, 2.6))
depth = {name: math.log2(32 // h) for name, (c, h, w) in shapes.items()}
for i, (name, (c, h, w)) in enumerate(shapes.items()):
    ax.add_patch(plt.Rectangle((i - c / 640, -depth[name] - h / 80), c / 320, h / 40, color='C0', alpha=.7))
    ax.text(i, -depth[name] - h / 80 - .12, f'{name}\n{c}×{h}×{w}', ha='center', va='top', fontsize=7)
for skip, up in (('inc', 'up3'), ('down1', 'up2'), ('down2', 'up1')):
    i, j = list(shapes).index(skip), list(shapes).index(up)
    ax.annotate('', (j - .3, -depth[up]), (i + .3, -depth[skip]), arrowprops=dict(arrowstyle='->', color='C7'))
ax.set(xlim=(-.7, len(shapes) - .3), ylim=(-4, .6)); ax.axis('off'); ax.set_title(f'input (2, 3, 32, 32) → output {tuple(out.shape)}', fontsize=9);

# %% [markdown]
# ## Presets
#
# `seed` is the originals' layout: 64-128-256-256 channels, attention at every level, time dimension
# 256 with no MLP, and the two-conv 256-channel bottleneck of the version the W&B article shows. Its
# parameter count should match theirs, 15.66 M (23.3 M for the variant with a 512-channel bottleneck).
# `tiny` is small enough to train in minutes on a CPU, on the bundled digits at 16×16.

# %%
#| exports
UNET_PRESETS = {
    'seed': dict(base=64, mults=(1, 2, 4, 4), attn_factors=(1, 2, 4, 8), time_dim=256, time_mlp=False, groups=1),
    'tiny': dict(base=32, mults=(1, 2, 2), attn_factors=(2, 4), time_dim=128, time_mlp=True, groups=8),
}

def unet_preset(name: str,     # 'seed' (the originals' layout) or 'tiny' (trains in minutes on a CPU)
                **overrides    # `UNet` keyword arguments that replace or add to the preset's
                ) -> dict:     # keyword arguments for `UNet`
    "Keyword arguments of a UNet preset (`seed` or `tiny`), with `overrides` on top."
    if name not in UNET_PRESETS: raise ValueError(f"Unknown UNet preset {name!r}; use one of {', '.join(UNET_PRESETS)}")
    return {**UNET_PRESETS[name], **overrides}


# %%
seed = UNet(**unet_preset('seed', in_channels=3))
tiny = UNet(**unet_preset('tiny', in_channels=1))
print(f"seed: {n_params(seed) / 1e6:.2f} M parameters (the originals: 15.66 M); tiny: {n_params(tiny) / 1e6:.2f} M")

# %% [markdown]
# Where the seed's parameters are: most in the deep, wide levels, where a 3×3 conv costs $9C^2$.

# %%
parts = {'inc': seed.inc, **{f'down{i + 1}': d for i, d in enumerate(seed.downs)},
         **{f'attn↓{i + 1}': a for i, a in enumerate(seed.down_attn)}, 'mid': seed.mid,
         **{f'up{i + 1}': u for i, u in enumerate(seed.ups)}, **{f'attn↑{i + 1}': a for i, a in enumerate(seed.up_attn)},
         'outc': seed.outc}
fig, ax = plt.subplots(figsize=(9, 2))
ax.bar(list(parts), [n_params(m) / 1e6 for m in parts.values()])
ax.set(ylabel='M parameters', title='seed preset, parameters per block'); ax.tick_params(axis='x', labelsize=8);

# %% [markdown]
# Any size divisible by $2^{\text{halvings}}$ and any channel count work (the tiny UNet halves twice, so
# multiples of 4), and everything else is refused with what would work:

# %%
print([tuple(UNet(**unet_preset('tiny', in_channels=c))(torch.randn(1, c, h, w), torch.tensor([3])).shape)
       for c, h, w in ((1, 16, 16), (3, 32, 32), (1, 12, 20))])
try: seed(torch.randn(1, 3, 30, 30), torch.tensor([1]))
except ValueError as e: print(e)

# %% [markdown]
# ## The same network, trained
#
# Lesson 07 trains this UNet (the `tiny` preset, with the class labels of lesson 04) on the bundled
# digits, and minddpm ships the result. Its job is to find the noise: the shipped one predicts $v$, from which
# the noise $\hat\varepsilon$ is read with lesson 02's table (`diffusion.predictions`). How well it does depends
# on $t$: with little noise, the few pixels of noise are hard to tell from fine strokes; with a lot, the noise
# is almost all there is in $x_t$. Against the untrained network, its output taken as $\hat\varepsilon$, on
# held-out digits:

# %%
n_params = lambda m: sum(p.numel() for n, p in m.named_parameters() if not n.startswith('label_emb'))  # lesson 04 adds a label embedding
test_eq(n_params(trained.model), n_params(UNet(**unet_preset('tiny', in_channels=1))))
_, val = get_datasets('digits', 16)
xv = torch.stack([val[i][0] for i in range(len(val))]); yv = val.labels
untrained = type(trained.model)(10, **unet_preset('tiny', in_channels=1)).eval()
ts = [0, 10, 30, 100, 200, 400, 600, 800, 999]
g = torch.Generator().manual_seed(0)
errs = {'trained': [], 'untrained': []}
with torch.no_grad():
    for t in ts:
        tt = torch.full((len(xv),), t)
        xt, eps = trained.diffusion.add_noise(xv, tt, torch.randn(xv.shape, generator=g))
        for name, net, diffusion in (('trained', trained.model, trained.diffusion), ('untrained', untrained, Diffusion())):
            eps_hat, _ = diffusion.predictions(xt, tt, net(xt, tt, yv))   # Diffusion(): the output is ε̂ itself
            errs[name].append(F.mse_loss(eps_hat, eps).item())
fig, ax = plt.subplots(figsize=(6, 2.4))
for name, e in errs.items(): ax.plot(ts, e, 'o-', label=name)
ax.set(xlabel='t', ylabel='ε-MSE (held-out digits)', yscale='log'); ax.legend(fontsize=8);

# %%
#| hide
assert max(errs['trained']) < 0.5 < min(errs['untrained'])   # it learned, at every t
assert errs['trained'][0] > errs['trained'][-1]               # and the low-noise end is the hard one

# %% [markdown]
# ## Exercises
#
# Write each function in place of its `...` and run its cell: `check` prints ✓, or where your answer differs and a hint
# ([how the checks work](exercises.ipynb)). Keep the stub's parameter names (`check` passes its inputs by name) and
# return the inputs' dtype unless the stub asks for another. Solutions: `tests/solutions/` in the course's repository.
#
# 1. **The time embedding.** Write the sinusoidal embedding of timesteps `t` (B,) into `dim` numbers each, (B, dim), as
#    `timestep_embedding` does: sines first, then cosines.

# %%
def sinusoidal_embedding(t, dim):   # (B,) timesteps, an even dim
    ...                              # return (B, dim) float32

check(sinusoidal_embedding)

# %% [markdown]
# 2. **Count before you build.** Without building it, how many parameters does `ConvBlock(c_in, c_out)` have (its
#    convolutions have no bias; its GroupNorms a scale and a shift per channel)? Return the count as an int. Then use it
#    to say which block of the `seed` UNet's bar chart above holds the most.

# %%
def conv_block_params(c_in, c_out):   # channels in and out
    ...                                # return the number of parameters, an int

check(conv_block_params)
