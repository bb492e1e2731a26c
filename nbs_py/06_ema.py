# %%
#| default_exp ema

# %% [markdown]
# # EMA
# > An exponential moving average of the weights, with a warm-up: shown on a noisy signal, checked against the closed form and PyTorch's AveragedModel, then tracking a UNet

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/06_ema.ipynb)
# This lesson has no GPU-only cells: it ran top to bottom in 15 seconds on a 2-core CPU (measured); a Colab runtime is no slower.

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
import copy

import torch
from torch import nn

# %%
#| hide
from fastcore.test import *
from minddpm.exercises import check   # the exercises at the end
import matplotlib.pyplot as plt
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from minddpm.data import get_dataloaders
from minddpm.forward import Diffusion
from minddpm.unet import UNet, unet_preset
from minddpm.data import pick_device, pick_preset

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)              # the same pictures on every run

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # 'colab' sizes on a CUDA GPU, 'tiny' elsewhere

# %% [markdown]
# The weights after any single optimiser step are noisy: each step follows one small batch, and
# diffusion losses are noisy to begin with (a random $t$ and a random $\varepsilon$ per image).
# Sampling with those weights gives visibly worse images than sampling with their running average.
# The same DDPM checkpoint scores FID 12.1 on CIFAR-10 with its raw weights and 3.2 with its EMA
# weights. The average is an **exponential moving average**: after every step,
#
# $$\theta_{\text{ema}} \leftarrow \beta\,\theta_{\text{ema}} + (1-\beta)\,\theta,$$
#
# so a weight from $k$ steps ago counts with $\beta^k(1-\beta)$, and the average remembers about
# $1/(1-\beta)$ steps (200 for the originals' $\beta = 0.995$).
#
# ## On a noisy signal
#
# The same update on a noisy 1-D signal shows both sides of $\beta$: a larger one smooths more and lags
# more. It also shows why the originals copy the weights instead of averaging for the first 2,000
# steps: an average started at the very beginning carries the random starting point along for a long
# time (here the signal starts far from 0, where the average starts).

# %%
steps = torch.arange(600)
signal = 3 + torch.tanh((steps - 200) / 60)
noisy = signal + 0.4 * torch.randn(len(steps))
def ema_trace(xs, beta, start=0, init=0.0):
    out, avg = [], init
    for i, x in enumerate(xs.tolist()):
        avg = x if i < start else beta * avg + (1 - beta) * x
        out.append(avg)
    return out
fig, ax = plt.subplots(figsize=(8, 2.6))
ax.plot(noisy, color='C7', lw=.6, label='raw (noisy)')
ax.plot(signal, 'k--', lw=1, label='true signal')
ax.plot(ema_trace(noisy, 0.9), label='β = 0.9')
ax.plot(ema_trace(noisy, 0.99), label='β = 0.99, from step 0')
ax.plot(ema_trace(noisy, 0.99, start=50), label='β = 0.99, copied until step 50')
ax.set(xlabel='step', ylim=(0, 5)); ax.legend(fontsize=7, ncol=2);


# %% [markdown]
# ## The EMA of a model
#
# `EMA` keeps a frozen copy of the model. `update(model)` after each optimiser step copies the weights
# while `step < start_step` (the warm-up) and averages them after. Only **parameters** are averaged;
# **buffers** (a schedule's coefficients, a norm's running statistics) are copied, because an average
# of them means nothing. The update runs on all parameters at once with `torch._foreach_lerp_`:
# $\mathrm{lerp}(\theta_{\text{ema}}, \theta, 1-\beta) = \beta\,\theta_{\text{ema}} + (1-\beta)\,\theta$.

