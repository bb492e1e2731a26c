# %%
#| default_exp conditioning

# %% [markdown]
# # Conditioning
# > Telling the UNet which class to draw: a label embedding with a null label, per-sample label dropout, and classifier-free guidance in one batched pass

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/04_conditioning.ipynb)
# This lesson has no GPU-only cells: it ran top to bottom in 4 seconds on a 2-core CPU (measured); a Colab runtime is no slower.

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
import torch
from torch import nn

from minddpm.unet import UNet

# %%
#| hide
from fastcore.test import *
from minddpm.exercises import check   # the exercises at the end
import matplotlib.pyplot as plt
import torch.nn.functional as F
from minddpm.unet import unet_preset
from minddpm.data import show_images
from minddpm.sampling import sample
from minddpm.training import load_model
from minddpm.data import pick_device, pick_preset

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)              # the same pictures on every run

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # 'colab' sizes on a CUDA GPU, 'tiny' elsewhere

# %% [markdown]
# An unconditional DDPM draws *some* digit. To ask for a 7, the network needs the label as a second
# input, and then we would like a knob for how strongly the sample should look like a 7. Classifier-free
# guidance (Ho & Salimans 2021) gives both with one network:
#
# 1. **Label embedding.** Each class gets a learned vector, added to the time embedding, so every block
#    that sees $t$ also sees the class. One extra row, the **null label**, means "no class".
# 2. **Label dropout.** During training, each image's label is replaced by the null label with
#    probability $p$ (0.1 here; the paper found 0.1–0.2 best), so the same network learns both the
#    conditional $\varepsilon(x_t, t, y)$ and the unconditional $\varepsilon(x_t, t, \varnothing)$.
# 3. **Guidance.** At sampling time, mix the two predictions:
#    $\hat\varepsilon = \varepsilon_u + w\,(\varepsilon_c - \varepsilon_u)$. $w = 0$ is unconditional,
#    $w = 1$ plain conditional, $w > 1$ pushes further along the direction that makes the image more
#    like its class (and less diverse).
#
# ## Label embedding and the null label
#
# `ConditionalUNet` is the UNet of the last lesson with an `nn.Embedding` of `num_classes + 1` rows of
# the time embedding's size. Labels are class indices in $[0, \text{num\_classes})$; `NULL_LABEL` (−1)
# or `y=None` select the last row. `check_labels` turns labels into embedding rows and refuses anything else
# with what is allowed; it lives in a hidden cell (`minddpm/conditioning.py` shows it).

# %%
#| hide
#| export
class _LabelChecks:
    "The label check of `ConditionalUNet` (and of the networks read from exported files, which hold `num_classes` too)."
    def check_labels(self, y, batch: int, device) -> torch.Tensor:
        "Labels as embedding rows: class indices pass through, `NULL_LABEL` (or `y=None`) becomes the null row; else a `ValueError`."
        if y is None: return torch.full((batch,), self.num_classes, device=device, dtype=torch.long)
        y = torch.as_tensor(y, device=device)
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.shape != (batch,):
            raise ValueError(f"labels must be an integer tensor of shape ({batch},), got {y.dtype} of shape {tuple(y.shape)}")
        bad = (y != NULL_LABEL) & ((y < 0) | (y >= self.num_classes))
        if bad.any():
            raise ValueError(f"labels must be in [0, {self.num_classes}) or NULL_LABEL ({NULL_LABEL}); got {sorted(set(y[bad].tolist()))[:5]}")
        return torch.where(y == NULL_LABEL, self.num_classes, y).long()

# %%
#| exports
NULL_LABEL = -1  # "no class": the unconditional branch of classifier-free guidance

class ConditionalUNet(_LabelChecks, UNet):
    "A `UNet` that also takes class labels: their embedding is added to the time embedding; `NULL_LABEL` means none."
    def __init__(self, num_classes: int, # number of classes; labels are 0 … num_classes − 1
                 **unet_kwargs):         # everything `UNet` takes
        super().__init__(**unet_kwargs)
        self.num_classes = num_classes
        self.label_emb = nn.Embedding(num_classes + 1, self.time_dim)  # row num_classes is the null label

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        "Predicted noise for images `x` at timesteps `t` given labels `y` (B,); `y=None` is unconditional."
        self.check_input(x)
        y = self.check_labels(y, len(x), x.device)
        return self.body(x, self.time_emb(self.check_timesteps(t, x)) + self.label_emb(y))


