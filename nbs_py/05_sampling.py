# %%
#| default_exp sampling

# %% [markdown]
# # Sampling
# > From noise to images: DDPM's ancestral sampler, DDIM in any number of steps, DPM-Solver++ in a few, classifier-free guidance in all three, one loop that yields every step, and a reverse scrubber over the denoising trajectory

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/05_sampling.ipynb)
# This lesson has no GPU-only cells: it runs top to bottom in under a minute on a 2-core CPU with nothing else to do, and a Colab runtime is no slower; its last cell prints what this run took.

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
import copy, math
from numbers import Integral
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from torch import nn

from minddpm.conditioning import NULL_LABEL, guided_eps
from minddpm.data import cpu_has_bf16, to_uint8
from minddpm.forward import Diffusion
from minddpm.scrubber import Scrubber, fig_to_png

# %%
#| hide
from fastcore.test import *
from minddpm.exercises import check   # the exercises at the end
import time
from nbdev.showdoc import show_doc
from minddpm.conditioning import ConditionalUNet
from minddpm.data import get_datasets, pick_device, pick_preset, show_images
from minddpm.training import load_model
from minddpm.unet import unet_preset

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)              # the same pictures on every run
started = time.perf_counter()

def show_rows(rows, names, title=None, scale=0.6):
    "Draw image batches (each (B, C, H, W) in [-1, 1]) as rows of a grid, each row named on its left."
    fig, axs = plt.subplots(len(rows), len(rows[0]), figsize=(len(rows[0]) * scale + 1.2, len(rows) * scale), squeeze=False)
    for r, (row, name) in enumerate(zip(rows, names)):
        for ax, img in zip(axs[r], to_uint8(row.detach().cpu())):
            ax.imshow(img[0], cmap='gray', vmin=0, vmax=255, interpolation='nearest'); ax.set_xticks([]); ax.set_yticks([])
        axs[r, 0].set_ylabel(name, rotation=0, ha='right', va='center', fontsize=8)
    if title: fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.2); plt.show()

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # 'colab' sizes on a CUDA GPU, 'tiny' elsewhere


# %% [markdown]
# Training (lesson 07) teaches a network to predict the noise $\varepsilon$ in $x_t$ (or, equivalently, $x_0$ or $v$:
# lesson 02 reads each as the others). Sampling runs the
# process backwards: start from pure noise and, step by step, use the prediction to move towards an
# image. Every sampler here works from the network's $\hat\varepsilon$ at the current step and the guess
# of the clean image it implies (with the 0-indexed arrays of lesson 01, `t` runs from `T-1` down to 0):
#
# $$\hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon}{\sqrt{\bar\alpha_t}}.$$
#
# $\hat x_0$ can be clipped to $[-1, 1]$, the range of real images. Clipping keeps early, wild guesses
# from throwing the trajectory off; the originals never clip, one reason their samples sometimes come
# out flat or saturated.
#
# ## An ideal denoiser to test samplers with
#
# Samplers are easier to understand, and to test, with a network whose predictions are known exactly.
# For a finite training set there is one, the **ideal denoiser**. Each training image $x^{(i)}$ could
# have produced $x_t$ with probability proportional to
# $\exp\!\big(-\lVert x_t - \sqrt{\bar\alpha_t}\,x^{(i)}\rVert^2 / 2(1-\bar\alpha_t)\big)$; the best possible
# $\hat x_0$ is the average of the training images under those weights, and the best $\hat\varepsilon$
# follows from it. Restricting the average to one class makes it conditional. It has the interface of
# lesson 04's `ConditionalUNet`, so every sampler runs on it, and it shows what a *perfect* network would
# do: give back its training images. A trained network cannot be perfect, and that is why it can make
# new ones. (Every picture in this lesson is drawn by `show_rows`, a few lines of matplotlib in a hidden
# cell: each batch of images one row, named on its left.)

# %%
#| exports
class IdealDenoiser(nn.Module):
    "The best possible prediction for a finite image set, from E[x0 | x_t] over all its images or one class's, as the diffusion's `objective` (ε, v or x0)."
    def __init__(self, images: torch.Tensor, # (N, C, H, W) in [-1, 1]
                 labels: torch.Tensor,       # (N,) class indices
                 diffusion: Diffusion):      # the noise schedule (its ᾱ_t); the same as the sampler's
        super().__init__()
        self.register_buffer('images', images.flatten(1).float())   # (N, D)
        self.register_buffer('labels', labels.long())
        self.diffusion = diffusion

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        ab = self.diffusion.alpha_bars[t][:, None]                                        # (B, 1)
        d2 = torch.cdist(x.flatten(1)[:, None], ab.sqrt()[:, :, None] * self.images[None],
                        compute_mode='donot_use_mm_for_euclid_dist')[:, 0] ** 2                   # (B, N), exact
        logits = -d2 / (2 * (1 - ab))                                                      # log p(x_t | x0 = image i)
        if y is not None:
            y = torch.as_tensor(y, device=x.device)[:, None]
            logits = logits.masked_fill((self.labels[None] != y) & (y != NULL_LABEL), float('-inf'))
        x0 = (logits.softmax(-1) @ self.images).view_as(x)                                # E[x0 | x_t]
        eps = (x - ab.sqrt().view(-1, 1, 1, 1) * x0) / (1 - ab).sqrt().view(-1, 1, 1, 1)
        return self.diffusion.target(x0, eps, t)                                           # ε, v or x0

# %% [markdown]
# Every sampler reads the prediction through the equation above:

# %%
#| exports
def _x0(diffusion, x, t, eps, clip):
    "The clean image implied by ε̂: x̂0 = (x_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t, optionally clipped to [-1, 1]."
    x0 = (x - diffusion.sqrt_one_minus_alpha_bars[t] * eps) / diffusion.sqrt_alpha_bars[t]
    return x0.clamp(-1, 1) if clip else x0

# %% [markdown]
# Three training digits noised to growing $t$, and what the ideal denoiser, told nothing of their class, makes of
# them. At low noise it finds the very image; as the noise grows its $\hat x_0$ becomes an average of every digit
# that could lie under it, and at $t = 900$ an average of nearly all of them:

# %%
diffusion = Diffusion('linear')
train, _ = get_datasets('digits', size=16)
ideal = IdealDenoiser(torch.stack([train[i][0] for i in range(len(train))]), train.labels, diffusion)
x0, ts = torch.stack([train[i][0] for i in range(3)]), [50, 300, 500, 700, 900]
xts = torch.stack([diffusion.add_noise(x0, t)[0] for t in ts], 1)                                    # (3, 5, C, H, W)
guesses = torch.stack([_x0(diffusion, xts[:, j], t, ideal(xts[:, j], torch.full((3,), t)), clip=True) for j, t in enumerate(ts)], 1)
show_rows([row for i in range(3) for row in (xts[i], guesses[i])], ['x_t', 'x̂0'] * 3, title='t = ' + ', '.join(map(str, ts)))
test_close(guesses[:, 0], x0, eps=0.05)   # at t = 50 it finds the very image


# %% [markdown]
# ## DDPM: ancestral sampling
#
# Algorithm 2 of Ho et al. (2020). At each step, the posterior $q(x_{t-1} \mid x_t, \hat x_0)$ of lesson 01
# is Gaussian with mean $\tilde\mu_t = \text{coef1}_t\,\hat x_0 + \text{coef2}_t\,x_t$, where
# $\text{coef1}_t = \sqrt{\bar\alpha_{t-1}}\,\beta_t/(1-\bar\alpha_t)$ and $\text{coef2}_t = \sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})/(1-\bar\alpha_t)$
# (DDPM eq. 7); sample from it with
# variance $\sigma_t^2 = \beta_t$ (the paper's choice, and the originals') or $\tilde\beta_t = \beta_t\,(1-\bar\alpha_{t-1})/(1-\bar\alpha_t)$
# (the true posterior's; both give similar results, Ho et al. §3.2). The last step adds no noise. 1,000 network
# evaluations per image: slow, and the reference for everything faster.

# %%
#| exports
def ddpm_step(diffusion: Diffusion,    # the noise schedule (β_t, β̃_t, ᾱ_t, posterior coefficients)
              x,                       # (B, C, H, W) images x_t
              t: int,                  # current timestep, the same for the whole batch
              eps,                     # ε̂ predicted for (x, t), x's shape
              clip: bool = True,       # clip x̂0 to [-1, 1]
              variance: str = 'beta',  # σ_t²: 'beta' (β_t) or 'beta_tilde' (β̃_t, the true posterior's)
              noise=None):             # z ~ N(0, I) with x's shape; needed for t > 0, unused at t = 0
    "One ancestral step x_t → x_{t−1}: the posterior mean from x̂0, plus σ_t·z (σ² = β or β̃), no noise at t = 0."
    x0 = _x0(diffusion, x, t, eps, clip)
    mean = diffusion.posterior_mean_coef1[t] * x0 + diffusion.posterior_mean_coef2[t] * x   # μ̃_t, DDPM eq. 7
    if t == 0: return mean, x0
    var = diffusion.betas[t] if variance == 'beta' else diffusion.posterior_variance[t]
    return mean + var.sqrt() * noise, x0


# %% [markdown]
# The whole sampler is a loop over that step. Ten digits, one per class, from the ideal denoiser told each
# one's class, caught every 250 steps on the way down:

# %%
labels, g = torch.arange(10), lambda: torch.Generator().manual_seed(0)
x, gen, caught = torch.randn(10, 1, 16, 16, generator=g()), g(), []
for t in reversed(range(diffusion.T)):
    eps = ideal(x, torch.full((10,), t), labels)                  # the class's ideal ε̂
    x, x0 = ddpm_step(diffusion, x, t, eps, noise=torch.randn(x.shape, generator=gen))
    if t % 250 == 0: caught.append(x)
show_rows(caught, [f'x at t = {t - 1}' for t in (750, 500, 250)] + ['the sample'], title='DDPM, 1,000 steps')

# %% [markdown]
# ## DDIM: the same model, far fewer steps
#
# Song et al. (2020) noticed that DDPM's training only ever sees the marginals $q(x_t \mid x_0)$, and that a
# family of *non-Markovian* forward processes shares them; so a network trained for DDPM also fits their
# reverse processes. A step can jump from $t$ to any earlier
# $s$: rebuild $x_s$ from $\hat x_0$ and the predicted noise direction,
#
# $$x_s = \sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1-\bar\alpha_s-\sigma^2}\,\hat\varepsilon + \sigma z,\qquad
#   \sigma = \eta\,\sqrt{\tfrac{1-\bar\alpha_s}{1-\bar\alpha_t}}\sqrt{1-\tfrac{\bar\alpha_t}{\bar\alpha_s}},$$
#
# with $\bar\alpha_s = 1$ after the last step. $\eta = 0$ is deterministic (the same noise always gives the
# same image); $\eta = 1$ with every step is exactly DDPM with $\sigma^2 = \tilde\beta$ (checked below). When
# $\hat x_0$ is clipped, `ddim_step` recomputes $\hat\varepsilon$ from the clipped $\hat x_0$, so that the two stay
# consistent with $x_t$. (`ddim_step` defaults to η = 0, the paper's deterministic sampler; `sample` defaults to
# η = 1, which scores better on the shipped model: the section *Which η?* below.)

# %%
#| exports
def ddim_step(diffusion: Diffusion,  # the noise schedule (ᾱ_t)
              x,                     # (B, C, H, W) images x_t
              t: int,                # current timestep, the same for the whole batch
              s: int | None,         # earlier timestep to jump to; None: the last step, returns x̂0
              eps,                   # ε̂ predicted for (x, t), x's shape
              eta: float = 0.0,      # η: 0 deterministic, 1 ancestral (DDPM with σ² = β̃ when s = t − 1)
              clip: bool = True,     # clip x̂0 to [-1, 1] (and recompute ε̂ from the clipped x̂0)
              noise=None):           # z ~ N(0, I) with x's shape; needed when eta > 0 and s is not None
    "One DDIM step from t to the earlier step s (None: to the clean image)."
    x0 = _x0(diffusion, x, t, eps, clip)
    if clip: eps = (x - diffusion.sqrt_alpha_bars[t] * x0) / diffusion.sqrt_one_minus_alpha_bars[t]  # ε̂ consistent with the clipped x̂0
    if s is None: return x0, x0
    ab_t, ab_s = diffusion.alpha_bars[t], diffusion.alpha_bars[s]
    sigma = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).sqrt()
    x = ab_s.sqrt() * x0 + (1 - ab_s - sigma ** 2).clamp(min=0).sqrt() * eps   # clamp: rounding at η = 1 can dip below 0
    return (x + sigma * noise if eta > 0 else x), x0