# %%
#| exports
class EMA:
    "Exponential moving average of a model's parameters (buffers are copied), with a warm-up that copies the weights."
    def __init__(self, model: nn.Module,  # the model to average; a frozen deep copy in eval mode is kept as `.model`
                 beta: float = 0.995,     # decay per step: the average remembers about 1/(1 − beta) steps
                 start_step: int = 2000): # copy the weights, don't average, before this many updates
        if not 0 <= beta < 1: raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.beta, self.start_step, self.step = beta, start_step, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module):
        "Fold `model`'s current weights into the average (or copy them during the warm-up)."
        ema_p, p = list(self.model.parameters()), [q.detach() for q in model.parameters()]
        if self.step < self.start_step:
            for a, b in zip(ema_p, p): a.copy_(b)
        elif ema_p: torch._foreach_lerp_(ema_p, p, 1 - self.beta)  # θ_ema ← β·θ_ema + (1 − β)·θ; a module of buffers only has none
        for b_ema, b in zip(self.model.buffers(), model.buffers()): b_ema.copy_(b)
        self.step += 1

    def state_dict(self) -> dict:
        "What a checkpoint keeps: the averaged weights and the step count, so a resumed run continues the same average."
        return {'model': self.model.state_dict(), 'step': self.step, 'beta': self.beta, 'start_step': self.start_step}

    def load_state_dict(self, state: dict):
        "Restore what `state_dict` returned."
        self.model.load_state_dict(state['model'])
        self.step, self.beta, self.start_step = state['step'], state['beta'], state['start_step']


# %% [markdown]
# All three rules on one small module: a `BatchNorm1d` has one weight (a parameter) and one running mean (a
# buffer). Set both to the noisy signal above, step after step, and update an EMA with a warm-up of 50 steps:

# %%
demo = nn.BatchNorm1d(1)
ema, trace = EMA(demo, beta=0.95, start_step=50), []
for v in noisy[:300].tolist():
    with torch.no_grad(): demo.weight.fill_(v); demo.running_mean.fill_(v)
    ema.update(demo); trace.append((ema.model.weight.item(), ema.model.running_mean.item()))
fig, axs = plt.subplots(1, 2, figsize=(9, 2.3), sharey=True)
for ax, series, title in zip(axs, zip(*trace), ('a parameter: averaged after the warm-up', 'a buffer: copied')):
    ax.plot(noisy[:300], color='C7', lw=.6, label='the model'); ax.plot(series, label='the EMA copy')
    ax.axvline(50, color='k', lw=.8, ls=':'); ax.set(title=title, xlabel='update'); ax.title.set_fontsize(9)
axs[0].text(52, 4.3, 'start_step', fontsize=8); axs[0].legend(fontsize=7); fig.tight_layout()

# %% [markdown]
# ## Checks
#
# **The closed form.** With the weights set to $\theta_1, \dots, \theta_n$ before successive updates
# and a warm-up of one step, the average is $\beta^{n-1}\theta_1 + \sum_{i=2}^{n} (1-\beta)\,\beta^{n-i}\,\theta_i$.
# The share each $\theta_i$ gets can be measured: make $\theta_i$ the $i$-th unit vector, and after $n$ updates the
# average's $i$-th entry is that share.

# %%
n, b = 25, 0.9
probe = nn.Linear(n, 1, bias=False); ema = EMA(probe, beta=b, start_step=1)
for i in range(n):
    with torch.no_grad(): probe.weight.copy_(torch.eye(n)[i])   # θ_(i+1): all of its weight in entry i
    ema.update(probe)
measured = ema.model.weight[0]
closed = torch.tensor([b ** (n - 1)] + [(1 - b) * b ** (n - i) for i in range(2, n + 1)])
test_close(measured, closed, eps=1e-6)
fig, ax = plt.subplots(figsize=(6, 2.2))
ax.bar(range(1, n + 1), measured, label='measured share'); ax.plot(range(1, n + 1), closed, 'k.', label='closed form')
ax.set(xlabel='i: the weights of update i', ylabel='share in the average', title=f'β = {b}, after {n} updates'); ax.legend(fontsize=8);

# %% [markdown]
# The shares fall geometrically into the past, except the first: what the average started from keeps
# $\beta^{n-1}$ (8 % here) and fades only as fast as $\beta^n$. Started from random weights, that share is noise;
# hence the warm-up, which starts the average from trained weights instead.
#
# **PyTorch's own EMA.** `torch.optim.swa_utils.AveragedModel` with `get_ema_multi_avg_fn(β)` also copies
# on its first update and averages after, so it must agree with `EMA(start_step=1)` through a real
# training run of a small UNet:

# %%
model = UNet(**unet_preset('tiny', in_channels=1))
ours, theirs = EMA(model, beta=0.9, start_step=1), AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
for _ in range(5):
    loss = model(torch.randn(4, 1, 16, 16), torch.randint(0, 1000, (4,))).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    ours.update(model); theirs.update_parameters(model)
