# %%
#| default_exp flow

# %% [markdown]
# # Flow matching
# > A straight line from data to noise, the velocity along it as the target, Euler and Heun steps back, and one round of reflow that straightens the paths: on a 2-D toy, then on the course's UNet against v-prediction, and why DDIM is Euler on that line

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/13_flow.ipynb)
# This lesson has no GPU-only cells: it ran top to bottom in 61 seconds on a 2-core CPU (measured); its benchmarks (last section) took an hour. A Colab runtime is no slower.

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
from pathlib import Path

import torch
from torch import nn

from minddpm.conditioning import NULL_LABEL, guided_eps
from minddpm.forward import _ForwardChecks
from minddpm.sampling import Step

# %%
#| hide
from fastcore.test import *
from minddpm.exercises import check   # the exercises at the end
import matplotlib.pyplot as plt
from minddpm.data import pick_device, pick_preset

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # the toy runs on the CPU anywhere

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)

# %% [markdown]
# Lessons 01–05 went from data to noise in a thousand small Gaussian steps and learned to walk back. Flow
# matching (Lipman et al. 2023; Liu et al. 2022, "rectified flow") keeps the idea and drops the schedule: pair
# each data point $x_0$ with a noise draw $\varepsilon$, join them with a straight line,
#
# $$x_t = (1 - t)\,x_0 + t\,\varepsilon,\qquad t \in [0, 1],$$
#
# and teach a network the velocity along it, $\frac{d x_t}{dt} = \varepsilon - x_0$. Sampling starts at
# $x_1 = \varepsilon$ and follows the learned velocity back to $t = 0$ with Euler steps. Stable Diffusion 3 and
# FLUX train this way. This lesson shows it on points in the plane first, where every path can be drawn.

# %%
#| exports
def linear_path(x0: torch.Tensor,   # (B, …) data
                eps: torch.Tensor,  # (B, …) noise, the same shape
                t: torch.Tensor,    # (B,) times in [0, 1]; 0 is the data, 1 the noise
                ) -> torch.Tensor:  # (B, …) the points x_t on the straight lines
    "x_t = (1 − t)·x0 + t·ε: the straight path of rectified flow (Liu et al. 2022) and of SD3's flow matching."
    t = t.reshape(-1, *[1] * (x0.ndim - 1))
    return (1 - t) * x0 + t * eps

def flow_target(x0: torch.Tensor,    # (B, …) data
                eps: torch.Tensor,   # (B, …) noise, the same shape
                ) -> torch.Tensor:   # (B, …) ε − x0
    "The velocity d x_t / dt = ε − x0 along `linear_path`: what the network learns to predict, the same at every t."
    return eps - x0

@torch.no_grad()
def euler_sample(velocity,              # f(x, t) → the predicted ε − x0; t is a (B,) tensor of times in [0, 1]
                 x1: torch.Tensor,      # (B, …) the noise to start from, at t = 1
                 steps: int = 50,       # Euler steps (network calls), uniform in t from 1 to 0
                 trajectory: list | None = None,  # if a list, x at every time visited is appended, x1 first
                 ) -> torch.Tensor:     # (B, …) the points at t = 0
    "Follow the learned velocity from t = 1 back to t = 0 with `steps` Euler steps: x ← x + (t_next − t)·v(x, t)."
    if steps < 1: raise ValueError(f"steps must be at least 1, got {steps}")
    ts, x = torch.linspace(1, 0, steps + 1).tolist(), x1.clone()
    if trajectory is not None: trajectory.append(x.clone())
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t) * velocity(x, torch.full((len(x),), t, device=x.device))
        if trajectory is not None: trajectory.append(x.clone())
    return x

# %% [markdown]
# The data: two moons, and a network of a few thousand weights that takes the point and the time.

# %%
def moons(n, generator=None):   # n points on two interleaved half circles, a little noise
    a = torch.rand(n, generator=generator) * math.pi
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper[:, None], torch.stack([a.cos(), a.sin()], 1), torch.stack([1 - a.cos(), 0.5 - a.sin()], 1))
    return (x - torch.tensor([0.5, 0.25])) * 1.5 + 0.05 * torch.randn(n, 2, generator=generator)

class VelocityMLP(nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2))
    def forward(self, x, t): return self.net(torch.cat([x, t[:, None]], 1))

def fit(pairs, steps=3000, batch=512, seed=0):   # regress ε − x0 at x_t on (x0, ε) pairs drawn by `pairs(batch)`
    torch.manual_seed(seed)
    net = VelocityMLP()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        x0, eps = pairs(batch)
        t = torch.rand(batch)
        loss = ((net(linear_path(x0, eps, t), t) - flow_target(x0, eps)) ** 2).mean()
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    return net.eval()

g = torch.Generator().manual_seed(0)
x0_show, eps_lines = moons(40, g), torch.randn(40, 2, generator=g)
fig, ax = plt.subplots(figsize=(3.5, 3.5))
for a, b in zip(x0_show, eps_lines): ax.plot([a[0], b[0]], [a[1], b[1]], c='C1', lw=.6)
ax.scatter(*x0_show.T, s=8, c='C0', label='data x₀ (t = 0)'); ax.scatter(*eps_lines.T, s=8, c='0.5', label='noise ε (t = 1)')
ax.set(title='training pairs: straight lines that cross', xticks=[], yticks=[], aspect='equal'); ax.legend(fontsize=7);

