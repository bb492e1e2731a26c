# %%
#| default_exp forward

# %% [markdown]
# # Forward process
# > Noising an image to any step in one go, checked against the step-by-step chain, and a scrubber that slides through t in Colab and on this page

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/02_forward.ipynb)
# This lesson has no GPU-only cells: it ran top to bottom in 12 seconds on a 2-core CPU (measured); a Colab runtime is no slower.

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
from numbers import Integral

import matplotlib.pyplot as plt
import torch

from minddpm.data import load_bundled, resize_uint8, to_uint8, to_unit_range
from minddpm.schedule import NoiseSchedule
from minddpm.scrubber import Scrubber, fig_to_png

# %%
#| hide
from fastcore.test import *
from minddpm.exercises import check   # the exercises at the end
from minddpm.device import pick_device, pick_preset

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # 'colab' sizes on a CUDA GPU, 'tiny' elsewhere

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)              # the same pictures on every run

# %%
from minddpm.data import show_images        # lesson 00
from minddpm.training import load_model     # the shipped model that lesson 07 trains

# %% [markdown]
# The forward process $q$ is the easy half of diffusion: no learning, just noise. One step is
# $x_t = \sqrt{\alpha_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon_t$, with lesson 01's symbols: $\beta_t$ the noise
# added at step $t$, $\alpha_t = 1-\beta_t$, and $\bar\alpha_t = \alpha_1\alpha_2\cdots\alpha_t$ what is left of the
# image after $t$ steps. (The maths counts steps from 1 to $T$ as the paper does; the code's `t` is the
# 0-indexed array position, so code `t` is the paper's $t+1$.) Training needs $x_t$ at a random
# $t$ for every image of every batch, and walking the chain $t$ steps each time would cost up to 1000
# steps per image. It does not have to:
#
# ## The closed form
#
# Two steps in a row, with independent noises, give
#
# $$x_{t} = \sqrt{\alpha_t}\big(\sqrt{\alpha_{t-1}}\,x_{t-2} + \sqrt{\beta_{t-1}}\,\varepsilon_{t-1}\big) + \sqrt{\beta_t}\,\varepsilon_t
#        = \sqrt{\alpha_t\alpha_{t-1}}\;x_{t-2} + \underbrace{\sqrt{\alpha_t\beta_{t-1}}\,\varepsilon_{t-1} + \sqrt{\beta_t}\,\varepsilon_t}_{\text{Gaussian, variance } \alpha_t(1-\alpha_{t-1}) + 1-\alpha_t \;=\; 1-\alpha_t\alpha_{t-1}}.$$
#
# The sum of two independent Gaussians is one Gaussian whose variance is the sum of theirs, and the
# sum simplifies: $\alpha_t(1-\alpha_{t-1}) + (1-\alpha_t) = 1 - \alpha_t\alpha_{t-1}$. Repeating the argument
# down to the clean image $x_0$ multiplies the $\alpha$s together into $\bar\alpha_t$ and gives DDPM's eq. 4:
#
# $$q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t)\,I\big), \qquad
#   x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon,\quad \varepsilon\sim\mathcal N(0, I).$$
#
# One multiply-add reaches any step. `ForwardProcess` is the schedule of the last lesson plus the three
# things training needs from it: `scales`, the two factors $\sqrt{\bar\alpha_t}$ and $\sqrt{1-\bar\alpha_t}$ shaped to
# broadcast over a batch of images; `add_noise`, the equation above; and `sample_timesteps`, a uniform
# random step per image. Its `t` is the 0-indexed array
# index of the last lesson: `add_noise(x0, t)` is the paper's $x_{t+1}$, noised $t+1$ times. The checks
# on its arguments (`check_timesteps`, `check_noise`) live in a hidden cell of this notebook
# (`minddpm/forward.py` shows them): they turn the silent failures of the originals, a float timestep
# indexing nothing or a 1-indexed 1000 running off the end, into messages that say what is allowed.