for (name, a), b in zip(ours.model.named_parameters(), theirs.module.parameters()):
    test_close(a, b, eps=1e-6)

# %% [markdown]
# ## On the UNet
#
# Train the tiny UNet on the bundled digits for 120 steps (a very short run, to keep the lesson quick)
# with the ε-prediction loss, and keep an EMA with a short warm-up. Every 10 steps, measure both on the
# same held-out batches with the same noise.

# %%
torch.manual_seed(0)
train_dl, val_dl = get_dataloaders('digits', size=16, batch_size=32)
diffusion = Diffusion()
model = UNet(**unet_preset('tiny', in_channels=1))
ema = EMA(model, beta=0.9, start_step=10)
opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
val = [(x, diffusion.sample_timesteps(len(x), torch.Generator().manual_seed(i)), torch.randn(x.shape, generator=torch.Generator().manual_seed(i)))
       for i, (x, _) in zip(range(2), val_dl)]
@torch.no_grad()
def val_loss(m):
    m.eval()
    return sum(nn.functional.mse_loss(m(diffusion.add_noise(x, t, e)[0], t), e).item() for x, t, e in val) / len(val)
history, step = [], 0
while step < 120:
    for x, _ in train_dl:
        t = diffusion.sample_timesteps(len(x))
        xt, eps = diffusion.add_noise(x, t)
        model.train()
        loss = nn.functional.mse_loss(model(xt, t), eps)
        opt.zero_grad(); loss.backward(); opt.step(); ema.update(model)
        step += 1
        if step % 10 == 0: history.append((step, val_loss(model), val_loss(ema.model)))
        if step == 120: break
s_, raw, avg = zip(*history)
fig, ax = plt.subplots(figsize=(6, 2.4))
ax.plot(s_, raw, 'o-', label='raw weights'); ax.plot(s_, avg, 'o-', label='EMA, β = 0.9')
ax.set(xlabel='step', ylabel='held-out ε-MSE'); ax.legend(fontsize=8);

# %% [markdown]
# While the loss is still falling fast, the average lags: it still remembers the older, worse weights.
# That is why the originals copy the weights for the first 2,000 steps, and why the EMA pays off late
# in a run, when the raw weights only jitter around a good point and the average sits in the middle of
# the jitter. Here, at the end of this short run, the two have met. On a real run of tens of thousands
# of steps the gap goes the other way (the FID of 12.1 against 3.2 above); lesson 07 shows it on samples.

# %%
#| hide
assert avg[-1] < avg[0] and raw[-1] < raw[0]  # both learn
assert avg[2] > raw[2]                        # the average lags while the loss falls fast ...
assert avg[-1] < 1.05 * raw[-1]               # ... and has caught up by the end

# %% [markdown]
# ## Exercises
#
# Write each function in place of its `...` and run its cell: `check` prints ✓, or where your answer differs and a hint
# ([how the checks work](exercises.ipynb)). Keep the stub's parameter names (`check` passes its inputs by name) and
# return the inputs' dtype unless the stub asks for another. Solutions: `tests/solutions/` in the course's repository.
#
# 1. **One EMA update.** Given the average `avg` and the new weights `new` (tensors of one shape) and β, return the
#    updated average.

# %%
def ema_update(avg, new, beta):   # two tensors of one shape, β in [0, 1]
    ...                            # return the new average, same shape

check(ema_update)

# %% [markdown]
# 2. **What the average is made of.** After n updates that start from the weights $w_0$, the average is a weighted sum
#    of $w_0, w_1, …, w_n$. Return its n + 1 coefficients, float64, in that order.

# %%
def ema_weights(n, beta):   # updates made, β
    ...                      # return (n + 1,) float64 coefficients of w_0 … w_n

check(ema_weights)

# %% [markdown]
# 3. **How long the start lingers.** Return the least number of updates after which the starting weights count for at
#    most half of the average, as an int. What is it for the course's β = 0.995, and what does that say about
#    `ema_start`?

# %%
def ema_half_life(beta):   # β in (0, 1)
    ...                     # return an int

check(ema_half_life)