# %%
model = ConditionalUNet(10, **unet_preset('tiny', in_channels=1)).eval()
x, t = torch.randn(4, 1, 16, 16), torch.tensor([10, 10, 500, 500])
eps_c = model(x, t, torch.tensor([3, 7, 3, 7]))
eps_u = model(x, t)
test_eq(eps_c.shape, x.shape)
test_close(eps_u, model(x, t, torch.full((4,), NULL_LABEL)))  # None and NULL_LABEL are the same thing
assert not torch.allclose(eps_c, eps_u)
print(f"label embedding: {model.label_emb.weight.numel():,} of the model's {sum(p.numel() for p in model.parameters()):,} parameters")

# %% [markdown]
# What the rows hold once trained: minddpm ships a small `ConditionalUNet` trained on the bundled digits with
# labels dropped 10 % of the time (lesson 07). Its eleven label vectors (left, the first 64 of 128 dimensions), and
# how alike any two of them are (right): each class got a direction of its own, and the null row, which stands for
# "any digit", is a vector like the others.

# %%
tiny = load_model()                              # the shipped model: EMA weights, its diffusion, class names
rows = tiny.model.label_emb.weight.detach()      # (11, 128): the ten classes, then the null label
names = [*tiny.classes, '∅']
fig, axs = plt.subplots(1, 2, figsize=(8, 2.6), width_ratios=(1.7, 1))
axs[0].imshow(rows[:, :64], cmap='RdBu_r', aspect='auto', vmin=-rows.abs().max(), vmax=rows.abs().max())
axs[0].set(yticks=range(11), yticklabels=names, xlabel='dimension', title='label_emb.weight')
sim = F.normalize(rows, dim=1) @ F.normalize(rows, dim=1).T
axs[1].imshow(sim, cmap='viridis'); axs[1].set(xticks=range(11), xticklabels=names, yticks=range(11), yticklabels=names, title='cosine similarity')
fig.tight_layout()


# %% [markdown]
# ## Label dropout, per sample
#
# The originals drop labels for the whole batch at once (`if np.random.random() < 0.1: labels = None`):
# one batch in ten is entirely unconditional, the other nine have no unconditional examples at all,
# and the gradient of each step is all of one kind. Dropping each label on its own coin flip gives every
# batch the same 10 % mix.

# %%
#| exports
def drop_labels(y: torch.Tensor,                           # integer class labels of any shape, usually (B,)
                p: float = 0.1,                            # probability of dropping each label, in [0, 1]
                generator: torch.Generator | None = None,  # draws the coin flips, on `y`'s device; None: the global RNG
                ) -> torch.Tensor:
    "Replace each label by `NULL_LABEL` with probability `p`, independently per sample."
    if not 0 <= p <= 1: raise ValueError(f"p must be a probability in [0, 1], got {p}")
    drop = torch.rand(y.shape, device=y.device, generator=generator) < p
    return torch.where(drop, torch.full_like(y, NULL_LABEL), y)


# %% [markdown]
# Over 1,000 batches of 64, the share of unconditional examples per batch, per sample and whole-batch:

# %%
g = torch.Generator().manual_seed(0)
y = torch.randint(0, 10, (1000, 64), generator=g)
per_sample = (drop_labels(y, 0.1, generator=g) == NULL_LABEL).float().mean(1)
whole_batch = (torch.rand(1000, generator=g) < 0.1).float()
fig, axs = plt.subplots(1, 2, figsize=(8, 2), sharey=True)
axs[0].hist(per_sample, bins=20, range=(0, 1)); axs[0].set(title='per sample (here)', xlabel='unconditional share of a batch', ylabel='batches')
axs[1].hist(whole_batch, bins=20, range=(0, 1), color='C7'); axs[1].set(title='whole batch (the originals)', xlabel='unconditional share of a batch')
fig.tight_layout()

# %% [markdown]
# The rate is right, statistically: over 640,000 labels, a binomial count with p = 0.1 lies within
# 5 standard deviations ($\pm 5\sqrt{np(1-p)} \approx \pm 1{,}200$) of 64,000 except with odds of about one in
# three million.