# %%
#| hide
#| export
class _ForwardChecks:
    "Argument checks of `ForwardProcess` and `Diffusion`: each returns what it checked, or raises a `ValueError` saying what is allowed."
    def check_timesteps(self, t, batch: int) -> torch.Tensor:
        "`t` (an int, or `batch` of them) as a (batch,) int64 tensor on the schedule's device."
        allowed = f"integer timesteps in [0, {self.T - 1}] (0-indexed)"
        if isinstance(t, bool) or (not isinstance(t, (Integral, torch.Tensor))):
            raise ValueError(f"t must be {allowed}, got {t!r}")
        t = torch.as_tensor(t, device=self.betas.device)
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"t must be {allowed}, got a {t.dtype} tensor")
        if t.ndim == 0: t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t has shape {tuple(t.shape)} for a batch of {batch} images; pass one timestep per image, shape ({batch},), or a single int")
        if len(t) and (t.min() < 0 or t.max() >= self.T):
            raise ValueError(f"t must be {allowed}, got values from {int(t.min())} to {int(t.max())}")
        return t.long()

    def check_noise(self, noise: torch.Tensor | None, x0: torch.Tensor) -> torch.Tensor:
        "`noise` if it has x0's shape; fresh ε ~ N(0, I) when None."
        if noise is None: return torch.randn_like(x0)
        if noise.shape != x0.shape: raise ValueError(f"noise has shape {tuple(noise.shape)}; it must match x0's {tuple(x0.shape)}")
        return noise

    @staticmethod
    def check_choice(what: str, value, allowed):
        "`value` if it is one of `allowed`."
        if value not in allowed: raise ValueError(f"Unknown {what} {value!r}; use one of {', '.join(allowed)}")
        return value

    @staticmethod
    def check_weighting(weighting: str, gamma) -> str:
        "`weighting` if it is known and, for 'min_snr', γ is a finite number above 0 (NaN is not)."
        _ForwardChecks.check_choice('weighting', weighting, WEIGHTINGS)
        if weighting == 'min_snr' and not (isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and 0 < gamma < float('inf')):
            raise ValueError(f"min-SNR's gamma must be a finite number greater than 0, got {gamma!r}")
        return weighting

# %%
#| exports
class ForwardProcess(_ForwardChecks, NoiseSchedule):
    "A `NoiseSchedule` with the forward process q(x_t | x_0): noise images to any step t ∈ {0,…,T−1} in one go."
    def scales(self, t,                 # timesteps: an int, or B of them (int tensor)
               x: torch.Tensor,         # the (B, C, H, W) images they belong to
               ) -> tuple[torch.Tensor, torch.Tensor]:
        "(√ᾱ_t, √(1−ᾱ_t)) at the checked timesteps `t`, each (B, 1, …, 1) to broadcast over `x`'s other dimensions."
        t, per_image = self.check_timesteps(t, len(x)), (-1,) + (1,) * (x.ndim - 1)
        return self.sqrt_alpha_bars[t].view(per_image), self.sqrt_one_minus_alpha_bars[t].view(per_image)

    def add_noise(self, x0: torch.Tensor,               # clean images (B, C, H, W) in [-1, 1]
                  t,                                    # timesteps: an int, or B of them (int tensor)
                  noise: torch.Tensor | None = None):   # ε with x0's shape; drawn when None
        "x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε (DDPM eq. 4); returns (x_t, ε)."
        a, s = self.scales(t, x0)          # √ᾱ_t and √(1−ᾱ_t), (B, 1, 1, 1): broadcast over C, H, W, never repeated
        eps = self.check_noise(noise, x0)
        return a * x0 + s * eps, eps

    def sample_timesteps(self, n: int,                                   # how many: one per image of a batch
                         generator: torch.Generator | None = None,       # the draws' generator; None: the global one
                         ) -> torch.Tensor:                              # (n,) int64 on the schedule's device
        "`n` timesteps drawn uniformly from {0,…,T−1}, every step included (the seed article's code draws from 1 to T−1 of the same arrays: never the first step)."
        return torch.randint(0, self.T, (n,), device=self.betas.device, generator=generator)