# %%
net = fit(lambda b: (moons(b), torch.randn(b, 2)))
print(f"{sum(p.numel() for p in net.parameters()):,} weights")

# %% [markdown]
# Independent pairs cross: the line from a noise point to its data point passes others going elsewhere. At a
# crossing the network can only learn the *average* of the velocities through it, so the paths it learns bend
# round each other. Here are 300 of them, each followed with 100 Euler steps from its noise (grey) to where it
# lands (blue):

# %%
def plot_paths(velocity, eps, steps, ax, title):
    path = []
    euler_sample(velocity, eps, steps, trajectory=path)
    path = torch.stack(path)[::5]                                      # every 5th of the steps + 1 points, (·, N, 2): lighter pictures
    ax.plot(path[..., 0], path[..., 1], lw=.4, c='C1', alpha=.5)
    ax.scatter(*path[0].T, s=2, c='0.6'); ax.scatter(*path[-1].T, s=2, c='C0')
    ax.set(title=title, xticks=[], yticks=[], aspect='equal')

eps_show = torch.randn(300, 2, generator=torch.Generator().manual_seed(1))
fig, ax = plt.subplots(figsize=(3.5, 3.5))
plot_paths(net, eps_show, 100, ax, 'learned paths, 100 Euler steps')

# %% [markdown]
# Straightness measures how far a path strays from the line between its ends: the mean of
# $|v(x_t, t) - (x_1 - x_0)|^2$ along it (Liu et al. 2022), zero for a straight path, which one Euler step
# follows exactly. And the energy distance (Székely and Rizzo) compares a cloud of samples with the data: zero
# only when they have the same distribution.

# %%
#| exports
@torch.no_grad()
def straightness(velocity,            # f(x, t) → velocity, as `euler_sample` takes it
                 x1: torch.Tensor,    # (B, …) noise the paths start from
                 steps: int = 100,    # Euler steps used to follow them
                 ) -> float:
    "Mean of |v(x_t, t) − (x1 − x0)|² along Euler paths from `x1` to their ends x0: 0 for straight paths (Liu et al. 2022)."
    path = []
    x0 = euler_sample(velocity, x1, steps, trajectory=path)
    ts = torch.linspace(1, 0, steps + 1)
    chord = x1 - x0
    return torch.stack([((velocity(x, torch.full((len(x),), float(t))) - chord) ** 2).flatten(1).sum(1).mean()
                        for x, t in zip(path[:-1], ts[:-1])]).mean().item()

def energy_distance(a: torch.Tensor,  # (N, D) samples
                    b: torch.Tensor,  # (M, D) samples
                    ) -> float:
    "2·E|a − b| − E|a − a′| − E|b − b′| (Székely and Rizzo 2013): 0 exactly when the two distributions are the same."
    d = lambda u, v: torch.cdist(u, v).mean()
    return (2 * d(a, b) - d(a, a) - d(b, b)).item()

# %%
eps_test, data_test = torch.randn(2000, 2, generator=torch.Generator().manual_seed(2)), moons(2000, torch.Generator().manual_seed(3))
def scores(velocity):   # energy distance to the data after 1, 2, 4 and 100 Euler steps, and straightness
    return {n: energy_distance(euler_sample(velocity, eps_test, n), data_test) for n in (1, 2, 4, 100)}, straightness(velocity, eps_test)
before, straight_before = scores(net)
print('flow:   ', {f'{n} steps': round(e, 4) for n, e in before.items()}, f'straightness {straight_before:.3f}')

# %% [markdown]
# ## Reflow
#
# The model now defines a *deterministic* map from noise to data: follow its paths. Pairs made by that map do
# not cross, since two paths of one ODE never meet. Reflow (Liu et al. 2022) trains a second model on those
# pairs, $(\hat x_0, \varepsilon)$ with $\hat x_0$ the first model's sample from $\varepsilon$, instead of on
# independent ones. Its straight lines no longer cross, so it can learn them as they are.

# %%
eps_pairs = torch.randn(20000, 2, generator=torch.Generator().manual_seed(4))
x0_pairs = euler_sample(net, eps_pairs, 100)
def coupled(b):
    i = torch.randint(0, len(eps_pairs), (b,))
    return x0_pairs[i], eps_pairs[i]
reflowed = fit(coupled)
after, straight_after = scores(reflowed)
print('reflow: ', {f'{n} steps': round(e, 4) for n, e in after.items()}, f'straightness {straight_after:.3f}')
assert after[1] <= before[1] / 2   # one reflow at least halves the 1-step sample's distance to the data

# %%
fig, axs = plt.subplots(1, 4, figsize=(10, 2.7))
plot_paths(net, eps_show[:200], 100, axs[0], 'flow: paths')
plot_paths(reflowed, eps_show[:200], 100, axs[1], 'after one reflow: paths')
for ax, (name, v) in zip(axs[2:], (('flow', net), ('after reflow', reflowed))):
    ax.scatter(*data_test[:500].T, s=2, c='0.8', label='data')
    ax.scatter(*euler_sample(v, eps_test[:500], 1).T, s=2, c='C3', label='1 Euler step')
    ax.set(title=f'{name}: one step', xticks=[], yticks=[], aspect='equal')