# %%
n_dropped = int((drop_labels(y, 0.1, generator=torch.Generator().manual_seed(1)) == NULL_LABEL).sum())
n = y.numel()
assert abs(n_dropped - 0.1 * n) < 5 * (n * 0.1 * 0.9) ** 0.5, n_dropped
test_eq(drop_labels(y, 0.0), y)
test_eq((drop_labels(y, 1.0) == NULL_LABEL).all(), True)
test_fail(lambda: drop_labels(y, 1.5), contains='probability in [0, 1]')


# %% [markdown]
# ## Classifier-free guidance in one pass
#
# Guidance needs both predictions for every image at every sampling step. The originals run the
# network twice, once with the labels and once without. Stacking the two halves into one batch of
# 2B images runs one forward pass instead: the same arithmetic, but one launch of every kernel, and
# on a GPU a batch big enough to keep it busy. It also guarantees that both branches use the same
# weights (the originals sample their conditional branch from the raw model even when asked to use
# the EMA copy). At $w = 1$ the unconditional half is not needed at all.

# %%
#| exports
def guided_eps(model: ConditionalUNet,  # network called as model(x, t, y), `NULL_LABEL` meaning no class; ε, v or x0 mix alike
               x: torch.Tensor,         # (B, C, H, W) noisy images x_t
               t: torch.Tensor,         # (B,) timesteps
               y: torch.Tensor,         # (B,) class labels
               w: float = 3.0,          # guidance weight: 0 unconditional, 1 conditional, >1 guided
               ) -> torch.Tensor:
    "Classifier-free guidance, ε_u + w·(ε_c − ε_u), with both branches in one batched forward pass."
    if w == 1: return model(x, t, y)                                    # plain conditional: one branch is enough
    eps_c, eps_u = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, NULL_LABEL)])).chunk(2)
    return eps_u + w * (eps_c - eps_u)


# %% [markdown]
# What the mix does, in one network call on the trained model: one pure-noise input at $t = 999$, asked for each
# class, read as $\hat x_0$ (lesson 02). At $w = 0$ the label is ignored and every column gets the same average digit; at
# $w = 1$ each gets the average of its class; $w = 3$ pushes past it, exaggerating what sets the class apart:

# %%
xT, tT, yy = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)).expand(10, -1, -1, -1), torch.full((10,), 999), torch.arange(10)
with torch.no_grad():
    guesses = [tiny.diffusion.predictions(xT, tT, guided_eps(tiny.model, xT, tT, yy, w))[1] for w in (0, 1, 3)]
show_images(torch.cat(guesses).clamp(-1, 1), yy.repeat(3), tiny.classes, ncols=10, scale=.8, title='x̂0 at t = 999 for w = 0, 1 and 3 (rows)')

# %% [markdown]
# The batched pass equals two separate passes (GroupNorm, attention and every other layer treat each
# image on its own, so batching changes nothing but rounding):

# %%
yb = torch.tensor([3, 7, 3, 7])
for w in (0.0, 1.0, 3.0, 7.5):
    two_passes = eps_u + w * (eps_c - eps_u)
    test_close(guided_eps(model, x, t, yb, w), two_passes, eps=1e-5 * (1 + w))  # each branch's rounding, scaled by w
test_close(guided_eps(model, x, t, yb, 0.0), eps_u, eps=1e-5)   # w = 0: unconditional
test_close(guided_eps(model, x, t, yb, 1.0), eps_c, eps=1e-5)   # w = 1: conditional

# %% [markdown]
# ## Our w and the originals' `cfg_scale`
#
# The originals write `if cfg_scale > 0: predicted_noise = torch.lerp(uncond, cond, cfg_scale)`.
# `lerp(a, b, w)` is $a + w\,(b - a)$, so for `cfg_scale > 0` their scale *is* our $w$. The `if` is the
# trap: at `cfg_scale = 0` they skip the mix and return the **conditional** prediction, while 0.01 gives
# an almost **unconditional** one. Effective guidance weight against the setting:

# %%
scales = torch.linspace(0, 5, 501)
original = torch.where(scales > 0, scales, torch.ones_like(scales))  # what the prediction really is, as a weight
fig, ax = plt.subplots(figsize=(6, 2.4))
ax.plot(scales, scales, label='minddpm: ε_u + w(ε_c − ε_u)', lw=3, alpha=.6)
ax.plot(scales, original, label="originals: if cfg_scale > 0: lerp(...)", color='C3')
ax.scatter([0], [1], color='C3', zorder=3); ax.scatter([0.01], [0.01], color='C3', marker='x', zorder=3)
ax.annotate('cfg_scale = 0 → conditional (w = 1)', (0, 1), (0.4, 1.7), fontsize=8, arrowprops=dict(arrowstyle='->'))
ax.annotate('0.01 → almost unconditional', (0.01, 0.01), (0.8, 0.2), fontsize=8, arrowprops=dict(arrowstyle='->'))
ax.set(xlabel='setting (w, or cfg_scale)', ylabel='effective guidance weight'); ax.legend(fontsize=8);

# %% [markdown]
# A third convention is in the guidance paper itself: Ho & Salimans write
# $\tilde\varepsilon = (1 + w')\,\varepsilon_c - w'\,\varepsilon_u$, whose $w' = 0$ is plain conditional. It is
# the same mix with $w = 1 + w'$: their $w' = 0.3$ (the best FID on ImageNet 64) is our $w = 1.3$, and
# the originals' default `cfg_scale = 3` is $w = 3$, or $w' = 2$.

# %%
w_paper = 2.0
test_close(guided_eps(model, x, t, yb, 1 + w_paper), (1 + w_paper) * eps_c - w_paper * eps_u, eps=1e-4)
test_close(guided_eps(model, x, t, yb, 3.0), torch.lerp(eps_u, eps_c, 3.0), eps=1e-5)  # the originals' mix, for cfg_scale > 0

# %% [markdown]
# ## Guidance on a trained model
#
# minddpm ships a small `ConditionalUNet` trained on the bundled digits with labels dropped 10% of the
# time (lesson 07), so it knows both $\varepsilon_c$ and $\varepsilon_u$. (It predicts $v$ rather than ε, lesson 02; at
# a fixed $x_t$ and $t$, $v$ is ε scaled and shifted, so guidance mixes its two outputs by the same formula.)
# Sampling it (lesson 05) from the same noises with growing $w$: at $w = 0$ the label is ignored and the
# digits are whatever the noise suggests; at $w = 1$ they mostly follow the label; past 1, guidance pushes
# each image towards what is typical of its class, at some cost in variety.

# %%
rows = [sample(tiny.model, tiny.diffusion, yy, shape=tiny.shape, w=w, generator=torch.Generator().manual_seed(0)) for w in (0, 1, 3)]
show_images(torch.cat(rows), yy.repeat(3), tiny.classes, ncols=10, scale=.9, title='the same noises at w = 0, 1 and 3 (rows)')

# %% [markdown]
# ## Exercises
#
# Write each function in place of its `...` and run its cell: `check` prints ✓, or where your answer differs and a hint
# ([how the checks work](exercises.ipynb)). Keep the stub's parameter names (`check` passes its inputs by name) and
# return the inputs' dtype unless the stub asks for another. Solutions: `tests/solutions/` in the course's repository.
#
# 1. **The guidance mix.** Given the two branches' predictions, conditional `eps_c` and unconditional `eps_u` (same
#    shape), and a weight w, return the guided prediction. Then say what your function gives at w = 0 and at w = 1, and
#    what the originals' code (`if cfg_scale > 0: lerp(uncond, cond, cfg_scale)`) returns at `cfg_scale = 0`.

# %%
def guided_mix(eps_c, eps_u, w):   # two (B, C, H, W) predictions, a float w
    ...                             # return the guided (B, C, H, W) prediction

check(guided_mix)

# %% [markdown]
# 2. **Dropping labels with given draws.** `drop_labels` draws its own coin flips; here they are given: `u` (B,), one
#    uniform number in [0, 1) per sample. Return the labels `y` (B,) with those whose draw falls below `p` replaced by
#    `NULL_LABEL` (−1). Then: with p = 0.1 and a batch of 64, how many unconditional examples does a step see on
#    average, and how often does a step see none at all?

# %%
def drop_with(y, u, p):   # (B,) labels, (B,) draws in [0, 1), a probability
    ...                    # return (B,) labels, some −1

check(drop_with)