# %%
q = ForwardProcess('linear')
digits = load_bundled()
x0 = to_unit_range(resize_uint8(digits['images'][:8], 16))
ts = torch.tensor([0, 50, 100, 200, 300, 500, 700, 999])
xt, eps = q.add_noise(x0[:1].expand(8, -1, -1, -1), ts)
show_images(xt, ts, ncols=8, title='one digit noised to eight timesteps, each titled by its t (linear schedule)')
q.sample_timesteps(8)   # what training draws: one uniform timestep per image

# %% [markdown]
# ## The closed form against the chain
#
# The derivation says the two ways of reaching step $t$ give the same distribution. Check it on
# real images: take two bundled digits, run 2,000 independent chains of one-step updates per pixel
# from each, and compare the per-pixel mean and variance at several $t$ with the closed form's
# $\sqrt{\bar\alpha_t}\,x_0$ and $1-\bar\alpha_t$.

# %%
#| exports
def noise_step(diffusion: NoiseSchedule,  # the schedule that gives α_t and β_t
               x_prev: torch.Tensor,      # x_{t−1}: images of any shape
               t: int,                    # the step, an array index in {0,…,T−1}
               ) -> torch.Tensor:
    "Step `t` of the chain, q(x_t | x_{t−1}): √α_t·x_prev + √β_t·ε, with α, β at array index `t`."
    return diffusion.alphas[t].sqrt() * x_prev + diffusion.betas[t].sqrt() * torch.randn_like(x_prev)


# %%
torch.manual_seed(0)
N, checkpoints = 2000, [0, 20, 100, 300, 999]
clean = x0[:2]                                    # (2, 1, 16, 16)
x = clean.expand(N, -1, -1, -1, -1).clone()       # (N, 2, 1, 16, 16): N chains per image
chain = {}
for t in range(1000):
    x = noise_step(q, x, t)
    if t in checkpoints: chain[t] = x.clone()

# %% [markdown]
# Each pixel's chain mean is an average of $N$ draws, so it should sit within a few standard errors
# $\sqrt{(1-\bar\alpha_t)/N}$ of the closed form's mean; a sample variance has standard error
# $(1-\bar\alpha_t)\sqrt{2/(N-1)}$. The stated tolerance: every one of the 512 pixels within
# **5 standard errors** at every checked $t$, for both statistics (for 5,120 tests, a false alarm
# has odds of about 1 in 300).

# %%
worst = {}
for t, xs in chain.items():
    ab = q.alpha_bars[t]
    z_mean = (xs.mean(0) - ab.sqrt() * clean) / ((1 - ab) / N).sqrt()
    z_var = (xs.var(0) - (1 - ab)) / ((1 - ab) * (2 / (N - 1)) ** 0.5)
    worst[t] = (z_mean.abs().max().item(), z_var.abs().max().item())
    assert worst[t][0] < 5 and worst[t][1] < 5, (t, worst[t])
{t: f'mean {m:.1f}σ, var {v:.1f}σ' for t, (m, v) in worst.items()}

# %% [markdown]
# The same check as a picture: the centre pixel of the first digit (a 0, so background at −1), its
# 2,000 chain values next to 2,000 closed-form draws, at each checked $t$.

# %%
pix = (0, 0, 8, 8)
fig, axs = plt.subplots(1, len(checkpoints), figsize=(12, 2))
for ax, t in zip(axs, checkpoints):
    closed, _ = q.add_noise(clean[:1].expand(N, -1, -1, -1), t)
    ax.hist(chain[t][(slice(None), *pix)], bins=40, alpha=.6, density=True, label='chain, t+1 steps')
    ax.hist(closed[(slice(None), *pix[1:])], bins=40, alpha=.6, density=True, label='closed form')
    ax.set_title(f't = {t}', fontsize=9); ax.set_yticks([])
axs[0].legend(fontsize=7); fig.tight_layout()