# %% [markdown]
# The same loop over far fewer timesteps, spread evenly from 999 down to 0, with η = 0: the same starting
# noise at 50, 10 and 5 steps.

# %%
def ddim_loop(model, ts, eta=0.0):   # DDIM along the timesteps `ts` from seed-0 noise, one image per class
    x, gen = torch.randn(10, 1, 16, 16, generator=g()), g()
    for t, s in zip(ts, ts[1:] + [None]):
        x, x0 = ddim_step(diffusion, x, t, s, model(x, torch.full((10,), t), labels), eta, noise=torch.randn(x.shape, generator=gen))
    return x

spread = lambda steps: torch.linspace(999, 0, steps).round().long().tolist()
show_rows([ddim_loop(ideal, spread(n)) for n in (50, 10, 5)], ['50 steps', '10 steps', '5 steps'], title='DDIM, η = 0')

# %% [markdown]
# **Timestep spacing.** Which `steps` timesteps to visit is a choice. Spreading them evenly from `T-1` down
# to 0 and rounding (`'linspace'`, as above) always starts from the noisiest step the model was trained on.
# (The DDIM paper's `range(0, T, T // steps)` starts at 980 for 50 steps, from an $x_t$ that is not quite
# pure noise.) Lin et al. (2023) point out that the linspace grid's last step is wasted on the cleanest
# timestep: `'trailing'` instead takes $T-1, T-1-T/n, \dots$ and stops at $T/n - 1$ (for 50 steps: 999, 979,
# …, 19), leaving the last jump to $\hat x_0$ itself. It is the spacing many recent solvers use; lesson 08
# measures which is better on our model.

# %%
#| exports
SPACINGS = ('linspace', 'trailing')

def ddim_timesteps(T: int,                   # diffusion steps of the schedule
                   steps: int,               # number of timesteps wanted, 1 to T
                   spacing: str = 'linspace', # 'linspace': from T−1 down to 0; 'trailing': T−1, T−1−T/steps, … (Lin et al. 2023)
                   ) -> list[int]:
    "`steps` timesteps from T−1 down, evenly spaced (rounded, no repeats): to 0 ('linspace'), or ending T/steps above it ('trailing')."
    _check_steps(T, steps, spacing)
    i = torch.arange(steps, dtype=torch.float64)   # T − 1 − i·T/steps for trailing: exactly `steps` values (a float arange can overrun)
    ts = torch.linspace(T - 1, 0, steps) if spacing == 'linspace' else (T - i * T / steps).round() - 1
    return ts.round().long().unique_consecutive().tolist()

# %%
#| export
#| hide
def _check_steps(T, steps, spacing):
    "A `ValueError` unless `steps` is a whole number in [1, T] and `spacing` one of `SPACINGS`."
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be a whole number between 1 and T={T}, got {steps!r}")
    if spacing not in SPACINGS: raise ValueError(f"Unknown spacing {spacing!r}; use {' or '.join(map(repr, SPACINGS))}")

# %%
fig, ax = plt.subplots(figsize=(6, 2))
ax.plot(diffusion.sqrt_alpha_bars, c='grey', lw=1, label='√ᾱ_t: how much of the image is left in x_t')
for spacing, marker in zip(SPACINGS, 'ov'):
    ts = ddim_timesteps(diffusion.T, 10, spacing)
    ax.plot(ts, diffusion.sqrt_alpha_bars[ts], marker, label=f"{spacing}: {', '.join(map(str, ts[:2]))}, …, {ts[-1]}")
ax.set(xlabel='t', title='10 timesteps, two spacings'); ax.legend(fontsize=7); plt.show()

# %% [markdown]
# ## DPM-Solver++: a second-order step
#
# DDIM with η = 0 draws the same image from the same noise every time: from each $x_T$ it follows one
# deterministic path to an image. Song et al. (2021) showed that these paths are the solutions of an ordinary
# differential equation, the *probability-flow ODE*, whose flow carries pure noise to images with the same
# marginals $q(x_t)$ as the DDPM chain. Sampling is then solving an ODE, and a better solver needs fewer steps.
# DDIM is its first-order solver: each step assumes the predicted $\hat x_0$ stays constant over the jump.
#
# Lu et al. (2022) write the same ODE in the half log-SNR $\lambda_t = \log\big(\sqrt{\bar\alpha_t}/\sqrt{1-\bar\alpha_t}\big)$
# (their $\alpha_t$ and $\sigma_t$ are these two square roots, not lesson 01's $\alpha_t = 1-\beta_t$), where its
# linear part is solved exactly, and approximate only the change of the data prediction
# $D_t = \hat x_0(x_t, t)$. Their multistep second-order solver, **DPM-Solver++(2M)**, reuses the previous
# step's $D$ to estimate that change, so it costs one network call per step like DDIM:
#
# $$h_i = \lambda_{t_i} - \lambda_{t_{i-1}},\quad r_i = h_{i-1}/h_i,\quad
#   D = \Big(1 + \tfrac{1}{2r_i}\Big) D_{t_{i-1}} - \tfrac{1}{2r_i} D_{t_{i-2}},\qquad
#   x_{t_i} = \sqrt{\tfrac{1-\bar\alpha_{t_i}}{1-\bar\alpha_{t_{i-1}}}}\, x_{t_{i-1}} - \sqrt{\bar\alpha_{t_i}}\,\big(e^{-h_i} - 1\big)\, D .$$
#
# Step $i$ goes from $t_{i-1}$ (the code's `t`) to $t_i$ (its `s`); $D_{t_{i-1}}$ is this step's $\hat x_0$ and
# $D_{t_{i-2}}$ the last step's, which the code carries as `prev`.
#
# The first step has no previous $D$ and uses $D = D_{t_0}$, which is exactly DDIM with η = 0; the last
# goes to the clean image, $x = \hat x_0$. Guidance makes the ODE stiffer, which is why the data-prediction form
# (with $\hat x_0$ clipped to $[-1, 1]$) is the one for guided sampling. `tests/test_solvers.py` checks every
# step against diffusers' scheduler fed the same predictions.

