# %%
#| default_exp schedule

# %% [markdown]
# # Noise schedule
# > How much noise each of the T steps adds: the linear and cosine β schedules, ᾱ, SNR, and the coefficients sampling needs, as a module whose buffers move with the model

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/01_schedule.ipynb)
# This lesson has no GPU-only cells: it ran top to bottom in 1 second on a 2-core CPU (measured); a Colab runtime is no slower.

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
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import nn

# %%
#| hide
from fastcore.test import *
from minddpm.exercises import check   # the exercises at the end
import matplotlib.pyplot as plt
import numpy as np
from minddpm.data import load_bundled, resize_uint8, to_unit_range, show_images
from minddpm.data import pick_device, pick_preset

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)              # the same pictures on every run

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # 'colab' sizes on a CUDA GPU, 'tiny' elsewhere

# %% [markdown]
# A diffusion model destroys an image in T small steps and learns to undo each one. Step $t$ keeps
# $\sqrt{1-\beta_t}$ of the image and adds Gaussian noise of variance $\beta_t$:
#
# $$q(x_t \mid x_{t-1}) = \mathcal N\big(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big).$$
#
# The list $\beta_0, \dots, \beta_{T-1}$ is the **noise schedule**. Everything else follows from it:
# $\alpha_t = 1-\beta_t$, and $\bar\alpha_t = \prod_{s \le t} \alpha_s$, the share of the original
# image's variance that is left after step $t$.
#
# **Indexing.** The maths follows the DDPM paper: $x_0$ is the clean image and the steps count from
# 1 to T. The code's arrays are 0-indexed, like every Python array: for `t` in `range(T)`, `betas[t]`
# is the paper's $\beta_{t+1}$, `alpha_bars[t]` its $\bar\alpha_{t+1}$, and `add_noise(x0, t)` (next
# lesson) returns its $x_{t+1}$. So `t = 0` is one small step of noise, the least noisy input the model
# sees, and `t = T-1` the noisiest. The well-known originals mix the two conventions and never train
# or sample the first step (`randint(1, T)`); here every step is used.
#
# ## Two schedules
#
# - **linear** (Ho et al. 2020): $\beta_t$ rises evenly from $10^{-4}$ to $0.02$ over $T=1000$ steps.
# - **cosine** (Nichol & Dhariwal 2021): chosen through $\bar\alpha$ instead, $\bar\alpha(t) = f(t)/f(0)$
#   with $f(t) = \cos^2\!\big(\tfrac{t/T + s}{1+s}\cdot\tfrac{\pi}{2}\big)$ and $s = 0.008$; then
#   $\beta_t = 1 - \bar\alpha_{t}/\bar\alpha_{t-1}$, clipped at 0.999 so the last step stays finite.

# %%
#| exports
SCHEDULE_KINDS = ('linear', 'cosine')

def linear_betas(T: int,                   # number of diffusion steps
                 beta_start: float = 1e-4, # β at t = 0
                 beta_end: float = 0.02,   # β at t = T−1
                 ) -> torch.Tensor:
    "β rising evenly from `beta_start` to `beta_end` over `T` steps (Ho et al. 2020), in float64."
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)

def cosine_betas(T: int,                  # number of diffusion steps
                 s: float = 0.008,        # offset of t/T in the cosine, so β at t = 0 is not vanishingly small
                 max_beta: float = 0.999, # upper clip on β, keeping the last steps finite
                 ) -> torch.Tensor:
    "β whose ᾱ follows a squared cosine (Nichol & Dhariwal 2021, eq. 17), clipped at `max_beta`, in float64."
    f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)  # β_t = 1 − ᾱ_t / ᾱ_{t−1}, with ᾱ = f / f(0)


# %%
T = 1000
schedules = {'linear': linear_betas(T), 'cosine': cosine_betas(T)}
fig, axs = plt.subplots(1, 2, figsize=(8, 2.4))
for kind, b in schedules.items():
    axs[0].plot(b, label=kind); axs[1].plot(torch.cumprod(1 - b, 0), label=kind)
