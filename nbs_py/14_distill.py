# %%
#| default_exp distill

# %% [markdown]
# # Distillation
# > A student that takes two of its teacher's steps in one, round after round, with guidance folded in: the shipped model from 64 network calls down to one, measured against the solvers

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/14_distill.ipynb)
# This lesson has no GPU-only cells: it ran top to bottom in about a minute on a 2-core CPU (measured). Its
# benchmark, in the last section, distils the shipped model twice down to one call; it took 44 minutes.

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
import dataclasses
from pathlib import Path

import torch
from torch import nn

from minddpm.conditioning import guided_eps
from minddpm.forward import Diffusion
from minddpm.sampling import ddim_timesteps

# %%
#| hide
from fastcore.test import *
from minddpm.exercises import check   # the exercises at the end
from nbdev.showdoc import show_doc
import tempfile, time
import matplotlib.pyplot as plt
from torchvision.utils import make_grid
from minddpm.conditioning import NULL_LABEL
from minddpm.data import pick_device, pick_preset
from minddpm.run import Run
from minddpm.sampling import _eps, ddim_step, sample
from minddpm.training import load_model, train
from IPython.display import Markdown, display
from minddpm.metrics import measured

def show_table(header, rows):
    line = lambda cells: '| ' + ' | '.join(map(str, cells)) + ' |'
    display(Markdown('\n'.join([line(header), line(['---'] * len(header)), *map(line, rows)])))

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # this lesson runs on the CPU anywhere, with the shipped tiny model

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)

# %% [markdown]
# Every sampler so far pays for its image in network calls: 50 for DDIM, 10 to 20 for DPM-Solver++ (lesson 05),
# 7 for Heun on a flow model (lesson 13), and each guided call is two rows of the batch, one with the label and one
# without (lesson 04). The demo of lesson 12 pays all of that for every visitor. A solver cannot go much lower:
# it sees the network's answer only at the points it visits, and in two or three big steps it leaves the path the
# network describes.
#
# *Distillation* trains a second network, the student, to do in one call what the first, the teacher, does in
# several. Three recipes are in use:
#
# - **Progressive distillation** (Salimans & Ho 2022): the student learns to land, in one DDIM step, where two of
#   the teacher's DDIM steps land. Halve the calls, make the student the next teacher, halve again: 64 calls
#   become 1 in six rounds. It was designed for v-prediction, which the shipped model already predicts.
# - **Guided distillation** (Meng et al. 2023): the teacher's guided answer, both branches mixed at weight $w$,
#   becomes the target, so the student needs one call a step instead of two.
# - **Consistency distillation** (Song et al. 2023): the student learns to map any point of the teacher's path
#   straight to the path's end, with a second, slowly averaged copy of itself as the target and a distance to
#   choose.
#
# minddpm builds the first two together: the first round folds guidance in, and every round halves the calls.
# They need nothing the course has not built: the teacher is lesson 05's DDIM sampler, each round is lesson 07's
# training run, and the target can be checked exactly against two of lesson 05's steps. Consistency distillation
# is not built here. It is reported to do better in one or two calls on large data sets, but it needs the second
# network and the distance, and its target cannot be checked against the sampler the way this one can.

# %% [markdown]
# ## Two steps in one
#
# A DDIM step with η = 0 (lesson 05) goes from $z_t$ at timestep $t$ to an earlier timestep $s$ through the
# network's clean image $\hat x$:
#
# $$z_s = \alpha_s\,\hat x + \sigma_s\,\frac{z_t - \alpha_t\,\hat x}{\sigma_t},\qquad \alpha = \sqrt{\bar\alpha},\quad \sigma = \sqrt{1 - \bar\alpha}.$$
#
# Two teacher steps, $t \to t' \to s$, land at some $\tilde z_s$. The student takes one step, $t \to s$. Which
# $\hat x$ would make that one step land at $\tilde z_s$? The equation is linear in $\hat x$, so solve it:
#
# $$\tilde x = \frac{\tilde z_s - (\sigma_s/\sigma_t)\,z_t}{\alpha_s - (\sigma_s/\sigma_t)\,\alpha_t}.$$
#
# That $\tilde x$ is the student's target at $(z_t, t)$. It is not the data image: it is the clean image that
# makes one step do the work of two. The student predicts v, so the target is read as
# $\tilde v = \alpha_t\tilde\varepsilon - \sigma_t\tilde x$ with $\tilde\varepsilon = (z_t - \alpha_t\tilde x)/\sigma_t$.
# At the last step, $s$ is the clean image ($\alpha_s = 1$, $\sigma_s = 0$), and $\tilde x$ is where the teacher ends.
#
# The timesteps must nest: the student's $N$ steps must be every second one of the teacher's $2N$. DDIM's
# *trailing* timesteps (lesson 05), $T-1,\ T-1-T/N,\ \dots$, do this. The timesteps for $2N$ calls include those
# for $N$, and the first is always $T-1$, pure noise, where a one-call student must do everything.