# %%
#| exports
def dpm_solver_step(diffusion: Diffusion,  # the noise schedule (ᾱ_t)
                    x,                     # (B, C, H, W) images x_t
                    t: int,                # current timestep
                    s: int | None,         # next, earlier timestep; None: the last step, returns x0
                    x0,                    # the data prediction D_t = x̂0(x, t), x's shape (clipped or not)
                    prev=None,             # (D, h) of the previous step, from the last call; None: a first-order step
                    ) -> tuple:            # (x_s, (x0, h)): the images at s, and what the next step needs
    "One DPM-Solver++(2M) step from t to s (Lu et al. 2022, Algorithm 2): second order when `prev` is given, else first (DDIM, η = 0)."
    if s is None: return x0, (x0, None)
    ab_t, ab_s = diffusion.alpha_bars[t], diffusion.alpha_bars[s]
    lam = lambda ab: 0.5 * (ab.log() - (1 - ab).log())              # λ = log(√ᾱ/√(1−ᾱ)) = ½·log SNR
    h = lam(ab_s) - lam(ab_t)
    D = x0
    if prev is not None and prev[1] is not None:
        r = prev[1] / h
        D = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * prev[0]
    x_s = ((1 - ab_s) / (1 - ab_t)).sqrt() * x - ab_s.sqrt() * torch.expm1(-h) * D
    return x_s, (x0, h)


# %% [markdown]
# Its loop carries `prev` from step to step. On the ideal denoiser, against DDIM with η = 0 from the same
# noise at 5 and 10 linspace steps:

# %%
def dpm_loop(model, ts):   # DPM-Solver++(2M) along the timesteps `ts` from seed-0 noise, one image per class
    x, prev = torch.randn(10, 1, 16, 16, generator=g()), None
    for t, s in zip(ts, ts[1:] + [None]):
        x0 = _x0(diffusion, x, t, model(x, torch.full((10,), t), labels), clip=True)
        x, prev = dpm_solver_step(diffusion, x, t, s, x0, prev)
    return x

show_rows([ddim_loop(ideal, spread(5)), dpm_loop(ideal, spread(5)), ddim_loop(ideal, spread(10)), dpm_loop(ideal, spread(10))],
          ['DDIM, 5', 'DPM-Solver++, 5', 'DDIM, 10', 'DPM-Solver++, 10'], title='the ideal denoiser, η = 0')

# %% [markdown]
# At 10 steps the two land on the same training digits; at 5 they can part. What the solver buys depends on the
# model: its second-order correction assumes that the prediction $D$ changes smoothly from step to step, and the
# ideal denoiser's $\hat x_0$ can jump from one training image to another. A trained network's moves smoothly,
# and there it draws in 10 calls what DDIM draws in 50 (below, and lesson 08).
#
# ## One loop for all three
#
# The three loops above differ in one line, the update. `denoise_steps` is the one loop, written once: it calls
# the network (with classifier-free guidance, lesson 04, as one batched pass) and the sampler's update at each
# timestep, and **yields** a `Step` — the timestep, the images $x_t$ it holds there and the network's $\hat x_0$ —
# and, after the last, `Step(-1, images, images)`. What to do with each step (keep it, draw it, stream it to a
# web page, stop early) is the caller's business, not the loop's.

# %% [markdown]
# The network call first, as every sampler needs it: lesson 04's classifier-free guidance mixes the
# conditional and unconditional outputs, $\hat\varepsilon = \hat\varepsilon(x_t, \varnothing) + w\,\big(\hat\varepsilon(x_t, y) - \hat\varepsilon(x_t, \varnothing)\big)$
# ($w = 0$ unconditional, 1 conditional, above 1 guided), then the output is read as $\hat\varepsilon$ whatever the
# network's target (lesson 02's table). The mix works on any target: at fixed $(x_t, t)$, ε, v and x₀ are affine in one
# another and the mix's weights sum to 1, so mixing then converting equals converting then mixing.

# %%
#| exports
def _eps(model, diffusion, x, t, y, w):
    """ε̂ at timesteps t: unconditional when `y` is None, else classifier-free guided with weight `w` (one batched pass);
    a distilled student (lesson 14) has its guidance in its weights, and is called once."""
    folded = getattr(diffusion, 'guidance', None) is not None
    out = model(x, t) if y is None else model(x, t, y) if folded else guided_eps(model, x, t, y, w)
    return diffusion.predictions(x, t, out)[0]

# %%
#| exports
@dataclass(frozen=True)
class Step:
    "One step of a sampling loop, as `denoise_steps` yields it; it unpacks as `t, x, x0`."
    t: int             # the timestep; −1 after the last step
    x: torch.Tensor    # (B, C, H, W) x_t, the images the sampler holds at t; at −1 the sampled images
    x0: torch.Tensor   # (B, C, H, W) x̂0, the network's clean images at t (clipped if asked); at −1 the images again
    def __iter__(self): return iter((self.t, self.x, self.x0))

@torch.no_grad()
def denoise_steps(net,                     # called as net(x, t[, y]), predicting `diffusion.objective`
                  diffusion: Diffusion,    # the noise schedule the network was trained with
                  x: torch.Tensor,         # (B, C, H, W) images at ts[0], usually pure noise
                  ts: list[int],           # timesteps from T−1 down: `ddim_timesteps`, or all T of them for DDPM
                  y=None,                  # (B,) class labels; None: unconditional
                  w: float = 3.0,          # guidance weight: 0 unconditional, 1 conditional, >1 guided
                  sampler: str = 'ddim',   # 'ddim', 'dpm++' (DPM-Solver++(2M)) or 'ddpm'
                  eta: float = 1.0,        # DDIM's η
                  variance: str = 'beta',  # DDPM's σ²: 'beta' or 'beta_tilde'
                  clip: bool = True,       # clip x̂0 to [-1, 1]
                  noise=None):             # draws z ~ N(0, I) of x's shape; None: `torch.randn_like`
    "Sample along `ts`, yielding `Step(t, x_t, x̂0)` at each timestep, then `Step(-1, x, x)` with the sampled images."
    noise, prev = noise or (lambda: torch.randn_like(x)), None   # prev: DPM-Solver++'s previous (D, h)
    for t, s in zip(ts, ts[1:] + [None]):
        eps = _eps(net, diffusion, x, torch.full((len(x),), t, device=x.device), y, w)
        if sampler == 'ddpm': x_s, x0 = ddpm_step(diffusion, x, t, eps, clip, variance, noise() if t > 0 else None)
        elif sampler == 'ddim': x_s, x0 = ddim_step(diffusion, x, t, s, eps, eta, clip, noise() if s is not None and eta > 0 else None)
        else:
            x0 = _x0(diffusion, x, t, eps, clip)
            x_s, prev = dpm_solver_step(diffusion, x, t, s, x0, prev)
        yield Step(t, x, x0)
        x = x_s
    yield Step(-1, x, x)