# %% [markdown]
# ## Scrubbing through t
#
# A slider is the best way to feel how fast a schedule destroys an image. `forward_scrubber` renders
# one frame per chosen step for each schedule: a row of bundled digits noised to step $t$ (with the
# same $\varepsilon$ at every $t$, so the picture changes smoothly), next to ᾱ and the log-SNR with a
# marker at $t$. The frames go to the `Scrubber` of `minddpm.scrubber`, which shows them as a live
# widget inside a running kernel (Colab, Jupyter) and as a self-contained HTML player anywhere else,
# like this page. (The drawing of one frame, `_forward_frames`, is matplotlib plumbing in a hidden cell.)

# %%
#| hide
#| export
def _forward_frames(diffusion: ForwardProcess, x0: torch.Tensor, eps: torch.Tensor, ts, dpi: int) -> list[bytes]:
    "PNG frames: the images noised to each t in `ts`, beside ᾱ_t and log SNR(t) with a marker at t."
    n = len(x0)
    fig = plt.figure(figsize=(1.0 * n + 3.2, 1.5))
    grid = fig.add_gridspec(1, n + 3, wspace=0.08)
    ims = []
    for i in range(n):
        ax = fig.add_subplot(grid[0, i]); ax.axis('off')
        ims.append(ax.imshow(to_uint8(x0[i]).permute(1, 2, 0).squeeze(-1).numpy(), cmap='gray', vmin=0, vmax=255, interpolation='nearest'))
    ax = fig.add_subplot(grid[0, n + 1:])
    ax.plot(diffusion.alpha_bars, color='C0'); ax.set_ylabel('ᾱ', color='C0', fontsize=8)
    ax2 = ax.twinx(); ax2.plot(diffusion.snr.log(), color='C1'); ax2.set_ylabel('log SNR', color='C1', fontsize=8)
    ax.tick_params(labelsize=7); ax2.tick_params(labelsize=7)
    marker = ax.axvline(0, color='k', lw=1)
    ax.set_title(diffusion.kind, fontsize=8)
    frames = []
    for t in ts:
        xt, _ = diffusion.add_noise(x0, int(t), noise=eps)
        for im, img in zip(ims, to_uint8(xt)): im.set_data(img.permute(1, 2, 0).squeeze(-1).numpy())
        marker.set_xdata([int(t), int(t)])
        frames.append(fig_to_png(fig, dpi=dpi))
    plt.close(fig)
    return frames


# %%
#| exports
def forward_scrubber(images: torch.Tensor | None = None, # clean images (B, C, H, W) in [-1, 1]; default: 6 bundled digits
                     kinds=('linear', 'cosine'),         # schedules to switch between
                     steps: int = 30,                     # frames per schedule, evenly spaced over t
                     T: int = 1000,                       # diffusion steps
                     dpi: int = 60,                       # frame resolution
                     seed: int = 0,                       # seeds ε, shared by every frame
                     ) -> Scrubber:
    "A `Scrubber` over t of `images` noised by each schedule in `kinds`."
    if images is None:
        d = load_bundled()
        images = to_unit_range(resize_uint8(d['images'][[0, 1, 2, 3, 4, 5]], 16))
    ts = torch.linspace(0, T - 1, steps).round().long().tolist()
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    frames = {kind: _forward_frames(ForwardProcess(kind, T), images, eps, ts, dpi) for kind in kinds}
    return Scrubber(frames, [f't = {t}' for t in ts], title='q(x_t | x_0): drag t, or press play')


# %% [markdown]
# In Colab or Jupyter, this cell shows the live widget: drag the slider, press play, switch schedule.
# On the docs site, which has no kernel, the same cell was re-run while the site was built (`#| exec_doc`)
# and shows the static player, which scrubs and plays in the browser on its own.

# %%
#| exec_doc
forward_scrubber()