axs[0].set(title='β_t', xlabel='t', yscale='log'); axs[1].set(title='ᾱ_t', xlabel='t'); axs[1].legend();


# %% [markdown]
# Cosine's β starts smaller and ends far larger (log scale on the left): it spends its early steps
# gently and its last steps on the little that is left. ᾱ, on the right, is where that shows.
#
# ## The schedule as a module
#
# Sampling needs more than β: the posterior $q(x_{t-1} \mid x_t, x_0)$ is Gaussian (DDPM eq. 6–7) with
#
# $$\tilde\mu_t = \underbrace{\frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}}_{\text{coef1}}\,x_0
#   + \underbrace{\frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}}_{\text{coef2}}\,x_t,
#   \qquad \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t,$$
#
# with $\bar\alpha_0 = 1$, and the signal-to-noise ratio $\mathrm{SNR}(t) = \bar\alpha_t / (1-\bar\alpha_t)$
# measures how much image is left. `NoiseSchedule` computes all of them once, in float64, and keeps
# them as float32 **buffers**: `.to(device)` moves them, and so does moving any model that holds the
# schedule. No `.cuda()` anywhere. They are not saved in checkpoints (`persistent=False`): the kind and
# T rebuild them exactly. Its arguments are checked by `_check_schedule`, in a hidden cell (`minddpm/schedule.py`
# shows it): an unknown kind, a T that is not an integer ≥ 2 or β bounds out of order are refused with what is allowed.

# %%
#| hide
#| export
def _check_schedule(kind, T, beta_start, beta_end):
    "Raise a `ValueError` that says what is allowed unless the arguments describe a schedule."
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"Unknown schedule kind {kind!r}; use one of {', '.join(SCHEDULE_KINDS)}")
    if isinstance(T, bool) or not isinstance(T, Integral) or T < 2:
        raise ValueError(f"T must be an integer number of steps ≥ 2, got {T!r}")
    if kind == 'linear' and not 0 < beta_start < beta_end < 1:
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")

# %%
#| exports
class NoiseSchedule(nn.Module):
    "β schedule of a diffusion process and every coefficient derived from it, as float32 buffers indexed by t ∈ {0,…,T−1}."
    def __init__(self, kind: str = 'linear',    # 'linear' (Ho et al. 2020) or 'cosine' (Nichol & Dhariwal 2021)
                 T: int = 1000,                 # number of diffusion steps
                 beta_start: float = 1e-4,      # linear: β at t = 0
                 beta_end: float = 0.02):       # linear: β at t = T−1
        super().__init__()
        _check_schedule(kind, T, beta_start, beta_end)
        self.kind, self.T = kind, int(T)
        betas = linear_betas(T, beta_start, beta_end) if kind == 'linear' else cosine_betas(T)
        alphas = 1 - betas
        alpha_bars = torch.cumprod(alphas, 0)
        alpha_bars_prev = F.pad(alpha_bars[:-1], (1, 0), value=1.0)  # alpha_bars[t−1]; 1 before the first step
        coefs = dict(
            betas=betas, alphas=alphas, alpha_bars=alpha_bars, alpha_bars_prev=alpha_bars_prev,
            sqrt_alpha_bars=alpha_bars.sqrt(),                   # √ᾱ_t: how much of x_0 is in x_t
            sqrt_one_minus_alpha_bars=(1 - alpha_bars).sqrt(),   # √(1−ᾱ_t): how much noise
            posterior_variance=betas * (1 - alpha_bars_prev) / (1 - alpha_bars),                    # β̃_t, eq. 7
            posterior_mean_coef1=betas * alpha_bars_prev.sqrt() / (1 - alpha_bars),                 # x_0's weight in μ̃_t
            posterior_mean_coef2=alphas.sqrt() * (1 - alpha_bars_prev) / (1 - alpha_bars),          # x_t's weight in μ̃_t
            snr=alpha_bars / (1 - alpha_bars))
        for name, v in coefs.items(): self.register_buffer(name, v.float(), persistent=False)

    def extra_repr(self): return f"kind={self.kind!r}, T={self.T}"

    @property
    def device(self) -> torch.device: return self.betas.device   # where its tensors, and a sampler's, are