# %% [markdown]
# Two digits through ten DDIM steps (η = 0, the ideal denoiser guided with w = 3): at each step $x_t$ above
# the $\hat x_0$ the network sees in it. The $\hat x_0$ settles on its digit long before $x_t$ is clean.

# %%
steps = list(denoise_steps(ideal, diffusion, torch.randn(2, 1, 16, 16, generator=g()), spread(10), labels[[3, 8]], eta=0.0))
x_t, x0 = torch.stack([s.x for s in steps], 1), torch.stack([s.x0 for s in steps], 1)    # (2, 11, C, H, W)
show_rows([x_t[0], x0[0], x_t[1], x0[1]], ['x_t', 'x̂0'] * 2, title='t = ' + ', '.join(str(s.t) for s in steps))

# %% [markdown]
# `sample` is what a user calls. It draws the starting noise and every later noise from one `torch.Generator`
# (or the global RNG), so a seed reproduces a sample exactly; it runs the model in eval mode and without
# gradients, checks its arguments and its result, and returns images in $[-1, 1]$, or as uint8 (by rounding).
# Pass the weights to sample with: for an EMA, pass `ema.model`; guidance then uses those weights for **both**
# branches, because the conditional and unconditional predictions come from one batched call of the one model
# it was given. (The originals compute the conditional branch with the raw model even when asked to sample with
# the EMA.) The checks and the set-up live in small helpers, shared with the editing and deploying lessons.

# %%
#| export
#| hide
SAMPLERS = ('ddim', 'dpm++', 'ddpm')
FLOW_SAMPLERS = ('euler', 'heun')   # a flow-matching model's (lesson 13)
DEFAULT_SPACING = {'ddim': 'linspace', 'dpm++': 'trailing'}   # each sampler's best on the shipped model (lesson 08)
PRECISIONS = ('fp32', 'bf16', 'auto')

def _check_sampler(diffusion, sampler: str | None, spacing: str | None) -> tuple[str, str | None]:
    """(sampler, spacing) for `diffusion`'s objective: None gives its default; a flow model's samplers (lesson 13) and the
    others are refused for the other kind of model, by name."""
    flow = diffusion.objective == 'flow'
    sampler = sampler or ('euler' if flow else 'ddim')
    if sampler not in SAMPLERS + FLOW_SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; use {', '.join(map(repr, FLOW_SAMPLERS if flow else SAMPLERS))}")
    if flow and sampler not in FLOW_SAMPLERS:
        raise ValueError(f"sampler {sampler!r} walks a diffusion's timesteps; this model was trained with flow matching "
                         f"(objective 'flow', lesson 13): use {' or '.join(map(repr, FLOW_SAMPLERS))}")
    if not flow and sampler in FLOW_SAMPLERS:
        raise ValueError(f"sampler {sampler!r} follows a flow-matching model (lesson 13); this model predicts "
                         f"{diffusion.objective!r}: use {', '.join(map(repr, SAMPLERS))}")
    if flow and spacing is not None:
        raise ValueError(f"spacing {spacing!r} places DDIM's and DPM-Solver++'s timesteps; a flow model's {sampler} steps evenly "
                         f"in t from 1 to 0: leave spacing out")
    return sampler, spacing if flow else (spacing or DEFAULT_SPACING.get(sampler, 'linspace'))

def _student_options(diffusion, sampler, steps, spacing, w, eta) -> tuple:
    """(sampler, steps, spacing, w, eta) of a distilled student (lesson 14): DDIM with η = 0 on its own timesteps, in its
    calls, at the guidance folded into it. Anything else it was not trained for is refused by a `ValueError`, by name."""
    calls, g = diffusion.calls, diffusion.guidance
    why = f"this model is a student distilled to sample in {calls} call{'s' * (calls != 1)} (DDIM on its trailing timesteps, η = 0, w = {g:g}; lesson 14)"
    given = {'sampler': (sampler, 'ddim'), 'steps': (steps, calls), 'spacing': (spacing, 'trailing'), 'w': (w, g), 'eta': (eta, 0)}
    wrong = [f"{k}={v!r}" for k, (v, want) in given.items() if v is not None and v != want]
    if wrong: raise ValueError(f"{', '.join(wrong)}: {why}; leave {'it' if len(wrong) == 1 else 'them'} out, or sample its teacher")
    return 'ddim', calls, 'trailing', g, 0.0

def _check_sample(model, labels, n, spacing, variance, w, eta, shape, x_T) -> tuple[int, torch.Tensor | None]:
    """`sample`'s arguments checked, each refused by a `ValueError` saying what is allowed (a `TypeError` for a model that is
    not a network); returns (batch size, labels as a tensor or None)."""
    if not callable(model):
        hint = '; pass its .model, with its .diffusion and .shape' if hasattr(model, 'diffusion') else ''
        raise TypeError(f"model must be a network called as model(x, t[, y]), got a {type(model).__name__}{hint}")
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be a 1-D sequence of class indices, e.g. [3, 7], got {labels.tolist()!r}")
    if spacing is not None and spacing not in SPACINGS: raise ValueError(f"Unknown spacing {spacing!r}; use {' or '.join(map(repr, SPACINGS))}")
    if variance not in ('beta', 'beta_tilde'): raise ValueError(f"Unknown variance {variance!r}; use 'beta' or 'beta_tilde'")
    if not math.isfinite(w): raise ValueError(f"w must be a finite number, got {w!r}")
    if not 0 <= eta <= 1: raise ValueError(f"eta must be in [0, 1], got {eta!r}")   # NaN fails too
    if labels is None and n is None: raise ValueError("pass labels, or n for unconditional samples")
    b = len(labels) if labels is not None else n
    if isinstance(b, bool) or not isinstance(b, Integral) or b < 1:
        raise ValueError("labels is empty; pass at least one class index" if labels is not None else f"n must be a whole number, at least 1, got {n!r}")
    if x_T is not None and tuple(x_T.shape) != (b, *shape):
        raise ValueError(f"x_T has shape {tuple(x_T.shape)}; this call samples {(b, *shape)}")
    return int(b), labels

