# %%
#| default_exp distill

# %% [markdown]
# # Distillation
# > A student that takes two of its teacher's steps in one, round after round, with guidance folded in: the shipped model from 64 network calls down to one

# %%
#| export
from __future__ import annotations
import dataclasses, math
from pathlib import Path

import torch
from torch import nn

from minddpm.conditioning import guided_eps
from minddpm.forward import Diffusion
from minddpm.sampling import ddim_timesteps

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
#| exports
def _teacher_model(path, device='cpu'):
    "`load_model(path)`, refused by a `ValueError` unless its weights can teach: not a graph, a v- or x0-model."
    from minddpm.trained import load_model
    m = load_model(path, device)
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
    return Teacher(m.model, m.diffusion, cfg.calls, cfg.guidance if t.calls is None else None)

def distill_config(teacher,                 # a checkpoint or weights export (`load_model` reads it) of a v- or x0-model
                   calls: int,              # the student's calls: half its teacher's
                   guidance: float = 3.0,   # w folded into the student (a student teacher's own, which it must be)
                   steps: int = 500,        # optimiser steps of the round
                   lr: float = 1e-4,        # peak learning rate of its OneCycle schedule
                   out: str = 'runs/distill', # the round's run directory
                   **changes,               # other `TrainConfig` fields, e.g. minutes, device, precision, batch_size
                   ):                       # a `TrainConfig`
    """The `TrainConfig` of one round: the teacher's own, its data and network kept, with the teacher, the calls, the
    guidance and the round's length, an EMA from the first step, and a grid of samples only at the end."""
    cfg = _teacher_model(teacher).config
    base = dict(teacher=str(Path(teacher).resolve()), calls=calls, guidance=guidance, steps=steps, lr=lr, out=str(out),
                weighting='uniform', ema_start=0, minutes=None, compile=False, val_every=max(steps // 4, 1),
                ckpt_every=max(steps // 4, 1), sample_every=0, wandb=False)
    return dataclasses.replace(cfg, **{**base, **changes})

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
        raise ValueError(f"{calls} call{'s' * (calls != 1)} cannot be reached from the teacher's {start} by halving, one round at a "
                         f"time: give calls from {', '.join(map(str, halves)) or 'none (start is odd)'}")
    return rounds

def distill(teacher=None,                  # a checkpoint or weights export of a v- or x0-model; None: the shipped digits model
            calls: int = 4,                # the last student's calls
            start: int | None = None,      # the first teacher's DDIM steps; None: 64 (a student teacher goes on from its own calls)
            guidance: float | None = None, # w folded into the students; None: 3 (a student teacher's own)
            steps: int = 500,              # optimiser steps per round
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
    from importlib import resources
    from minddpm.checkpoint import load_checkpoint, resume, saved_config
    from minddpm.run import Run
    from minddpm.training import train
    teacher = str(resources.files('minddpm.assets') / 'digits_tiny.pt') if teacher is None else str(teacher)
    first = _teacher_model(teacher).config
    if first.calls is not None:   # a student teacher goes on from its own calls and guidance
        given = [f"{k} {v:g}" for k, v, own in (('start', start, first.calls), ('guidance', guidance, first.guidance))
                 if v is not None and v != own]
        if given: raise ValueError(f"{teacher} is a student of {first.calls} calls at w = {first.guidance:g}, which the next "
                                   f"rounds go on from: {' and '.join(given)} cannot change that; leave them out")
        start, guidance = first.calls, first.guidance
    start, guidance = 64 if start is None else start, 3.0 if guidance is None else guidance
    rounds, began = distill_rounds(start, calls), time.monotonic()
    for k, n in enumerate(rounds):
        ck = Path(out)/f'calls_{n:03d}'/'checkpoint.pt'
        budget = None if minutes is None else (minutes - (time.monotonic() - began) / 60) / (len(rounds) - k)
        if budget is not None and budget <= 0: break   # spent before this round began
        if ck.is_file():
            state = load_checkpoint(ck)
            if state['step'] >= saved_config(state).steps: teacher = str(ck); continue   # a finished round
            run = resume(ck, minutes=budget, **{k: v for k, v in changes.items() if k in ('device', 'precision')})
        else: run = Run(distill_config(teacher, n, guidance, steps, lr, ck.parent, minutes=budget, **changes))
        run = train(run=run, progress=progress)
        if run.step < run.cfg.steps: return ck    # the budget ran out inside this round: the same call resumes it
        teacher = str(ck)
    return Path(teacher)