# %%
#| exports
DISTILL_OBJECTIVES = ('v', 'x0')   # what a teacher may predict: both give x̂0 at the noisiest step (ε cannot: §4 of Salimans & Ho 2022)

def student_timesteps(T: int,      # the schedule's diffusion steps
                      calls: int,  # the student's network calls, 1 to T
                      ) -> list[int]:
    "The `calls` timesteps a student walks: DDIM's trailing ones, T−1, T−1−T/calls, … (`ddim_timesteps`), which nest: those of 2·calls hold them."
    return ddim_timesteps(T, calls, 'trailing')

class StudentDiffusion(Diffusion):
    """A `Diffusion` whose network is a distilled student: it samples in `calls` DDIM steps (η = 0) on
    `student_timesteps`, with classifier-free guidance at weight `guidance` folded into its weights (one call a step)."""
    def __init__(self, kind: str = 'linear',  # the teacher's schedule, as `Diffusion` takes it
                 T: int = 1000,               # its diffusion steps
                 objective: str = 'v',        # what the student predicts: the teacher's, in `DISTILL_OBJECTIVES`
                 calls: int = 4,              # the network calls it samples in
                 guidance: float = 3.0):      # the guidance weight w folded in
        super().__init__(kind, T, objective=objective)
        self.calls, self.guidance = calls, guidance
        self.register_buffer('timesteps', torch.tensor(student_timesteps(T, calls)), persistent=False)

    def extra_repr(self): return f"{super().extra_repr()}, calls={self.calls}, guidance={self.guidance:g}"

    def sample_timesteps(self, n: int,                              # how many: one per image of a batch
                         generator: torch.Generator | None = None,  # the draws' generator (its device is used)
                         ) -> torch.Tensor:                         # (n,) int64 timesteps, each one of `self.timesteps`
        "`n` timesteps drawn uniformly from the student's own: the only ones it is trained and sampled at."
        device = generator.device if generator is not None else self.device
        return self.timesteps.to(device)[torch.randint(0, self.calls, (n,), device=device, generator=generator)]

    def loss_weights(self, t: torch.Tensor, weighting: str = 'uniform', gamma: float = 5.0) -> torch.Tensor:
        """Per-image weights giving SNR + 1 on the x̂0 error, whatever the run's `weighting` (Salimans & Ho 2022, §5: it
        does not vanish at the noisiest step, where a 1-call student does all its work): plain MSE on v."""
        snr = self.snr[t]
        return (snr + 1) / (snr + 1 if self.objective == 'v' else torch.ones_like(snr))

# %%
show_doc(student_timesteps)

# %%
print(student_timesteps(1000, 4), student_timesteps(1000, 8))
test_eq(student_timesteps(1000, 8)[::2], student_timesteps(1000, 4))

# %%
show_doc(StudentDiffusion)

# %%
show_doc(StudentDiffusion.sample_timesteps)

# %%
show_doc(StudentDiffusion.loss_weights)

# %% [markdown]
# `Teacher` turns a network into targets: for each image at one of the student's timesteps it takes the two DDIM
# steps, guided if $w$ is given, and solves for $\tilde x$. It runs without gradients: only the student learns.