def _network(model, precision: str, device: torch.device):
    """What a sampling loop calls: `model` in fp32, or in bf16 with its weights cast once (a copy), taking and giving float32.
    Raises `ValueError` for a precision not in `PRECISIONS`."""
    if precision not in PRECISIONS: raise ValueError(f"Unknown precision {precision!r}; use {', '.join(map(repr, PRECISIONS))}")
    if precision == 'auto': precision = 'bf16' if device.type == 'cpu' and cpu_has_bf16() else 'fp32'
    if precision == 'fp32': return model
    if not isinstance(model, nn.Module) or getattr(model, 'exported', False):   # a function or an exported graph: autocast is the way in
        def call(x, t, *y):
            with torch.autocast(device.type, dtype=torch.bfloat16): return model(x, t, *y).float()
        return call
    net = copy.deepcopy(model).to(torch.bfloat16)   # weights cast once, not at every call as autocast would
    return lambda x, t, *y: net(x.to(torch.bfloat16), t, *y).float()

def _randn(shape, generator: torch.Generator | None, device):
    "A function drawing z ~ N(0, I) of `shape` on `device`: from `generator` on its own device (a CPU seed gives the same noise on any device)."
    on = generator.device if generator is not None else device
    return lambda: torch.randn(shape, generator=generator, device=on).to(device)

@contextmanager
def _sampling(model, diffusion: Diffusion, precision: str = 'fp32', shape=None, generator=None):
    """The set-up of every sampling loop (`sample`, `editing.reverse`, the demo's `Batcher`): yields (net, randn), the network
    to call (`_network` at `precision`) and a draw of noise of `shape` (`_randn`), with `model` in eval mode until the block
    ends, then back in the mode it was in."""
    was_training = getattr(model, 'training', False)
    if isinstance(model, nn.Module): model.eval()
    try: yield _network(model, precision, diffusion.device), _randn(shape, generator, diffusion.device)
    finally:
        if isinstance(model, nn.Module): model.train(was_training)

def _finite(x: torch.Tensor, what: str = 'sampling', w: float = 3.0) -> torch.Tensor:
    "`x`, or a `FloatingPointError` if any value is not finite: clamping or uint8 would turn NaN into black images without a word."
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"{what} produced non-finite values ({(~torch.isfinite(x)).sum().item()} of {x.numel()}): the "
                                 f"model's weights or its output are not finite (is w={w:g} far too large?)")
    return x

# %%
#| exports
@torch.no_grad()
def sample(model: nn.Module,              # the network (e.g. `ema.model`), called as model(x, t[, y]), predicting `diffusion.objective`
           diffusion: Diffusion,          # the noise schedule and objective the model was trained with; sets T and the device
           labels: torch.Tensor | None = None,  # (B,) class of each image; None: unconditional
           n: int | None = None,          # number of images when `labels` is None
           shape=(1, 16, 16),             # (C, H, W) of one image
           sampler: str | None = None,    # 'ddim', 'dpm++' (DPM-Solver++(2M)) or 'ddpm'; a flow model's 'euler' or 'heun' (lesson 13); None: ddim, or euler
           steps: int | None = None,      # network calls of DDIM, DPM-Solver++ and Euler (None: 50); Heun's steps take two but the last (DDPM always takes T)
           spacing: str | None = None,    # DDIM's and DPM-Solver++'s 'linspace' or 'trailing'; None: linspace for DDIM, trailing for DPM-Solver++
           w: float | None = None,        # guidance weight: 0 unconditional, 1 conditional, >1 guided; None: 3
           eta: float | None = None,      # DDIM noise: 0 deterministic, 1 ancestral (see "Which η?"); None: 1; DPM-Solver++ is deterministic
           variance: str = 'beta',        # DDPM σ²: 'beta' or 'beta_tilde'
           clip: bool = True,             # clip x̂0 to [-1, 1]
           generator: torch.Generator | None = None,  # seeds the starting noise and every later draw
           x_T: torch.Tensor | None = None,  # (B, C, H, W) starting noise; None: drawn from `generator`
           uint8: bool = False,           # return uint8 images (rounded) instead of floats in [-1, 1]
           trajectory: list | None = None,  # if a list (or anything with `append`), (t, x_t, x̂0) of every step is appended
           precision: str = 'fp32'):      # the network's: 'fp32', 'bf16' (a bf16 copy of its weights), or 'auto': bf16 on a CPU with bf16 instructions
    """Sample with DDPM, DDIM or DPM-Solver++(2M), or a flow model with Euler or Heun (lesson 13), and guidance, in float32
    arithmetic at any `precision`. `ValueError` for an unknown sampler (or one of the other kind of model), spacing or
    precision, a non-finite `w`, `eta` outside [0, 1] (or any `eta` for a flow model) or a wrong `x_T` shape;
    `FloatingPointError` for non-finite images. A distilled student (lesson 14) samples in its own calls and guidance
    by default, and refuses other values."""
    if getattr(diffusion, 'calls', None): sampler, steps, spacing, w, eta = _student_options(diffusion, sampler, steps, spacing, w, eta)
    if diffusion.objective == 'flow' and eta is not None:   # lesson 13's samplers add no noise
        raise ValueError(f"eta={eta!r} does nothing with a flow model (lesson 13): euler and heun add no noise; leave it out")
    steps, w, eta = 50 if steps is None else steps, 3.0 if w is None else w, 1.0 if eta is None else eta
    sampler, spacing = _check_sampler(diffusion, sampler, spacing)
    b, labels = _check_sample(model, labels, n, spacing, variance, w, eta, shape, x_T)
    y = labels.to(diffusion.device) if labels is not None else None
    if sampler in FLOW_SAMPLERS:
        from minddpm.flow import flow_steps, flow_times   # lesson 13's loop, built on this lesson's pieces
        _check_steps(diffusion.T, steps, 'linspace')
        loop = lambda net, x, randn: flow_steps(net, diffusion, x, flow_times(steps), y, w, sampler, clip)
    else:
        ts = list(range(diffusion.T - 1, -1, -1)) if sampler == 'ddpm' else ddim_timesteps(diffusion.T, steps, spacing)
        loop = lambda net, x, randn: denoise_steps(net, diffusion, x, ts, y, w, sampler, eta, variance, clip, randn)
    with _sampling(model, diffusion, precision, (b, *shape), generator) as (net, randn):
        x = randn() if x_T is None else x_T.to(diffusion.device, torch.float32)
        for t, x, x0 in loop(net, x, randn):
            if trajectory is not None and t >= 0: trajectory.append((t, x.cpu(), x0.cpu()))
    x = _finite(x, 'sampling', w)     # the last step's x: the sampled images
    return to_uint8(x) if uint8 else x.clamp(-1, 1)