axs[2].legend(fontsize=7, markerscale=4); fig.tight_layout()

# %% [markdown]
# ## The same on images
#
# Nothing in the recipe above is about points. For images, $x_0$ is a digit, $\varepsilon$ a noise image of its
# shape, and the velocity network is the conditional UNet of lessons 03 and 04, unchanged. Three things differ from
# the diffusion it learned before:
#
# - **time is continuous**: $t$ is any number in $[0, 1]$, not a step in $\{0, \dots, 999\}$. The UNet's sinusoidal
#   embedding (lesson 03) is tuned to numbers up to a thousand, so it is given $1000\,t$, as Stable Diffusion 3 does;
# - **how $t$ is drawn**: uniformly, or *logit-normal* ($t = \sigma(u)$ with $u \sim \mathcal N(0, 1)$), which SD3
#   found best (Esser et al. 2024, §5.1): it trains the middle of the path, where the velocity is hardest to guess,
#   more often than its ends;
# - **the target** is $\varepsilon - x_0$, the same at every $t$ of a pair.
#
# Label drop and classifier-free guidance carry over as they are: the guided velocity is
# $v_u + w\,(v_c - v_u)$, both branches in one batched pass, exactly lesson 04's mix. And the network's output can
# be read back as lesson 02's $(\hat\varepsilon, \hat x_0)$: from $x_t = (1-t)x_0 + t\varepsilon$ and
# $v = \varepsilon - x_0$,
#
# $$\hat x_0 = x_t - t\,\hat v, \qquad \hat\varepsilon = x_t + (1 - t)\,\hat v.$$
#
# `FlowMatching` plays the part `Diffusion` plays for the other objectives, so training (lesson 07), validation,
# checkpoints and the commands take it as they take a `Diffusion`: `minddpm_train --objective flow`.

# %%
#| exports
T_SAMPLINGS = ('uniform', 'logit_normal')   # how a flow run draws t in [0, 1]