# %% [markdown]
# What sampling will get from it: the posterior's mean is a mix of $x_0$ and $x_t$, and its variance $\tilde\beta_t$
# sits next to the forward step's $\beta_t$.

# %%
sched = NoiseSchedule()
fig, axs = plt.subplots(1, 2, figsize=(8, 2.4))
axs[0].plot(sched.posterior_mean_coef1, label="coef1: x₀'s weight"); axs[0].plot(sched.posterior_mean_coef2, label="coef2: x_t's weight")
axs[0].set(title='the posterior mean μ̃_t (linear)', xlabel='t', xscale='symlog'); axs[0].legend(fontsize=8)
axs[1].plot(sched.betas, label='β_t'); axs[1].plot(sched.posterior_variance, '--', label='β̃_t')
axs[1].set(title='its variance (log scales)', xlabel='t', xscale='symlog', yscale='log'); axs[1].legend(fontsize=8); fig.tight_layout()

# %% [markdown]
# At the first step the posterior is $x_0$ itself (coef1 = 1, $\tilde\beta = 0$: nothing is left to remove but the
# image). A hundred steps in, $\tilde\beta_t \approx \beta_t$ and the mean leans almost all on $x_t$: each reverse
# step only nudges the image it is given. (The two variances are DDPM's two choices of $\sigma_t^2$, lesson 05.)


# %% [markdown]
# Every coefficient against an independent float64 computation of the published formulas, written
# here with numpy and plain loops, to a relative error of $10^{-6}$ (float32 keeps about 7 digits):

# %%
def reference(kind, T=1000, beta_start=1e-4, beta_end=0.02, s=0.008):
    if kind == 'linear': b = np.array([beta_start + (beta_end - beta_start) * i / (T - 1) for i in range(T)])
    else:
        f = lambda i: math.cos((i / T + s) / (1 + s) * math.pi / 2) ** 2
        b = np.array([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)])
    a = 1 - b
    ab = np.cumprod(a)
    abp = np.concatenate([[1.0], ab[:-1]])
    return dict(betas=b, alphas=a, alpha_bars=ab, alpha_bars_prev=abp, sqrt_alpha_bars=np.sqrt(ab),
                sqrt_one_minus_alpha_bars=np.sqrt(1 - ab), posterior_variance=(1 - abp) / (1 - ab) * b,
                posterior_mean_coef1=np.sqrt(abp) * b / (1 - ab), posterior_mean_coef2=np.sqrt(a) * (1 - abp) / (1 - ab),
                snr=ab / (1 - ab))

for kind in SCHEDULE_KINDS:
    s, ref = NoiseSchedule(kind), reference(kind)
    for name, want in ref.items():
        got = getattr(s, name).double().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12, err_msg=f'{kind}.{name}')
    test_eq(len(s.betas), 1000)
    assert (s.alpha_bars.diff() < 0).all(), f'{kind}: ᾱ must fall at every step'
    assert s.alpha_bars[-1] < 1e-4, f'{kind}: ᾱ_(T−1) must be close to 0'
    test_eq(s.posterior_variance[0], 0.)     # t = 0 has nothing left to remove but x_0 itself
    test_close(s.posterior_mean_coef1[0], 1.)

# %% [markdown]
# The buffers follow the module to any device (here the `meta` device, which a CPU machine has too),
# also when the schedule sits inside another module, and they stay out of the `state_dict`:

# %%
inside = nn.Sequential(NoiseSchedule()).to('meta')
inside[0].alpha_bars.device, inside.state_dict()

# %% [markdown]
# ## Linear against cosine: where the steps go
#
# Plot both schedules side by side: β, ᾱ, and the log-SNR, $\log\mathrm{SNR}(t) = \log\bar\alpha_t - \log(1-\bar\alpha_t)$.