# %% [markdown]
# Press play on both schedules and watch where the digits disappear: with the linear schedule they
# are gone by about a third of the way; with the cosine one they survive into the second half.
#
# ## Three targets: ε, x₀ and v
#
# The closed form can be solved for the clean image: given $x_t$ and the noise in it,
# $x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon)/\sqrt{\bar\alpha_t}$. So the noise $\varepsilon$ and the clean
# image $x_0$ determine each other, and a network can be trained to output either: DDPM chose $\varepsilon$.
# Salimans & Ho (2022) proposed a third, the *velocity* $v = \sqrt{\bar\alpha_t}\,\varepsilon - \sqrt{1-\bar\alpha_t}\,x_0$.
# Write $a = \sqrt{\bar\alpha_t}$ and $s = \sqrt{1-\bar\alpha_t}$, so $a^2 + s^2 = 1$ and $x_t = a\,x_0 + s\,\varepsilon$.
# Then, from any of the three outputs,
#
# | the network predicts | $\hat\varepsilon$ | $\hat x_0$ |
# |---|---|---|
# | $\varepsilon$ | the output | $(x_t - s\,\hat\varepsilon)/a$ |
# | $x_0$ | $(x_t - a\,\hat x_0)/s$ | the output |
# | $v$ | $s\,x_t + a\,\hat v$ | $a\,x_t - s\,\hat v$ |
#
# `Diffusion` is a `ForwardProcess` that keeps which of the three its network predicts (`objective`, as
# diffusers' schedulers keep a `prediction_type`): `target` gives the training target, `predictions` reads
# any output back as $(\hat\varepsilon, \hat x_0)$ by the table, so every sampler works with every target, and
# `loss_weights` weighs the steps (the last section).

# %%
#| exports
OBJECTIVES = ('eps', 'v', 'x0')       # what a network may be trained to predict
WEIGHTINGS = ('uniform', 'min_snr')   # how `Diffusion.loss_weights` weighs the steps

# %%
#| exports
class Diffusion(ForwardProcess):
    "A `ForwardProcess` whose network predicts `objective` ('eps', 'v' or 'x0'), which `target`, `predictions` and `loss_weights` follow."
    def __init__(self, kind: str = 'linear', # 'linear' (Ho et al. 2020) or 'cosine' (Nichol & Dhariwal 2021)
                 T: int = 1000,              # number of diffusion steps
                 beta_start: float = 1e-4,   # linear: β at t = 0
                 beta_end: float = 0.02,     # linear: β at t = T−1
                 objective: str = 'eps'):    # what the network predicts: 'eps' (ε, DDPM), 'v' or 'x0'; in `OBJECTIVES`
        super().__init__(kind, T, beta_start, beta_end)
        self.objective = self.check_choice('objective', objective, OBJECTIVES)

    def extra_repr(self): return f"kind={self.kind!r}, T={self.T}, objective={self.objective!r}"

    def network_time(self, t): return t   # what the network is given for step t: t itself (lesson 13's flow gives 1000·t)

    def target(self, x0: torch.Tensor, # clean images (B, C, H, W) in [-1, 1]
               eps: torch.Tensor,      # the noise they were noised with, x0's shape
               t,                      # their timesteps: an int, or B of them
               ) -> torch.Tensor:
        "What the network is trained to output: ε, x0, or v = √ᾱ_t·ε − √(1−ᾱ_t)·x0 (Salimans & Ho 2022, §4), by `objective`."
        if self.objective == 'eps': return eps
        if self.objective == 'x0': return x0
        a, s = self.scales(t, x0)
        return a * eps - s * x0                    # v

    def predictions(self, xt: torch.Tensor, # noisy images x_t (B, C, H, W)
                    t,                      # their timesteps: an int, or B of them
                    out: torch.Tensor,      # the network's output for (x_t, t), xt's shape, in `objective`'s terms
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        "The network's output read as (ε̂, x̂0), whichever target it predicts (the table above; nothing clipped)."
        a, s = self.scales(t, xt)
        if self.objective == 'eps': return out, (xt - s * out) / a
        if self.objective == 'x0': return (xt - a * out) / s, out
        return s * xt + a * out, a * xt - s * out  # from v

    def loss_weights(self, t: torch.Tensor,      # (B,) timesteps
                     weighting: str = 'uniform', # 'uniform' (plain MSE) or 'min_snr' (Hang et al. 2023)
                     gamma: float = 5.0,         # min-SNR's γ: the SNR above which steps stop gaining weight
                     ) -> torch.Tensor:          # (B,) weights of each image's target MSE
        "Per-image weights of the target's MSE: 1, or min(SNR_t, γ) on the x0 error (Hang et al. 2023, eq. 12); `ValueError` for a bad weighting or γ."
        weighting, snr = self.check_weighting(weighting, gamma), self.snr[t]
        if weighting == 'uniform': return torch.ones_like(snr)
        return snr.clamp(max=gamma) / {'eps': snr, 'v': snr + 1, 'x0': torch.ones_like(snr)}[self.objective]

# %% [markdown]
# The three targets of one digit, at five steps. $v$ moves from the noise to the negated digit as $t$ grows:
# $v = a\,\varepsilon - s\,x_0$, and $a$ falls from 1 to 0 while $s$ rises from 0 to 1 (right).

# %%
d, tt = Diffusion(objective='v'), torch.tensor([0, 150, 300, 500, 999])
x0s, eps = x0[3:4].expand(5, -1, -1, -1), torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(2))
cols = {'x_t': d.add_noise(x0s, tt, eps)[0], 'ε': eps, 'x₀': x0s, 'v': d.target(x0s, eps, tt)}
fig = plt.figure(figsize=(7.5, 4.2)); grid = fig.add_gridspec(5, 7, wspace=.1, hspace=.15)
for j, (name, ims) in enumerate(cols.items()):
    for i, t in enumerate(tt.tolist()):
        ax = fig.add_subplot(grid[i, j]); ax.imshow(ims[i, 0], cmap='gray', vmin=-2, vmax=2); ax.set_xticks([]); ax.set_yticks([])
        if i == 0: ax.set_title(name, fontsize=10)
        if j == 0: ax.set_ylabel(f't = {t}', fontsize=8)