class FlowMatching(_ForwardChecks, nn.Module):
    """The straight path x_t = (1 − t)·x0 + t·ε for images, t ∈ [0, 1], with a network predicting v = ε − x0: what
    `Diffusion` is to the ε, v and x0 objectives (lesson 02), with the same methods, for the objective 'flow'."""
    objective = 'flow'
    def __init__(self, t_sampling: str = 'uniform', # how training draws t: 'uniform', or 'logit_normal' (σ(N(0, 1)), SD3)
                 T: int = 1000):                    # the network is given T·t: the range the time embedding was built for
        super().__init__()
        self.t_sampling, self.T = self.check_choice('t_sampling', t_sampling, T_SAMPLINGS), T
        self.register_buffer('origin', torch.zeros(()), persistent=False)   # follows .to(device), like the schedule's buffers

    def extra_repr(self): return f"t_sampling={self.t_sampling!r}, T={self.T}"
    @property
    def device(self) -> torch.device: return self.origin.device

    def sample_timesteps(self, n: int,                              # how many: one per image of a batch
                         generator: torch.Generator | None = None,  # the draws' generator (its device is used); None: the global one
                         ) -> torch.Tensor:                         # (n,) float32 times in (0, 1)
        "`n` times t, uniform in [0, 1) or logit-normal: t = sigmoid(u), u ~ N(0, 1) (Esser et al. 2024, §3.1)."
        device = generator.device if generator is not None else self.device
        if self.t_sampling == 'uniform': return torch.rand(n, device=device, generator=generator)
        return torch.randn(n, device=device, generator=generator).sigmoid()

    def network_time(self, t: torch.Tensor) -> torch.Tensor: return t * self.T   # (B,) t in [0, 1] → what the UNet embeds

    def add_noise(self, x0: torch.Tensor,              # clean images (B, C, H, W) in [-1, 1]
                  t: torch.Tensor,                     # (B,) times in [0, 1]
                  noise: torch.Tensor | None = None):  # ε with x0's shape; drawn when None
        "x_t = (1 − t)·x0 + t·ε (`linear_path`); returns (x_t, ε)."
        eps = self.check_noise(noise, x0)
        return linear_path(x0, eps, t), eps

    def target(self, x0, eps, t=None) -> torch.Tensor:
        "v = ε − x0 (`flow_target`), the same at every t."
        return flow_target(x0, eps)

    def predictions(self, xt: torch.Tensor,  # images x_t (B, C, H, W)
                    t: torch.Tensor,         # (B,) their times in [0, 1]
                    out: torch.Tensor,       # the network's v̂, xt's shape
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        "The velocity read as (ε̂, x̂0) = (x_t + (1 − t)·v̂, x_t − t·v̂)."
        t = t.reshape(-1, *[1] * (xt.ndim - 1))
        return xt + (1 - t) * out, xt - t * out

    def snr(self, t: torch.Tensor) -> torch.Tensor: return ((1 - t) / t) ** 2   # signal-to-noise ratio of x_t

    def loss_weights(self, t: torch.Tensor,      # (B,) times in [0, 1]
                     weighting: str = 'uniform', # 'uniform' (plain MSE on v, as SD3) or 'min_snr'
                     gamma: float = 5.0,         # min-SNR's γ
                     ) -> torch.Tensor:          # (B,) weights of each image's v MSE
        """Per-image weights of the velocity's MSE: 1, or min(SNR_t, γ)·t², which is min-SNR's min(SNR_t, γ) on the x0
        error (Hang et al. 2023) since x̂0 − x0 = −t·(v̂ − v). `ValueError` for a bad weighting or γ."""
        if self.check_weighting(weighting, gamma) == 'uniform': return torch.ones_like(t)
        return self.snr(t).clamp(max=gamma) * t ** 2

# %% [markdown]
# Sampling walks $t$ from 1 down to 0 in equal steps. **Euler** takes one call a step. **Heun** takes an Euler step,
# looks at the velocity where it landed, and redoes the step with the mean of the two (second order, as in Karras et
# al. 2022): two calls a step, one on the last, where the velocity at $t = 0$ adds nothing. With `clip`, $\hat x_0$ is
# clipped to $[-1, 1]$ and the velocity recomputed from it, $v = (x_t - \hat x_0)/t$: the same clipping as DDIM's.

# %%
#| exports
def flow_times(steps: int,       # steps from 1 to 0, at least 1
               ) -> list[float]:  # steps + 1 times, 1.0 first, 0.0 last
    "`steps` + 1 times from 1 down to 0, equally spaced: the grid `flow_steps` walks."
    return torch.linspace(1, 0, steps + 1).tolist()

def _velocity(net, flow: FlowMatching, x, t: float, y, w, clip):
    "v̂ at time `t` (guided when `y` is given), and x̂0; clipped x̂0 and the velocity it implies with `clip`."
    tt = torch.full((len(x),), t, device=x.device)
    tn = flow.network_time(tt)
    out = net(x, tn) if y is None else guided_eps(net, x, tn, y, w)   # lesson 04's mix, both branches in one pass
    x0 = flow.predictions(x, tt, out)[1]
    if clip: x0 = x0.clamp(-1, 1); out = (x - x0) / t
    return out, x0

@torch.no_grad()
def flow_steps(net,                      # called as net(x, 1000·t[, y]), predicting v = ε − x0
               flow: FlowMatching,       # the path the network was trained on
               x: torch.Tensor,          # (B, C, H, W) images at ts[0], usually pure noise at t = 1
               ts: list[float],          # times from 1 down to 0 (`flow_times`)
               y=None,                   # (B,) class labels; None: unconditional
               w: float = 3.0,           # guidance weight: 0 unconditional, 1 conditional, >1 guided
               sampler: str = 'euler',   # 'euler' (one call a step) or 'heun' (two, one on the last)
               clip: bool = True):       # clip x̂0 to [-1, 1]
    "Follow the velocity along `ts`, yielding `Step(t, x_t, x̂0)` at each time, then `Step(-1, x, x)` with the images."
    for t, s in zip(ts[:-1], ts[1:]):
        v, x0 = _velocity(net, flow, x, t, y, w, clip)
        x_s = x + (s - t) * v                                            # Euler
        if sampler == 'heun' and s > 0:
            x_s = x + (s - t) * (v + _velocity(net, flow, x_s, s, y, w, clip)[0]) / 2   # the trapezoid: Heun
        yield Step(t, x, x0)
        x = x_s
    yield Step(-1, x, x)

def flow_calls(sampler: str,  # 'euler' or 'heun'
               steps: int,    # its steps from 1 to 0
               ) -> int:
    "Network evaluations (a guided one, both branches in one batch, counted once) of `steps` steps of a flow sampler."
    return steps if sampler == 'euler' else 2 * steps - 1

# %% [markdown]
# ### A flow model in a minute
#
# Training is lesson 07's loop with `objective='flow'`: nothing else changes, not the network, not the batch, not the
# cost of a step. A run of 600 steps of 32 images, under a minute on two CPU cores, already draws digits one can read, and
# shows where the network learns: rectified-flow code such as minRF plots the loss per slice of $t$ through
# training, and here it is on held-out digits, at fixed times and noise.

# %%
import dataclasses, tempfile
from minddpm.data import to_uint8
from minddpm.run import Run, TRAIN_PRESETS
from minddpm.sampling import sample
from minddpm.training import train_steps

# %%
@torch.no_grad()
def loss_by_t(run, bins=10, seed=0):   # held-out MSE of the velocity in each tenth of t, at fixed times and noise
    g = torch.Generator().manual_seed(seed)
    model, flow, errs, ts = run.ema.model.eval(), run.diffusion, [], []
    for x, y in run.val_dl:
        t = (torch.arange(len(x)) % bins + torch.rand(len(x), generator=g)) / bins
        xt, eps = flow.add_noise(x, t, torch.randn(x.shape, generator=g))
        errs.append((model(xt, flow.network_time(t), y) - flow.target(x, eps)).square().flatten(1).mean(1)); ts.append(t)
    err, b = torch.cat(errs), (torch.cat(ts) * bins).long()
    return [err[b == k].mean().item() for k in range(bins)]

run = Run(dataclasses.replace(TRAIN_PRESETS['tiny'], objective='flow', steps=600, batch_size=32, ema_start=100, out=tempfile.mkdtemp()))
print(run.diffusion)
by_t = {0: loss_by_t(run)}
for s in train_steps(run):
    if run.step % 150 == 0: by_t[run.step] = loss_by_t(run)

# %%
fig, axs = plt.subplots(1, 2, figsize=(10, 2.8))
for step, errs in by_t.items():
    axs[0].plot((torch.arange(10) + .5) / 10, errs, marker='o', ms=3, label=f'step {step}')
axs[0].set(xlabel='t (0: data, 1: noise)', ylabel='held-out MSE of v', title='where the velocity is learned', yscale='log')
axs[0].legend(fontsize=7)
y_show, x1 = torch.arange(10).repeat(2), torch.randn(20, 1, 16, 16, generator=torch.Generator().manual_seed(0))
rows = [sample(run.ema.model, run.diffusion, y_show, sampler=sampler, steps=k, x_T=x1) for sampler, k in (('euler', 2), ('euler', 8), ('heun', 4))]
axs[1].imshow(torch.cat([torch.cat(list(to_uint8(r)[:, 0]), 1) for r in rows]), cmap='gray', vmin=0, vmax=255)
axs[1].set(yticks=[8, 24, 40], yticklabels=['Euler, 2 calls', 'Euler, 8', 'Heun, 7'], xticks=[], title='600 steps of 32, w = 3')
fig.tight_layout()

# %% [markdown]
# The error falls at every $t$ at once. It stays highest in the first tenth, $t < 0.1$, where the image is nearly
# clean and the network must find a faint noise in it. How much of each slice's error is left to learn is not
# readable from this plot: its floor at each $t$ is the part of $\varepsilon - x_0$ that $x_t$ cannot tell, and
# that floor differs along the path. Which times deserve more of the draws is answered by training both ways, in
# the measurements at the end: logit-normal draws, which favour the middle of the path as SD3's do, scored better
# on both data sets.

# %% [markdown]
# ## Two sides of one coin
#
# A diffusion's $x_t = \alpha_t x_0 + \sigma_t \varepsilon$ (with $\alpha_t = \sqrt{\bar\alpha_t}$,
# $\sigma_t = \sqrt{1 - \bar\alpha_t}$) is a point on the straight path too, only scaled. Divide it by
# $\alpha_t + \sigma_t$:
#
# $$\frac{x_t}{\alpha_t + \sigma_t} = (1 - \tau)\,x_0 + \tau\,\varepsilon, \qquad \tau = \frac{\sigma_t}{\alpha_t + \sigma_t}.$$
#
# So every step $t$ of lesson 01's schedule is a time $\tau$ of the straight path, and the diffusion's image is the
# path's point $z_\tau$ times $\alpha_t + \sigma_t$ (Kingma & Gao 2023; Gao et al. 2024). A DDIM step with $\eta = 0$
# moves $x_t$ to $\alpha_s \hat x_0 + \sigma_s \hat\varepsilon$ keeping the network's $(\hat x_0, \hat\varepsilon)$;
# divided by $\alpha_s + \sigma_s$, that is $(1 - \tau_s)\hat x_0 + \tau_s \hat\varepsilon$, which is exactly the
# Euler step $z_\tau + (\tau_s - \tau)(\hat\varepsilon - \hat x_0)$ of the flow. **DDIM is Euler on the straight path**,
# whatever the schedule; the schedule only decides which times $\tau$ the steps land on. The two samplers give the
# same images when the networks agree, and the ideal ones agree: both compute $\mathbb E[x_0 \mid x_t]$ from the same
# information. Here is the check, on the ideal denoiser of lesson 05 and its flow twin, with guidance and clipping on.

# %%
#| exports
def flow_coordinates(diffusion,       # a `Diffusion` (its ᾱ_t)
                     x: torch.Tensor, # (B, C, H, W) its images x_t
                     t: int,          # their timestep, in {0, …, T−1}
                     ) -> tuple[torch.Tensor, float]:
    "Where x_t of a diffusion sits on the straight path: (z, τ) = (x_t/(α_t + σ_t), σ_t/(α_t + σ_t)), α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t)."
    a, s = diffusion.sqrt_alpha_bars[t], diffusion.sqrt_one_minus_alpha_bars[t]
    return x / (a + s), (s / (a + s)).item()

class IdealVelocity(nn.Module):
    "The best possible velocity for a finite image set: E[ε − x0 | x_t] on the straight path, over all its images or one class's."
    def __init__(self, images: torch.Tensor, # (N, C, H, W) in [-1, 1]
                 labels: torch.Tensor,       # (N,) class indices
                 flow: FlowMatching):        # the path; the network is called with `flow.network_time(t)`
        super().__init__()
        self.register_buffer('images', images.flatten(1).float())
        self.register_buffer('labels', labels.long())
        self.flow = flow

    def forward(self, x: torch.Tensor, time: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        t = (time / self.flow.T)[:, None]                                                    # (B, 1), in (0, 1]
        d2 = torch.cdist(x.flatten(1)[:, None], (1 - t)[:, :, None] * self.images[None],
                         compute_mode='donot_use_mm_for_euclid_dist')[:, 0] ** 2                # (B, N)
        logits = -d2 / (2 * t ** 2)                                                           # log p(x_t | x0 = image i)
        if y is not None:
            y = torch.as_tensor(y, device=x.device)[:, None]
            logits = logits.masked_fill((self.labels[None] != y) & (y != NULL_LABEL), float('-inf'))
        x0 = (logits.softmax(-1) @ self.images).view_as(x)                                   # E[x0 | x_t]
        eps = (x - (1 - t).view(-1, 1, 1, 1) * x0) / t.view(-1, 1, 1, 1)
        return eps - x0

# %%
from minddpm.data import load_bundled, resize_uint8, to_unit_range
from minddpm.forward import Diffusion
from minddpm.sampling import IdealDenoiser, ddim_timesteps

# %%
digits = load_bundled()
keep = torch.randperm(len(digits['images']), generator=torch.Generator().manual_seed(0))[:500]
images, labels = to_unit_range(resize_uint8(digits['images'][keep], 16)), digits['labels'][keep]
diffusion, flow = Diffusion(objective='v'), FlowMatching()
ideal_v, ideal_flow = IdealDenoiser(images, labels, diffusion), IdealVelocity(images, labels, flow)

steps, y = 10, torch.arange(10)
x_T = torch.randn(10, 1, 16, 16, generator=torch.Generator().manual_seed(5))
by_ddim = sample(ideal_v, diffusion, y, sampler='ddim', eta=0.0, steps=steps, x_T=x_T)        # v-prediction, DDIM, η = 0
ts = ddim_timesteps(diffusion.T, steps)
z, tau0 = flow_coordinates(diffusion, x_T, ts[0])
taus = [flow_coordinates(diffusion, x_T, t)[1] for t in ts] + [0.0]                           # the same steps, as times τ
by_euler = [s for s in flow_steps(ideal_flow, flow, z, taus, y)][-1].x                        # flow, Euler
print(f"DDIM (v, η = 0) and Euler (flow) on the ideal networks, {steps} steps: largest difference "
      f"{(by_ddim - by_euler.clamp(-1, 1)).abs().max():.1e} (images in [-1, 1])")
test_close(by_ddim, by_euler.clamp(-1, 1), eps=1e-4)

# %%
fig, axs = plt.subplots(1, 3, figsize=(11, 2.6), gridspec_kw=dict(width_ratios=[1.2, 2, 2]))
t_all = torch.arange(diffusion.T)
axs[0].plot(t_all, [flow_coordinates(diffusion, x_T[:1], int(t))[1] for t in t_all], label='τ(t), linear β')
axs[0].plot(t_all, t_all / (diffusion.T - 1), ls=':', c='0.5', label='t / (T − 1)')
axs[0].scatter(ts, taus[:-1], s=12, c='C3', zorder=3, label=f'DDIM\'s {steps} steps'); axs[0].legend(fontsize=7)
axs[0].set(xlabel='diffusion step t', ylabel='flow time τ', title='one clock in the other')
for ax, x, title in ((axs[1], by_ddim, 'DDIM on the v-model'), (axs[2], by_euler, 'Euler on the flow model')):
    ax.imshow(torch.cat(list(to_uint8(x)[:, 0]), 1), cmap='gray', vmin=0, vmax=255); ax.set(title=title, xticks=[], yticks=[])
fig.tight_layout()

# %% [markdown]
# The linear schedule is halfway along the path (τ = 0.5) at t = 259 and spends its last 500 steps above τ = 0.77,
# so DDIM's even steps in t land densely near the noise and sparsely near the data; a flow model's uniform steps in
# τ are just another choice of landing points. The two families differ in what the network learns (its target and
# the times it trains on), not in how sampling works.

# %% [markdown]
# ## Reflow on images
#
# Reflow needs nothing new: the pairs $(\hat x_0, \varepsilon)$ come from the model's own sampler, and the training
# step is lesson 07's, given those pairs instead of independent (image, noise) draws. A share of the pairs is drawn
# with the null label, as training drops labels, so the reflowed model still has an unconditional branch and
# guidance works as before.

# %%
#| exports
@torch.no_grad()
def reflow_pairs(model,                    # a flow model's network (e.g. `load_model(path).model`)
                 flow: FlowMatching,       # its path
                 num_classes: int,         # labels are drawn from 0 … num_classes − 1
                 n: int,                   # how many pairs
                 shape,                    # (C, H, W) of one image
                 steps: int = 32,          # Euler steps of the sampler that makes them
                 p_uncond: float = 0.1,    # share drawn with `NULL_LABEL` (the unconditional branch), as training drops labels
                 seed: int = 0,            # seeds ε and the labels
                 batch: int = 250,         # images per sampling loop
                 precision: str = 'auto'): # the network's, as `sample` takes it
    """`n` (x̂0, ε, y) triples of the model's own making (Liu et al. 2022): ε ~ N(0, I), y uniform over the classes or
    the null label, and x̂0 its Euler sample from ε at w = 1. Pairs made by one ODE never cross."""
    from minddpm.sampling import sample   # lesson 05's sampler, which takes flow models
    if flow.objective != 'flow': raise ValueError(f"reflow pairs come from a flow model's Euler steps; this model predicts {flow.objective!r}")
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    y = torch.where(torch.rand(n, generator=g) < p_uncond, NULL_LABEL, y)
    eps = torch.randn(n, *shape, generator=g)
    x0 = torch.cat([sample(model, flow, y[i:i + batch], shape=shape, steps=steps, w=1.0, x_T=eps[i:i + batch], precision=precision)
                    for i in range(0, n, batch)])
    return x0, eps, y

# %% [markdown]
# The second model starts from the first one's weights, not from scratch: it only has to straighten paths it
# already knows, so a few hundred steps on the pairs are enough to change its one- and two-step samples.

# %%
#| exports
def reflow(checkpoint,           # a flow model (objective 'flow'): a checkpoint, from `minddpm_train` or an earlier reflow, or a weights export
           pairs: tuple,         # (x̂0, ε, y) from `reflow_pairs`
           steps: int = 500,     # optimiser steps on the pairs
           out: str = 'runs/reflow', # run directory: the reflowed model's checkpoint.pt
           lr: float | None = None,  # peak learning rate; None: the checkpoint's
           seed: int = 0,        # seeds the order of the pairs and the times
           progress: bool = True):   # a progress bar
    """One round of reflow: a new run that starts from `checkpoint`'s EMA weights and config and trains `steps` steps of
    lesson 07's `fit_step` on `pairs` instead of independent (image, noise) draws; saved to out/checkpoint.pt.
    `ValueError` for a checkpoint that is not a flow model's."""
    import dataclasses
    from tqdm.auto import tqdm
    from minddpm.ema import EMA
    from minddpm.training import Run, fit_step, load_model, save_checkpoint
    m = load_model(checkpoint)
    cfg = m.config
    if cfg.objective != 'flow': raise ValueError(f"reflow retrains a flow model (objective 'flow'); {checkpoint} predicts {cfg.objective!r}")
    if getattr(m.model, 'exported', False): raise ValueError(f"{checkpoint} is a graph; reflow trains weights: give a checkpoint or a weights export")
    run = Run(dataclasses.replace(cfg, steps=steps, lr=lr or cfg.lr, out=out, minutes=None, seed=seed, compile=False))
    run.model.load_state_dict(m.model.state_dict())
    run.ema = EMA(run.model, cfg.ema_beta, start_step=0)            # an average of the new weights only
    x0, eps, y = (v.to(run.device) for v in pairs)
    g = torch.Generator(run.device).manual_seed(seed)
    for _ in tqdm(range(steps), disable=not progress, desc='reflow'):
        i = torch.randint(0, len(x0), (run.cfg.batch_size,), device=run.device, generator=g)
        run.history.append((run.step + 1, fit_step(run, x0[i], y[i], run.diffusion.sample_timesteps(len(i), g), eps[i]),
                            run.sched.get_last_lr()[0], None))
    save_checkpoint(run, Path(out)/'checkpoint.pt')
    return run

# %% [markdown]
# ## Measured: flow matching against v-prediction, at the same training cost
#
# Everything below is a benchmark, not a cell: the runs take an hour of two CPU cores. Its figures are kept in
# `tests/results/`, which these cells read (from the repository, or from GitHub where the lesson runs without
# it), with lesson 08's judge and feature space.
#
# **Which flow recipe.** Four flow runs of the tiny UNet, each 1,000 steps (uniform or logit-normal $t$; uniform
# or min-SNR-5 weights, the latter as `FlowMatching.loss_weights` defines it), beside today's v-model, on the
# digits and on the RGB folder of coloured shapes that lesson 08's quality issue made:
# `python tests/bench_learning.py compare --data digits shapes --steps 1000 --jobs 2 --recipe v="--objective v"
# --recipe flow_u_u="--objective flow --weighting uniform" --recipe flow_u_snr="--objective flow" --recipe
# flow_ln_u="--objective flow --t-sampling logit_normal --weighting uniform" --recipe flow_ln_snr="--objective flow
# --t-sampling logit_normal"` (about 25 minutes). The flow models are scored with Euler, 50 steps; v with DDIM, 50
# steps, η = 1.

# %%
from IPython.display import Markdown, display
from minddpm.metrics import measured

def show_table(header, rows):
    line = lambda cells: '| ' + ' | '.join(map(str, cells)) + ' |'
    display(Markdown('\n'.join([line(header), line(['---'] * len(header)), *map(line, rows)])))

# %%
recipes = measured('flow_recipes.json')
names = {'v': 'v, min-SNR-5 (today\'s tiny)', 'flow_u_u': 'flow, uniform t, uniform weights', 'flow_u_snr': 'flow, uniform t, min-SNR-5',
         'flow_ln_u': 'flow, logit-normal t, uniform weights', 'flow_ln_snr': 'flow, logit-normal t, min-SNR-5'}
cell = lambda r: f"{r['fid']:.1f} ({r['accuracy']:.1%})"
show_table(['recipe, 1,000 steps', 'digits: FID (judged)', 'shapes: FID (judged)'],
           [[names[n]] + [cell(next(r for r in recipes if r['recipe'] == n and r['data'] == d)) for d in ('digits', 'shapes')]
            for n in names])

# %% [markdown]
# Logit-normal $t$ with uniform weights, SD3's recipe, scored best of the four on both data sets, and better than
# the v-model at 50 calls; it is the `flow` preset (`minddpm_train --preset flow`), and what `--objective flow`
# takes unless told otherwise.
#
# **Against network calls.** Then each data set trained three ways for the same cost: v (today's tiny) and flow,
# 2,000 steps each (the same network and batch, so the same seconds a step: 722 s and 712 s on one core for the
# digits); and a flow run of 1,500 steps, then one round of reflow on 2,000 pairs it drew with 16 Euler steps
# (10 s, the time of about 100 training steps) and 400 steps on them, 2,000 steps' worth in all. Each model draws
# 40 samples a class at every count of calls from 1 to 50: `python tests/bench_flow.py --flow-flags "--objective
# flow --t-sampling logit_normal --weighting uniform"`, 35 minutes on two cores, then `python tests/bench_flow.py
# plot tests/results/flow.json nbs/images/flow_calls.png`.
#
# ![feature FID and judged accuracy against network calls, and the held-out error of x̂0 along the path, for v + DDIM, v + DPM-Solver++, flow + Euler, flow + Heun and reflow + Euler, on the digits and on the shapes](images/flow_calls.png)

# %%
bench = measured('flow.json')
for data in ('digits', 'shapes'):
    scores = [s for s in bench['scores'] if s['data'] == data]
    keys = list(dict.fromkeys((s['recipe'], s['sampler']) for s in scores if s['recipe'] != 'real'))
    row = lambda key: [f'{key[0]} + {key[1]}'] + [f"{s['fid']:.1f} ({s['calls']})" for s in scores if (s['recipe'], s['sampler']) == key]
    real = next(s for s in scores if s['recipe'] == 'real')
    display(Markdown(f"**{data}**: FID at w = 1 (network calls), 40 samples a class; {real['fid']:.1f} for as many real images"))
    show_table(['model + sampler'] + [''] * 8, [row(k) + [''] * (9 - len(row(k))) for k in keys])

# %% [markdown]
# What the runs say, plainly:
#
# - **On the digits, flow matching wins at every count of calls.** With Euler it reaches FID 17.0 in 2 calls,
#   where v needs 4 with DPM-Solver++ (19.1), and it levels off at 8.2 to 8.5 from 8 calls on, below v's best
#   (11.0 with DPM-Solver++, 11.8 with DDIM at 50). Heun's 7 calls give the lowest figure of all, 7.5, against
#   DPM-Solver++'s 11.2 at 10. The held-out error of $\hat x_0$ says where the difference is: the same along most
#   of the path, lower for flow in its last tenth (0.089 against 0.109), the near-pure noise that the first step
#   of a few-step sampler starts from.
# - **On the shapes, it does not.** v with DPM-Solver++ is ahead below 16 calls (18.5 at 8, against 37.1 for
#   Euler and 29.5 for Heun at 7), and the two are level from 15 calls on (Heun 15.5, DPM-Solver++ 13.0 at 16;
#   at 50, 16.2 against 15.6). DPM-Solver++ is a second-order multistep solver in log-SNR, a better integrator
#   for a few large steps than Euler, and Heun spends two calls a step; on these coloured images the straight path
#   does not make up for it. At 1,000 steps flow was ahead at 50 calls (47.3 against 72.9, table above); at
#   2,000 the v-model has caught up.
# - **Reflow buys the first calls and costs the rest.** One round on the digits takes the 1-call sample from FID
#   41 to 12.7, and 2 calls give 8.3, which the flow model needs 8 calls for. But it learns the pairs of a
#   1,500-step model drawn in 16 steps, and from 4 calls on it is worse than the flow run of the same cost (10.9
#   against 8.3 at 50). On the shapes, where such pairs are poor (the flow model's own 16-step samples score 26),
#   it is better at 1 and 2 calls only, and far worse after (38.7 at 50). Reflow pays where a sample must take
#   one or two calls and the model it starts from already draws well in the steps that make the pairs.
#
# For the digits the judge's reference is the training split the models learned from, so samples drawn close to
# training digits score below 400 other training digits (18.2): that figure is no floor there. The shapes'
# reference is a set of its own, and there the real images' 7.2 is the floor. One seed a run; a second would put
# error bars on differences of a few points.

# %% [markdown]
# ## Exercises
#
# Write each function in place of its `...` and run its cell: `check` prints ✓, or where your answer differs and a hint
# ([how the checks work](exercises.ipynb)). Keep the stub's parameter names (`check` passes its inputs by name) and
# return the inputs' dtype unless the stub asks for another. Solutions: `tests/solutions/` in the course's repository.
#
# 1. **One Euler step.** Given points `x` at time t, the network's velocity `v_hat` there (its ε − x0), t and the next
#    time t_next (floats in [0, 1], t_next ≤ t), return the points at t_next after one Euler step. Then: take x at t = 1
#    as the noise ε of one straight path and v̂ as that path's exact ε − x0; where does one step from 1 to 0 land, and
#    why does the straight path need no more?

# %%
def flow_euler_step(x, v_hat, t, t_next):   # (B, …), (B, …), float, float
    ...                                      # return (B, …)

check(flow_euler_step)

# %% [markdown]
# 2. **A diffusion step's time on the straight path.** Given the ᾱ_t of a schedule, (T,) float64, return the time τ on
#    the straight path of each step, (T,) ("Two sides of one coin"). Then: which τ do t = 0 and t = 999 of the linear
#    schedule land on, and what share of the path from τ = 0 to 1 do its first 500 steps cover?

# %%
def flow_time(alpha_bars):   # (T,) float64
    ...                       # return (T,)

check(flow_time)