# %%
lin, cos_ = NoiseSchedule('linear'), NoiseSchedule('cosine')
fig, axs = plt.subplots(1, 3, figsize=(11, 2.6))
for s in (lin, cos_):
    axs[0].plot(s.betas, label=s.kind)
    axs[1].plot(s.alpha_bars, label=s.kind)
    axs[2].plot(s.snr.log(), label=s.kind)
axs[0].set(title='β_t (log scale)', xlabel='t', yscale='log')
axs[1].set(title='ᾱ_t', xlabel='t')
axs[2].set(title='log SNR(t)', xlabel='t')
axs[2].axhline(math.log(1e-3), color='gray', lw=.8, ls='--')
axs[2].text(5, math.log(1e-3) + .5, 'SNR = 0.001', fontsize=8, color='gray')
axs[0].legend(); fig.tight_layout()

# %% [markdown]
# Linear's ᾱ falls fast and is nearly 0 long before the end; cosine's falls slowly at first, steepest
# in the middle, and reaches 0 only at the very end. Count the steps whose input is practically pure
# noise, SNR below 0.001 (the image's amplitude under 3 % of the noise's):

# %%
wasted = {s.kind: int((s.snr < 1e-3).sum()) for s in (lin, cos_)}
wasted

# %% [markdown]
# Those steps cost as much to train and to sample as any other, but there is almost nothing left in
# their input to denoise. Cosine gives them to the middle of the range instead, where the image is
# being decided. The difference is easy to see on a digit noised at evenly spaced t with each schedule
# (this is the closed form $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$ of the
# next lesson):

# %%
x0 = to_unit_range(resize_uint8(load_bundled()['images'][:1], 16))
ts = torch.linspace(0, 999, 10).long()
eps = torch.randn(len(ts), *x0.shape[1:], generator=torch.Generator().manual_seed(0))
rows = [s.sqrt_alpha_bars[ts, None, None, None] * x0 + s.sqrt_one_minus_alpha_bars[ts, None, None, None] * eps for s in (lin, cos_)]
show_images(torch.cat(rows), ncols=10, scale=.8)
fig = plt.gcf()
for ax, t in zip(fig.axes[:10], ts): ax.set_title(f't={int(t)}', fontsize=7)
fig.text(0.003, 0.62, 'linear', rotation=90, fontsize=9); fig.text(0.003, 0.14, 'cosine', rotation=90, fontsize=9);

# %% [markdown]
# ## Exercises
#
# Write each function in place of its `...` and run its cell: `check` prints ✓, or where your answer differs and a hint
# ([how the checks work](exercises.ipynb)). Keep the stub's parameter names (`check` passes its inputs by name) and
# return the inputs' dtype unless the stub asks for another. Solutions: `tests/solutions/` in the course's repository.
#
# 1. **ᾱ from β.** Given the β of any schedule, a (T,) float64 tensor, return ᾱ_t for every t, (T,).

# %%
def alpha_bars_from_betas(betas):   # (T,) β_0 … β_{T−1}
    ...                              # return (T,) ᾱ_0 … ᾱ_{T−1}

check(alpha_bars_from_betas)

# %% [markdown]
# 2. **The cosine schedule, from its ᾱ.** Nichol & Dhariwal define the cosine schedule by ᾱ, not by β:
#    $\bar\alpha_t = f(t + 1)/f(0)$ with $f(u) = \cos^2\!\big(\frac{u/T + s}{1 + s}\cdot\frac{\pi}{2}\big)$ for our
#    0-indexed t. Return ᾱ_t for t = 0 … T−1 as a float64 tensor (this lesson built β from it; here go straight to ᾱ).

# %%
def cosine_alpha_bars(T, s=0.008):   # T steps, offset s
    ...                               # return (T,) float64 ᾱ_0 … ᾱ_{T−1}

check(cosine_alpha_bars)

# %% [markdown]
# 3. **Signal to noise.** Return the SNR of each ᾱ. Then, with your function and `lin.alpha_bars`, find the first t
#    at which the linear schedule's SNR falls below 1, where the noise in $x_t$ starts to outweigh the image.

# %%
def snr(alpha_bars):   # (T,) ᾱ
    ...                # return (T,) SNR

check(snr)