ax = fig.add_subplot(grid[1:4, 4:]); ax.plot(d.sqrt_alpha_bars, label='a = √ᾱ_t'); ax.plot(d.sqrt_one_minus_alpha_bars, label='s = √(1−ᾱ_t)')
ax.plot(tt, d.sqrt_alpha_bars[tt], 'k.'); ax.set(xlabel='t'); ax.legend(fontsize=8); ax.yaxis.tick_right()

# %% [markdown]
# ## What a trained network reads in x_t
#
# A network that predicts any of the three therefore also predicts a clean image, $\hat x_0$. That is
# the whole idea of the next lessons. minddpm ships a small network trained on these digits (lesson 07
# trains it; it predicts $v$); here is what it makes of one digit noised to more and more steps. The guess is
# sharp while some of the digit survives, and becomes a blurry "some digit" once the noise has won:

# %%
tiny = load_model()                                   # the shipped model: EMA weights, its diffusion, class names
ts = torch.tensor([50, 150, 300, 450, 600, 800, 999])
clean = x0[3:4].expand(len(ts), -1, -1, -1)
xt, _ = tiny.diffusion.add_noise(clean, ts, noise=torch.randn(clean.shape, generator=torch.Generator().manual_seed(1)))
with torch.no_grad(): out = tiny.model(xt, ts)       # no class label given (labels come in lesson 04)
eps_hat, x0_hat = tiny.diffusion.predictions(xt, ts, out)
show_images(torch.cat([xt, x0_hat.clamp(-1, 1)]), ts.tolist() * 2, ncols=len(ts), scale=.9,
            title='x_t (top) and the x̂0 the trained network reads in it (bottom), titled by t')