# %%
#| exports
class Teacher(nn.Module):
    """Two DDIM steps (η = 0, x̂0 clipped) of a teacher network for each step of its student, turned into the student's
    target (Salimans & Ho 2022, Algorithm 2). A guided teacher's two branches are mixed at weight `w` (Meng et al. 2023)."""
    def __init__(self, net: nn.Module,           # the teacher network, called as net(x, t, y)
                 diffusion: Diffusion,           # its schedule and objective; the student's target is in the same objective
                 calls: int,                     # the student's calls: the teacher walks 2·calls steps
                 w: float | None = None):        # guidance weight the teacher samples with; None: it is a student already, one call
        super().__init__()
        self.net, self.diffusion, self.calls, self.w = net.eval().requires_grad_(False), diffusion, calls, w
        T = diffusion.T
        student, teacher = student_timesteps(T, calls), student_timesteps(T, 2 * calls)
        assert teacher[::2] == student, 'the trailing timesteps of 2·calls hold those of calls'
        mid, nxt = torch.full((T,), -1), torch.full((T,), -1)   # per student timestep: the teacher's middle one, and the next
        for i, t in enumerate(student):
            mid[t], nxt[t] = teacher[2 * i + 1], student[i + 1] if i + 1 < len(student) else -1   # −1: the clean image
        self.register_buffer('mid', mid, persistent=False); self.register_buffer('next', nxt, persistent=False)
        self.register_buffer('ab', torch.cat([diffusion.alpha_bars, torch.ones(1, device=diffusion.device)]), persistent=False)

    def scales(self, t: torch.Tensor) -> tuple:
        "(α_t, σ_t) = (√ᾱ_t, √(1 − ᾱ_t)) as (B, 1, 1, 1), with t = −1 the clean image (α = 1, σ = 0)."
        ab = self.ab[t].view(-1, 1, 1, 1)
        return ab.sqrt(), (1 - ab).sqrt()

    def x0(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        "The teacher's x̂0 at (z, t), guided at `w` if it has one, clipped to [-1, 1] as its sampler clips it."
        out = self.net(z, t, y) if self.w is None else guided_eps(self.net, z, t, y, self.w)
        return self.diffusion.predictions(z, t, out)[1].clamp(-1, 1)

    def ddim(self, z, t, s, x0) -> torch.Tensor:
        "One DDIM step (η = 0) of each image from its timestep t to s (−1: the clean image), given x̂0."
        (a_t, s_t), (a_s, s_s) = self.scales(t), self.scales(s)
        return a_s * x0 + s_s * (z - a_t * x0) / s_t

    @torch.no_grad()
    def forward(self, z: torch.Tensor,   # (B, C, H, W) noisy images at the student's timesteps
                t: torch.Tensor,         # (B,) their timesteps, each one of `student_timesteps(T, calls)`
                y: torch.Tensor,         # (B,) their labels (`NULL_LABEL`: unconditional)
                ) -> torch.Tensor:       # (B, C, H, W) the student's target in the diffusion's objective
        """The target that makes one student DDIM step from t land where two teacher steps land: x̃ with
        z_s = α_s·x̃ + σ_s·(z − α_t·x̃)/σ_t, i.e. x̃ = (z_s − (σ_s/σ_t)·z) / (α_s − (σ_s/σ_t)·α_t), read as v (or x0)."""
        z, m, s = z.float(), self.mid[t], self.next[t]
        z_m = self.ddim(z, t, m, self.x0(z, t, y))
        z_s = self.ddim(z_m, m, s, self.x0(z_m, m, y))
        (a_t, s_t), (a_s, s_s) = self.scales(t), self.scales(s)
        x = (z_s - s_s / s_t * z) / (a_s - s_s / s_t * a_t)
        return self.diffusion.target(x, (z - a_t * x) / s_t, t)

# %%
show_doc(Teacher)

# %%
show_doc(Teacher.forward)

# %% [markdown]
# What the target asks for, drawn for three pixels of one digit: the teacher's guided walk in 8 DDIM steps (a
# point at each of its timesteps), and the 4 jumps a student would make from every second point if it output
# $\tilde x$ exactly. Each jump lands on the teacher's point two steps on.

# %%
shipped = load_model()      # the teacher: the tiny digits model (v-prediction) that ships with minddpm
d, net = shipped.diffusion, shipped.model
teacher = Teacher(net, d, calls=4, w=3.0)
y, walk = torch.tensor([3]), []
x_T = torch.randn(1, *shipped.shape, generator=torch.Generator().manual_seed(3))
end = sample(net, d, y, shape=shipped.shape, steps=8, spacing='trailing', eta=0.0, w=3.0, x_T=x_T, trajectory=walk)
ts, zs = [t for t, _, _ in walk] + [-1], [x for _, x, _ in walk] + [end]
place = lambda t: t + 1                      # on the axis: the clean image at 0, pure noise at 1000
pixels = [(9, 6), (5, 9), (12, 10)]
fig, ax = plt.subplots(figsize=(6.5, 2.8))
for k, (r, c) in enumerate(pixels):
    ax.plot([place(t) for t in ts], [float(z[0, 0, r, c]) for z in zs], 'o-', color=f'C{k}', ms=4, lw=1, alpha=0.5,
            label='teacher: 8 DDIM steps' if k == 0 else None)
    for i in range(0, 8, 2):
        t, s, z = ts[i], ts[i + 2], zs[i]
        eps = d.predictions(z, torch.tensor([t]), teacher(z, torch.tensor([t]), y))[0]
        z_s = ddim_step(d, z, t, None if s < 0 else s, eps, eta=0.0, clip=False)[0]
        ax.annotate('', xy=(place(s), float(z_s[0, 0, r, c])), xytext=(place(t), float(z[0, 0, r, c])),
                    arrowprops=dict(arrowstyle='->', color=f'C{k}', lw=2))
ax.plot([], [], 'k-', lw=2, label="a student's 4 steps on the target")
ax.set(xlim=(1030, -30), xlabel='timestep (pure noise → clean image)', ylabel='pixel value')
ax.legend(fontsize=8); plt.show()

# %% [markdown]
# The check that the target is right does not trust the formula. At each of the student's timesteps, a network
# whose output is exactly `Teacher`'s target takes one step of lesson 05's `ddim_step`, and the teacher takes two
# guided steps of the same `ddim_step`. They must land together. `tests/test_distill.py` repeats the check for 1, 2
# and 4 calls, with a control that must miss.

# %%
y4, tt = torch.tensor([0, 3, 7, NULL_LABEL]), student_timesteps(d.T, 8)
worst, g = 0.0, torch.Generator().manual_seed(0)
for i, t in enumerate(student_timesteps(d.T, 4)):
    z, m, s = torch.randn(4, *shipped.shape, generator=g), tt[2 * i + 1], tt[2 * i + 2] if 2 * i + 2 < 8 else None
    two = ddim_step(d, z, t, m, _eps(net, d, z, torch.full((4,), t), y4, 3.0), eta=0.0)[0]
    two = ddim_step(d, two, m, s, _eps(net, d, two, torch.full((4,), m), y4, 3.0), eta=0.0)[0]
    one = ddim_step(d, z, t, s, d.predictions(z, torch.full((4,), t), teacher(z, torch.full((4,), t), y4))[0], eta=0.0, clip=False)[0]
    worst = max(worst, (one - two).abs().max().item())
print(f"largest difference between one step on the target and two guided teacher steps: {worst:.1e}")
assert worst < 1e-4

# %% [markdown]
# **Guidance folded in.** In the first round the teacher is guided: `Teacher.x0` mixes both branches at $w$, as
# the sampler does (lesson 04's `guided_eps`), and the student learns the mix. From then on the student is called
# once a step, with the label alone, and it samples at that $w$ only. `StudentDiffusion.guidance` records the
# $w$, `sample` uses it, and `sample` refuses any other $w$ by name. Labels are still dropped 10 % of the time, and
# for those the teacher's answer is the unconditional one, so a student can also draw without a class.
#
# **Why v, and which weights.** The student's loss is the MSE of its v against $\tilde v$. That weighs the error of
# its $\hat x$ by $\mathrm{SNR}_t + 1$ (Salimans & Ho's "SNR+1"), a weight that never vanishes, not even at
# $t = T-1$, where $\mathrm{SNR} \approx 4\cdot10^{-5}$ and a one-call student does all its work.
# `StudentDiffusion.loss_weights` gives this weight whatever weighting the teacher was trained with. A network
# that predicts ε cannot give $\hat x$ there at all: $\hat x = (z - \sigma\hat\varepsilon)/\alpha$ divides by
# $\alpha = 0.006$. So distillation refuses ε-teachers and takes v and x0 ones.

# %% [markdown]
# ## A round is a training run
#
# Nothing in the training loop changes. A round's `TrainConfig` names its `teacher`, the student's `calls` and the
# folded `guidance`. From these, `noising_process` gives a `StudentDiffusion`, whose `sample_timesteps` draws the
# student's own timesteps, and `Run` loads the teacher (`load_teacher`) and starts the student as a copy of it.
# Lesson 07's `weighted_loss` takes the teacher's target where a plain run takes the noise's. So a round has
# everything a run has: a time budget, checkpoints that resume exactly, a progress bar, W&B and DDP.

# %%
#| exports
SHIPPED = 'shipped'   # what a round records as its teacher for the shipped digits model: its path changes with each install

def _teacher_key(teacher) -> str:
    "What a round records as its teacher: `SHIPPED` for None (the shipped model), else the file's absolute path."
    return SHIPPED if teacher is None or teacher == SHIPPED else str(Path(teacher).resolve())

def _teacher_model(path, device='cpu'):
    "`load_model(path)`, refused by a `ValueError` unless its weights can teach: not a graph, a v- or x0-model."
    from minddpm.trained import load_model
    m = load_model(None if path == SHIPPED else path, device)
    if getattr(m.model, 'exported', False):
        raise ValueError(f"{path} is a graph; a student starts from its teacher's weights: give a checkpoint or a weights export")
    if m.config.objective not in DISTILL_OBJECTIVES:
        hint = ('a flow model straightens its paths by reflow instead (lesson 13)' if m.config.objective == 'flow' else
                "a network predicting ε cannot give x̂0 at the noisiest step, where a one-call student does all its work "
                "(Salimans & Ho 2022, §4): train the teacher with --objective v")
        raise ValueError(f"{path} predicts {m.config.objective!r}; distillation takes a teacher predicting "
                         f"{' or '.join(map(repr, DISTILL_OBJECTIVES))}: {hint}")
    return m

def load_teacher(cfg,                 # a distillation run's `TrainConfig`: its teacher, calls and guidance
                 device='cpu',        # where the teacher runs
                 ) -> Teacher:
    """The `Teacher` of a distillation run: `cfg.teacher` read by `load_model`, guided at `cfg.guidance` unless it is a
    student already (then it walks 2·`cfg.calls` calls with the same guidance folded in). `ValueError` for a graph file,
    a teacher of another data, network or schedule than `cfg`, or a student teacher of other calls or guidance."""
    m = _teacher_model(cfg.teacher, device)
    t = m.config
    differ = [f"{k} ({getattr(t, k)!r} → {getattr(cfg, k)!r})" for k in ('dataset', 'img_size', 'unet', 'schedule', 'T', 'objective')
              if getattr(t, k) != getattr(cfg, k)]
    if differ: raise ValueError(f"the student must be its teacher's kind; {cfg.teacher} differs in {', '.join(differ)}")
    if t.calls is not None and (t.calls, t.guidance) != (2 * cfg.calls, cfg.guidance):
        raise ValueError(f"{cfg.teacher} is a student of {t.calls} calls at w = {t.guidance:g}; one round halves the calls and keeps w: "
                         f"its student takes {t.calls // 2} calls at w = {t.guidance:g}" if t.calls % 2 == 0 else
                         f"{cfg.teacher} is a student of {t.calls} calls, an odd number: no round can halve it")
    return Teacher(m.model, m.diffusion, cfg.calls, cfg.guidance if t.calls is None else None).to(device)

def distill_config(teacher,                 # a checkpoint or weights export of a v- or x0-model; None: the shipped digits model
                   calls: int,              # the student's calls: half its teacher's
                   guidance: float = 3.0,   # w folded into the student (a student teacher's own, which it must be)
                   steps: int = 1000,       # optimiser steps of the round
                   lr: float = 1e-4,        # peak learning rate of its OneCycle schedule
                   out: str = 'runs/distill', # the round's run directory
                   **changes,               # other `TrainConfig` fields, e.g. minutes, device, precision, batch_size
                   ):                       # a `TrainConfig`
    """The `TrainConfig` of one round: the teacher's own, its data and network kept, with the teacher, the calls, the
    guidance and the round's length, an EMA from the first step, and a grid of samples only at the end."""
    teacher = _teacher_key(teacher)
    cfg = _teacher_model(teacher).config
    base = dict(teacher=teacher, calls=calls, guidance=guidance, steps=steps, lr=lr, out=str(out),
                weighting='uniform', ema_start=0, minutes=None, compile=False, val_every=max(steps // 4, 1),
                ckpt_every=max(steps // 4, 1), sample_every=0, wandb=False)
    return dataclasses.replace(cfg, **{**base, **changes})

# %%
show_doc(load_teacher)

# %%
show_doc(distill_config)

# %% [markdown]
# One round, here on the CPU. The shipped model walks 4 guided DDIM steps and teaches a student to walk 2, one
# call each. 150 steps of batch 64 take about half a minute. (The rounds from 64 calls down are in the last
# section; at 8 calls and more, DDIM alone is already close to its best on these digits, and a round has little
# to show.)

# %%
out = Path(tempfile.mkdtemp())/'distill'
clock = time.perf_counter()
run = train(run=Run(distill_config(None, calls=2, steps=150, lr=3e-4, out=out/'calls_002')), progress=False)
print(f"150 steps in {time.perf_counter() - clock:.0f} s; loss {run.history[0][1]:.4f} at the first step, "
      f"{sum(h[1] for h in run.history[-20:]) / 20:.4f} over the last 20")

# %% [markdown]
# The same noise and labels through the teacher with 4 and with 2 DDIM steps (8 and 4 network rows per image, for
# guidance), and through the student in 2 calls (2 rows):

# %%
student = load_model(out/'calls_002'/'checkpoint.pt')
labels = torch.arange(10)
x_T = torch.randn(10, *shipped.shape, generator=torch.Generator().manual_seed(0))
rows = [sample(net, d, labels, shape=shipped.shape, steps=4, spacing='trailing', eta=0.0, x_T=x_T),
        sample(net, d, labels, shape=shipped.shape, steps=2, spacing='trailing', eta=0.0, x_T=x_T),
        sample(student.model, student.diffusion, labels, shape=shipped.shape, x_T=x_T)]
fig, ax = plt.subplots(figsize=(6, 2.2))
ax.imshow(make_grid(torch.cat(rows).add(1).div(2), nrow=10, padding=1, pad_value=0.5).permute(1, 2, 0), interpolation='nearest')
ax.set(xticks=[], yticks=[8.5 + 17 * i for i in range(3)], yticklabels=['teacher, 4 steps', 'teacher, 2 steps', 'student, 2 calls'])
plt.show()

# %% [markdown]
# And their paths, for the three pixels drawn above and the digit 3. After 150 steps the student lands near every
# second point of the teacher's 4-step walk, as it was taught. The teacher's own 2-step walk lands somewhere else.

# %%
def walk_of(model, diffusion, steps=None, **kw):
    path = []
    last = sample(model, diffusion, torch.tensor([3]), shape=shipped.shape, steps=steps, x_T=x_T[3:4], trajectory=path, **kw)
    return [t for t, _, _ in path] + [-1], [x for _, x, _ in path] + [last]
fig, ax = plt.subplots(figsize=(6.5, 2.8))
for (ts_, zs_), style, name in ((walk_of(net, d, 4, spacing='trailing', eta=0.0), 'o-', 'teacher, 4 steps'),
                                (walk_of(net, d, 2, spacing='trailing', eta=0.0), 's:', 'teacher, 2 steps'),
                                (walk_of(student.model, student.diffusion), '^-', 'student, 2 calls')):
    for k, (r, c) in enumerate(pixels):
        ax.plot([place(t) for t in ts_], [float(z[0, 0, r, c]) for z in zs_], style, color=f'C{k}', ms=5, lw=1.5 if '^' in style else 1,
                alpha=1 if '^' in style else 0.45, label=name if k == 0 else None)
ax.set(xlim=(1030, -30), xlabel='timestep (pure noise → clean image)', ylabel='pixel value')
ax.legend(fontsize=8); plt.show()

# %% [markdown]
# ## Rounds: from 64 calls to one
#
# `distill` runs the rounds one after another: the first teacher walks `start` DDIM steps, each round's student
# becomes the next round's teacher, and a round finished in `out` is skipped, so the same call carries on after
# an interruption or a spent time budget. From the command line it is
#
# ```sh
# minddpm_distill --calls 4 --out runs/distill                # the shipped model, 64 → 32 → 16 → 8 → 4
# minddpm_distill runs/digits/checkpoint.pt --calls 1 --minutes 30 --export student.pt
# minddpm_sample runs/distill/calls_004/checkpoint.pt          # four calls, w = 3, by default
# minddpm_demo runs/distill/calls_004/checkpoint.pt            # the demo, in its calls
# ```
#
# A student's checkpoint is a checkpoint: `load_model` reads it, `export_model` writes its weights or its `.pt2` and
# `.onnx` graphs (the network is the teacher's UNet), and the config it records (teacher, calls, guidance) makes
# `sample`, the demo and `minddpm_sample` walk its own timesteps with one call a step.

# %%
#| exports
def distill_rounds(start: int,  # the calls of the first teacher's walk (its DDIM steps), or of a student teacher
                   calls: int,  # the last student's calls
                   ) -> list[int]:
    "The students' calls, round by round: start/2, start/4, … down to `calls`. `ValueError` unless start = calls × 2^k, k ≥ 1."
    for name, v in (('calls', calls), ('start', start)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1: raise ValueError(f"{name} must be a whole number of at least 1, got {v!r}")
    rounds, n = [], start
    while n > calls and n % 2 == 0: n //= 2; rounds.append(n)
    if n != calls or not rounds:
        halves = [start >> k for k in range(1, start.bit_length()) if start % (1 << k) == 0]
        if not halves: raise ValueError(f"start {start} is odd: no round can halve it; give a start that is calls × a power of "
                                        f"two, e.g. {calls * 2 ** max(1, (start // calls).bit_length())}")
        raise ValueError(f"{calls} call{'s' * (calls != 1)} cannot be reached from the teacher's {start} by halving, one round at a "
                         f"time: give calls from {', '.join(map(str, halves))}")
    return rounds

def distill(teacher=None,                  # a checkpoint or weights export of a v- or x0-model; None: the shipped digits model
            calls: int = 4,                # the last student's calls
            start: int | None = None,      # the first teacher's DDIM steps; None: 64 (a student teacher goes on from its own calls)
            guidance: float | None = None, # w folded into the students; None: 3 (a student teacher's own)
            steps: int = 1000,             # optimiser steps per round
            lr: float = 1e-4,              # peak learning rate per round
            out='runs/distill',            # one run directory per round: out/calls_032, …
            minutes: float | None = None,  # time budget for all the rounds left, shared evenly; None: `steps` each
            progress: bool = True,         # each round's progress bar
            **changes,                     # other `TrainConfig` fields for every round, e.g. device, precision, batch_size
            ) -> Path:                     # the checkpoint of the last round run: the student, or where the budget stopped
    """Progressive distillation (Salimans & Ho 2022): round after round, a student learns to take two of its teacher's
    DDIM steps in one and becomes the next round's teacher, from `start` calls down to `calls`; the first round folds
    guidance at `guidance` in (Meng et al. 2023). A round already finished in `out` is skipped, one cut short is
    resumed, so the same call carries on. Raises `ValueError` for calls not reached by halving, or a teacher refused
    by `load_teacher`."""
    import time
    from minddpm.checkpoint import load_checkpoint, resume, saved_config
    from minddpm.run import Run
    from minddpm.training import train
    teacher = _teacher_key(teacher)
    first = _teacher_model(teacher).config
    if first.calls is not None:   # a student teacher goes on from its own calls and guidance
        given = [f"{k} {v:g}" for k, v, own in (('start', start, first.calls), ('guidance', guidance, first.guidance))
                 if v is not None and v != own]
        if given: raise ValueError(f"{teacher} is a student of {first.calls} calls at w = {first.guidance:g}, and its rounds "
                                   f"go on from those: {' and '.join(given)} cannot change them; leave "
                                   f"{'it' if len(given) == 1 else 'them'} out")
        start, guidance = first.calls, first.guidance
    start, guidance = 64 if start is None else start, 3.0 if guidance is None else guidance
    rounds, began = distill_rounds(start, calls), time.monotonic()
    teacher_calls = lambda k: start if k == 0 else rounds[k - 1]
    for k, n in enumerate(rounds):
        ck = Path(out)/f'calls_{n:03d}'/'checkpoint.pt'
        budget = None if minutes is None else (minutes - (time.monotonic() - began) / 60) / (len(rounds) - k)
        if budget is not None and budget <= 0: break   # spent before this round began
        if ck.is_file():
            state = load_checkpoint(ck)
            saved = saved_config(state)
            if (saved.teacher, saved.guidance) != (teacher, guidance):
                raise ValueError(f"{ck} holds a round distilled from {saved.teacher} at w = {saved.guidance:g}, not from {teacher} "
                                 f"at w = {guidance:g}: give another out, or carry that run on with its own teacher")
            if state['step'] >= saved.steps:   # a finished round
                if progress: print(f"{ck}: {teacher_calls(k)} → {n} calls, finished: skipped")
                teacher = str(ck.resolve()); continue
            run = resume(ck, minutes=budget, **{key: v for key, v in changes.items() if key in ('device', 'precision')})
        else: run = Run(distill_config(teacher, n, guidance, steps, lr, ck.parent, minutes=budget, **changes))
        if progress: print(f"round {k + 1} of {len(rounds)}: {teacher_calls(k)} → {n} calls, step {run.step} of {run.cfg.steps} ({ck.parent})")
        run = train(run=run, progress=progress)
        if run.step < run.cfg.steps: return ck    # the budget ran out inside this round: the same call resumes it
        teacher = str(ck.resolve())
    return Path(teacher)

# %%
show_doc(distill_rounds)

# %%
show_doc(distill)

# %%
test_eq(distill_rounds(64, 4), [32, 16, 8, 4])
test_fail(lambda: distill_rounds(64, 3), contains='cannot be reached')

# %% [markdown]
# ## Measured: students against the solvers
#
# The benchmark distils the shipped model twice, from the teacher's 64 DDIM steps down to one call, 1,000 steps of
# batch 64 a round (the defaults), on two CPU cores: once with $w = 3$ folded in, whose samples are judged for
# their class, and once with $w = 1$ (the plain conditional model), whose samples are scored by FID, as lesson 08
# reads FID at $w = 1$ (guidance pushes samples past the real ones in the judge's features). The teacher is scored
# the same way with DDIM (η = 0, the walk the students learn) and DPM-Solver++ at the same calls, and at 50. 40
# samples a class, lesson 08's judge and feature space, 1,000 real digits as the reference:
# `python tests/bench_distill.py` (44 minutes), then `python tests/bench_distill.py plot
# tests/results/distill.json nbs/images/distill_calls.png`.
#
# ![the teacher's 64 DDIM steps, then each round's student in its calls, with the same noise and labels](images/distill_rounds.png)
#
# ![FID at w = 1 and judged accuracy at w = 3 against network calls, for the students and for the teacher with DDIM and DPM-Solver++](images/distill_calls.png)

# %%
bench = measured('distill.json')
calls = sorted({int(n) for chain in bench['chains'].values() for n in chain})
def scores_row(name, scores, key, fmt): return [name] + [fmt(scores[str(n)][key]) if str(n) in scores else '' for n in calls + [50]]
fid, acc = (lambda v: f'{v:.1f}'), (lambda v: f'{v:.1%}')
teacher_scores = bench['teacher']
display(Markdown(f"**FID at w = 1** in the judge's features (lower is better; {bench['floor']:.1f} for as many real "
                 "training digits, which is no floor here: the reference is the training split the models learned)"))
show_table(['network calls'] + calls + [50],
           [scores_row('student, w = 1 folded in', bench['chains']['1'], 'fid', fid),
            scores_row('teacher + DDIM (η = 0)', teacher_scores['ddim'], 'fid', fid),
            scores_row('teacher + DPM-Solver++', teacher_scores['dpm++'], 'fid', fid)])
display(Markdown('**Judged accuracy at w = 3** (the judge reads the class of each sample)'))
show_table(['network calls'] + calls + [50],
           [scores_row('student, w = 3 folded in', bench['chains']['3'], 'accuracy', acc),
            scores_row('teacher + DDIM (η = 0)', teacher_scores['ddim'], 'accuracy', acc),
            scores_row('teacher + DPM-Solver++', teacher_scores['dpm++'], 'accuracy', acc)])
minutes = {w: sum(r['seconds'] for n, r in chain.items() if int(n) >= 4) / 60 for w, chain in bench['chains'].items()}
print(f"to 4 calls: {minutes['3']:.1f} minutes with w = 3 folded in, {minutes['1']:.1f} with w = 1; "
      f"DDIM (η = 1) at 50 calls: FID {teacher_scores['ddim_eta1']['50']['fid']:.1f}")

# %% [markdown]
# What the runs say, plainly:
#
# - **Few calls: the student wins by far.** In one call it scores 12.7, where the teacher needs DPM-Solver++ with 8
#   calls (9.3) or DDIM with 16 (10.1) to do better, and DPM-Solver++ with 2 calls scores 66.9. Every student,
#   down to one call, draws digits the judge reads right 100 % of the time at $w = 3$; so does the teacher.
# - **It does not reach its teacher.** The 4-call student scores 11.6 against 9.4 for the teacher's 50 DDIM
#   steps: 24 % worse, where the aim was 15 %. From 8 calls on, the teacher with DPM-Solver++ is better than any
#   student.
# - **What each halving loses.** Almost all of the loss came in the first two rounds: from the teacher's 9.4 to 9.6
#   (DDIM with 50 and 32 steps) to 10.9 for the 32-call student and 11.6 for the 16-call one. The next two
#   halvings lost nothing (11.7 and 11.6), and the last two lost about one point (12.8 and 12.7). A student fits
#   its teacher's jump only approximately after 1,000 steps, and a 32-step walk adds that error up 32 times; a
#   few-step walk adds it up a few times, while its teacher's answer gets harder to match. The picture of the
#   rounds shows the same: the digits keep their shape all the way to one call, a little blurrier at two and one.
# - **Fewer, longer rounds do not close the gap.** From the teacher's 16 steps, two rounds of 2,000 steps each
#   (12 minutes with $w = 1$) gave 11.4 at 4 calls, where the four rounds from 64 gave 11.6: the same, within the
#   noise of 400 samples.
# - **Cost.** The four rounds from 64 to 4 calls took 11.5 minutes on two CPU cores with $w = 3$ folded in (the
#   first round, with a guided teacher, 3.6 minutes; the others 2.6), within the 15 minutes aimed at; down to one
#   call, 18 minutes. Distilling with $w = 1$ costs about the same: its teacher is called once a step, but the
#   round still makes two of them.
#
# **In the demo.** Seconds per image of the demo's `Batcher` (lesson 12), requests of 4 images one at a time, on
# two CPU cores:

# %%
lat = bench['latency']
show_table(['model', 'sampler', 'network rows per image', 'seconds per image'],
           [['teacher', 'DPM-Solver++, 20 steps (the demo\'s default), w = 3', 40, f"{lat['teacher_dpm20']:.3f}"],
            ['teacher', 'DPM-Solver++, 4 steps, w = 3', 8, f"{lat['teacher_dpm4']:.3f}"],
            ['student', 'its 4 calls, w = 3 folded in', 4, f"{lat['student']:.3f}"]])

# %% [markdown]
# The student makes an image in a sixth of the time of the demo's default (0.012 s against 0.069 s), and as fast as
# the teacher's 4-step DPM-Solver++: for 4 images a request, a call on 8 rows costs the CPU about what a call on 4
# does. What the student buys at the same speed is the image: FID 11.6 at 4 calls, against 18.2.

# %% [markdown]
# ## Exercises
#
# Write each function in place of its `...` and run its cell: `check` prints ✓, or where your answer differs and a hint
# ([how the checks work](exercises.ipynb)). Keep the stub's parameter names (`check` passes its inputs by name) and
# return the inputs' dtype unless the stub asks for another. Solutions: `tests/solutions/` in the course's repository.
#
# 1. **v from an x0.** Given noisy images `z_t`, a clean image `x0` it is read against, and ᾱ_t (a float), return
#    the v that a v-network would have to output at (z_t, t) for its x̂0 to be `x0`: first the noise that x0 implies,
#    then v from the two (lesson 02; "Two steps in one" writes both for x̃).

# %%
def v_from_x0(z_t, x0, alpha_bar_t):   # (B, C, H, W), (B, C, H, W), a float in (0, 1)
    ...                                 # return (B, C, H, W)

check(v_from_x0)

# %% [markdown]
# 2. **The student's target.** Given `z_t`, where the teacher's two steps from it land, `z_s`, and the ᾱ at the two
#    ends of the student's one step, t and s (floats; ᾱ_s = 1 when s is the clean image; the teacher's midpoint plays no
#    part), return the v target that makes one student DDIM step from t
#    land on `z_s` ("Two steps in one" above). Then: at the student's last step, s is the clean image; what is x̃ there, and
#    why is that the one step where the student's target is an image the teacher drew?

# %%
def distill_v_target(z_t, z_s, alpha_bar_t, alpha_bar_s):   # (B, C, H, W), (B, C, H, W), floats
    ...                                                      # return ṽ, (B, C, H, W)

check(distill_v_target)