# %% [markdown]
# Ten digits from the ideal denoiser, guided with w = 3, by DDIM (η = 1, the default, 50 steps) and by
# DPM-Solver++ (10 steps); then the check promised above, on a small untrained network so that it does not depend
# on the ideal denoiser: **DDIM with all T steps and η = 1 is DDPM with σ² = β̃**, given the same noise.

# %%
show_rows([sample(ideal, diffusion, labels, generator=g()), sample(ideal, diffusion, labels, sampler='dpm++', steps=10, generator=g())],
          ['DDIM, 50', 'DPM-Solver++, 10'], title='sample(ideal, diffusion, labels, …), w = 3')
net, short = ConditionalUNet(10, **unet_preset('tiny', in_channels=1)), Diffusion('linear', T=40)
ddpm = sample(net, short, labels[:4], sampler='ddpm', variance='beta_tilde', generator=g())
test_close(sample(net, short, labels[:4], sampler='ddim', steps=40, eta=1.0, generator=g()), ddpm, eps=1e-4)

# %% [markdown]
# ## The reverse scrubber
#
# The trajectory of a sample is the best picture of what a diffusion model does. For each step, show
# $x_t$ (what the sampler holds) above $\hat x_0$ (what the network currently thinks the clean image is),
# for a row of labels. Early on, $\hat x_0$ is a blurry average of everything the class could be; the
# details are decided later, and $x_t$ follows. `reverse_scrubber` keeps every step of `sample`'s loop and
# hands frames to the `Scrubber` of the forward lesson: a live widget in a kernel, the static player on this page.
# The two scrubber cells below import what they use and build their own denoiser: the docs site re-runs them
# on their own while it is built (`#| exec_doc`), without the lesson's other cells.

# %%
#| export
#| hide
def reverse_scrubber(model: nn.Module,       # the network, as for `sample` (predicting `diffusion.objective`)
                     diffusion: Diffusion,   # the noise schedule the model was trained with
                     labels: torch.Tensor,   # (n,) class of each column, one sample each
                     classes=None,           # class names indexed by label, for the column titles; None: the numbers
                     shape=(1, 16, 16),      # (C, H, W) of one image
                     sampler: str = 'ddim',  # 'ddim', 'dpm++' or 'ddpm'
                     steps: int = 50,        # DDIM steps (DDPM always takes T)
                     w: float = 3.0,         # guidance weight: 0 unconditional, 1 conditional, >1 guided
                     frames: int = 25,       # at most this many frames, evenly spaced over the steps
                     seed: int = 0,          # seeds the starting noise and every later draw
                     dpi: int = 60,          # resolution of each frame's PNG
                     **sample_kwargs         # more arguments of `sample`, e.g. `eta`, `clip`
                     ) -> Scrubber:          # one frame per kept step: x_t above x̂0
    "A `Scrubber` over the sampling trajectory: x_t above the predicted x̂0, for each label."
    traj = []
    sample(model, diffusion, labels, shape=shape, sampler=sampler, steps=steps, w=w,
           generator=torch.Generator().manual_seed(seed), trajectory=traj, **sample_kwargs)
    keep = torch.linspace(0, len(traj) - 1, min(frames, len(traj))).round().long().unique().tolist()
    n = len(labels)
    fig, axs = plt.subplots(2, n, figsize=(0.8 * n, 1.9), squeeze=False)
    ims = []
    for row, name in enumerate(('x_t', 'x̂0')):
        for i in range(n):
            ax = axs[row, i]; ax.axis('off')
            ims.append(ax.imshow(torch.zeros(shape[1], shape[2]), cmap='gray', vmin=0, vmax=255, interpolation='nearest'))
            if row == 0: ax.set_title(classes[int(labels[i])] if classes else str(int(labels[i])), fontsize=8)
        axs[row, 0].text(-0.15, 0.5, name, transform=axs[row, 0].transAxes, ha='right', va='center', fontsize=9)
    pngs, captions = [], []
    for k in keep:
        t, xt, x0 = traj[k]
        for im, img in zip(ims, torch.cat([to_uint8(xt), to_uint8(x0)])):
            im.set_data(img.permute(1, 2, 0).squeeze(-1).numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy())
        pngs.append(fig_to_png(fig, dpi=dpi)); captions.append(f'step {k + 1}/{len(traj)}, t = {t}')
    plt.close(fig)
    return Scrubber(pngs, captions, title=f'{sampler.upper()} sampling, w = {w}: drag through the steps')

# %%
show_doc(reverse_scrubber)

# %%
#| exec_doc
from minddpm.data import get_datasets
from minddpm.forward import Diffusion
from minddpm.sampling import IdealDenoiser, reverse_scrubber
_diffusion = Diffusion('linear')
_train, _ = get_datasets('digits', size=16)
_ideal = IdealDenoiser(torch.stack([_train[i][0] for i in range(len(_train))]), _train.labels, _diffusion)
reverse_scrubber(_ideal, _diffusion, torch.arange(10), _train.classes, steps=50, frames=25)

# %% [markdown]
# ## A trained model
#
# The ideal denoiser can only recall its training images. minddpm ships a small network trained on the
# same digits (lesson 07's `tiny` preset; `load_model()` reads it). Its trajectory looks the same, but the
# digits at the end are new ones, drawn in its own hand:

# %%
#| exec_doc
from minddpm.sampling import reverse_scrubber
from minddpm.training import load_model
_tiny = load_model()
reverse_scrubber(_tiny.model, _tiny.diffusion, torch.arange(10), _tiny.classes, shape=_tiny.shape, steps=50, frames=25)

# %% [markdown]
# ## Which η?
#
# On a well-trained CIFAR-10 model the DDIM paper finds η = 0 best at 50 steps. A deterministic sampler
# follows the network's prediction wherever it leads, though, so it shows errors that the noise of η > 0
# washes out: each noise pulls a sample back towards images the network knows. Which errors there are
# depends on what the network was trained to predict. Here are the same starting noises, sampled from the
# shipped model both ways:

# %%
tiny = load_model()
y = torch.arange(10).repeat(2)
show_rows([sample(tiny.model, tiny.diffusion, y, shape=tiny.shape, steps=50, eta=eta, generator=g()).view(2, 10, *tiny.shape)[r]
           for eta in (0.0, 1.0) for r in (0, 1)], ['η = 0', '', 'η = 1', ''], title='DDIM, 50 steps, w = 3, the shipped model')
print(f"the shipped model predicts {tiny.diffusion.objective}; √ᾱ at t = {tiny.diffusion.T - 1}: {tiny.diffusion.sqrt_alpha_bars[-1]:.4f}")

# %% [markdown]
# With the shipped model, which predicts $v$ (lesson 07), both ways give clean digits. The same network trained
# to predict ε draws faint, speckled digits with η = 0 (lesson 08). The reason is the conversion table of lesson
# 02: an ε-model's $\hat x_0 = (x_t - s\,\hat\varepsilon)/a$ divides the network's error by $a = \sqrt{\bar\alpha_t}$,
# tiny at the first steps (printed above), and DDIM with η = 0 rebuilds each $x_s$ from that $\hat x_0$ and adds no
# fresh noise, so it keeps every such error; η = 1 draws fresh noise at each step, which hides it. A v-model's $\hat x_0 = a\,x_t - s\,\hat v$
# multiplies the error by $s \le 1$ instead. η = 1 stays the default here because lesson 08 scores it better on
# this model at 10, 20 and 50 steps. η = 0 is for when each image must follow from its starting noise alone,
# and it is the path DPM-Solver++ follows, in fewer calls:

# %%
show_rows([sample(tiny.model, tiny.diffusion, y[:10], shape=tiny.shape, generator=g(), **kw) for kw in
           (dict(steps=50, eta=0.0), dict(sampler='dpm++', steps=10, spacing='linspace'), dict(sampler='dpm++', steps=10))],
          ['DDIM, η = 0, 50', 'DPM-Solver++, 10 linspace', 'DPM-Solver++, 10 trailing'], title='the shipped model, w = 3')

# %% [markdown]
# DPM-Solver++ at 10 calls draws digits like those of DDIM at 50 with η = 0, and trailing steps, which spend no
# call at t = 0 where there is no noise left, are its default spacing. Lesson 08 measures every sampler and step
# count on this model: the solver is a faster way to the same deterministic images, not to better ones, and the
# stochastic DDIM with η = 1 beats it from 10 calls on.
#
# ## Sampling in bf16
#
# Sampling is all forward passes, and a CPU with bf16 matrix instructions (AMX or AVX512-BF16; `cpu_has_bf16`)
# runs them in bf16 faster. `sample(…, precision='bf16')` casts a copy of the weights to bf16 once,
# instead of autocasting fp32 weights at every call (lesson 09), and keeps the sampler's own arithmetic in
# float32: only the network runs in bf16. `'auto'` picks bf16 where the CPU has the instructions, and
# `minddpm_sample` uses it by default. `sample` keeps `precision='fp32'` as its default, so that the same seed
# gives the same images on every machine, which the tests and these lessons compare against. The same noise
# both ways, and what 100 guided images at 10 steps cost here:

# %%
x32, x16 = (sample(tiny.model, tiny.diffusion, y[:10], shape=tiny.shape, generator=g(), precision=p) for p in ('fp32', 'bf16'))
show_rows([x32, x16, (x16 - x32).abs() * 10 - 1], ['fp32', 'bf16 weights', 'difference ×10'], title='the same noise, w = 3')
print(f"largest pixel difference {(x16 - x32).abs().max():.3f}, mean {(x16 - x32).abs().mean():.4f} (images span 2)")
for p in ('fp32', 'bf16'):
    run = lambda: sample(tiny.model, tiny.diffusion, torch.arange(100) % 10, shape=tiny.shape, steps=10, precision=p)
    run(); t0 = time.perf_counter(); run()                            # the first call warms up
    print(f"{p}: {time.perf_counter() - t0:.2f} s (bf16 instructions on this CPU: {cpu_has_bf16()})")

# %% [markdown]
# Whether bf16 costs quality is a question for many images and several seeds: `python tests/bench_bf16.py`
# scores 500 images per seed both ways with lesson 08's judge, and finds the difference far inside the
# seed-to-seed spread of the score.

# %%
print(f"this lesson ran in {time.perf_counter() - started:.0f} s")

# %% [markdown]
# ## Exercises
#
# Write each function in place of its `...` and run its cell: `check` prints ✓, or where your answer differs and a hint
# ([how the checks work](exercises.ipynb)). Keep the stub's parameter names (`check` passes its inputs by name) and
# return the inputs' dtype unless the stub asks for another. Solutions: `tests/solutions/` in the course's repository.
#
# 1. **One DDIM step, by hand.** With η = 0 and no clipping: from $x_t$ and the predicted noise $\hat\varepsilon$, and
#    the ᾱ of the two steps (Python floats: use `math.sqrt`), return $x_s$. Then run 10 of your steps on the ideal
#    denoiser of this lesson, on the timesteps `ddim_timesteps(1000, 10)` and then to ᾱ_s = 1 (the clean image), and
#    compare with `sample(..., sampler='ddim', steps=10, eta=0, w=1, clip=False, x_T=...)` from the same starting noise
#    and labels (`sample` guides at w = 3 and clips x̂0 unless told otherwise).

# %%
def ddim_step_by_hand(xt, eps_hat, alpha_bar_t, alpha_bar_s):   # (B, C, H, W), (B, C, H, W), ᾱ_t, ᾱ_s
    ...                                                  # return x_s, (B, C, H, W)

check(ddim_step_by_hand)

# %% [markdown]
# 2. **DDPM's other variance.** From a schedule's β (T,), return the posterior variance $\tilde\beta_t$ for every
#    t = 0 … T−1, (T,), as in code: t = 0 is the first step of noising and the last step of sampling. Then plot β and β̃
#    of the linear schedule on one log axis: at which t do they differ most, and why does it matter only for the last
#    few steps of sampling?

# %%
def posterior_variance(betas):   # (T,) float64 β
    ...                           # return (T,) float64 β̃

check(posterior_variance)