# %% [markdown]
# ## Weighting the steps
#
# The three targets are the same function in three coordinates, but they are not equally easy to learn,
# because an error in one becomes a scaled error in the others. With $\mathrm{SNR}_t = a^2/s^2$:
#
# $$\lVert\hat\varepsilon-\varepsilon\rVert^2 = \mathrm{SNR}_t\,\lVert\hat x_0-x_0\rVert^2, \qquad
#   \lVert\hat v-v\rVert^2 = (1+\mathrm{SNR}_t)\,\lVert\hat x_0-x_0\rVert^2 .$$
#
# - An ε-network divides by $a$ to read $\hat x_0$: at the noisiest steps ($a \approx 0.006$ at $t = 999$ of the
#   linear schedule) a tiny ε error is a huge $x_0$ error, and the plain ε-MSE barely penalises it. This is
#   where the grey or speckled images of deterministic samplers come from (lessons 05 and 08).
# - An $x_0$-network divides by $s$ to read $\hat\varepsilon$, so it fails the other way, at the cleanest steps.
# - A $v$-network divides by nothing: both readings are sums with weights at most 1.
#
# Plain MSE on ε weighs the $x_0$ error by SNR, which runs from $10^4$ at $t = 0$ to $4\cdot10^{-5}$ at $t = 999$: eight
# orders of magnitude, nearly all of it on the clean end where the image is already there to read. Hang et
# al. (2023) treat the steps as competing tasks and cap the weight at $\gamma = 5$: *min-SNR-γ* weighs the $x_0$ error
# by $\min(\mathrm{SNR}_t, \gamma)$, whatever the network predicts, and they report about 3.4× faster convergence.
# `loss_weights` gives the factor that turns each target's MSE into that weighting. Each target's weight on
# the $x_0$ error, plain and min-SNR; a network trained on a target spends its capacity where its curve is high:

# %%
fig, ax = plt.subplots(figsize=(6, 2.8))
t_all, snr = torch.arange(1000), q.snr
for objective, scale, style in (('eps', snr, 'C0'), ('v', snr + 1, 'C1'), ('x0', torch.ones_like(snr), 'C2')):
    ax.plot(t_all, scale, style, label=f'{objective}, uniform')
    ax.plot(t_all, scale * Diffusion(objective=objective).loss_weights(t_all, 'min_snr'), style, ls='--', lw=2.5, alpha=.6,
            label=f'{objective}, min-SNR-5')
ax.set(yscale='log', xlabel='t', ylabel='weight on the x̂0 error', title='what each target and weighting optimises (linear schedule)')
ax.legend(fontsize=7, ncol=3); fig.tight_layout()

# %% [markdown]
# The three min-SNR curves lie on one another, as they should. Lesson 07 trains with each target and
# weighting, and lesson 08 measures which learns the digits fastest.

# %% [markdown]
# ## Exercises
#
# Write each function in place of its `...` and run its cell: `check` prints ✓, or where your answer differs and a hint
# ([how the checks work](exercises.ipynb)). Keep the stub's parameter names (`check` passes its inputs by name) and
# return the inputs' dtype unless the stub asks for another. Solutions: `tests/solutions/` in the course's repository.
#
# 1. **Noise a batch, from ᾱ.** Without a `Diffusion`: given clean images `x0` (B, C, H, W), noise `eps` of the same
#    shape and one ᾱ_t per image, `alpha_bars_t` (B,), return $x_t$ (B, C, H, W), alone (`Diffusion.add_noise` also
#    returns the noise; this one does not).

# %%
def add_noise(x0, eps, alpha_bars_t):   # (B, C, H, W), (B, C, H, W), (B,)
    ...                                  # return x_t, (B, C, H, W)

check(add_noise)

# %% [markdown]
# 2. **The v target.** Same inputs; return v, what a v-predicting network (like the shipped one) is trained to output.

# %%
def v_target(x0, eps, alpha_bars_t):   # (B, C, H, W), (B, C, H, W), (B,)
    ...                                 # return v, (B, C, H, W)

check(v_target)

# %% [markdown]
# 3. **Back to x₀.** Given $x_t$, a predicted noise $\hat\varepsilon$ and ᾱ_t, return the $\hat x_0$ they imply, not
#    clipped. Then: an error δ in $\hat\varepsilon$ becomes an error of δ times some factor in $\hat x_0$. Read the
#    factor off your formula and compute it at t = 10 and t = 999 of the linear schedule: which guess of the digit would
#    you trust from a network that predicts ε, and why does the shipped model predict v instead?

# %%
def x0_from_eps(xt, eps_hat, alpha_bars_t):   # (B, C, H, W), (B, C, H, W), (B,)
    ...                                        # return x̂0, (B, C, H, W)

check(x0_from_eps)
