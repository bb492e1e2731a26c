# %%
#| default_exp budget

# %% [markdown]
# # Time budget
# > A run that fits its length to a number of minutes: it times its steps and every validation, grid and checkpoint, and refits the step count, and so the learning-rate schedule, as the machine speeds up or slows down

# %%
#| export
from __future__ import annotations
import time

import torch

from minddpm.sampling import sample

# %%
#| hide
from fastcore.test import *
import matplotlib.pyplot as plt
from types import SimpleNamespace
from nbdev.showdoc import show_doc
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it

# %% [markdown]
# `minddpm_train --minutes 3` must end in three minutes with a finished learning-rate schedule, on a
# laptop or on a busy shared machine. A fixed step count cannot: the OneCycle schedule anneals only at its
# last step, so a run cut short by the clock ends at a high learning rate. Instead the run times its first
# steps, and the validations, sample grids and checkpoints it will still take, and fits the step count to
# the budget; every 2 % of the budget it refits, with the pace of the last 50 steps. An event timed while the
# machine was busy is scaled by how much faster the steps have become since.

# %%
#| export
GRID_MIN_STEPS = 500   # a small folder's epoch is a step or two: its grids would cost more than its training

def grid_every(cfg,           # a `TrainConfig`: its `sample_every`, in epochs; 0: no grids at all
               per_epoch: int, # optimiser steps in one epoch
               ) -> int:
    "Steps between two sample grids: `sample_every` epochs, but at least `GRID_MIN_STEPS`; 0 when `sample_every` is 0."
    return max(cfg.sample_every * per_epoch, GRID_MIN_STEPS) if cfg.sample_every else 0

# %%
#| export
#| hide
class TimeBudget:
    """Fits a run's length to a time budget as it goes. It times every step, validation, sample grid and checkpoint, and
    chooses the step count whose remaining steps and events (the final ones included) end at `fill` of the budget."""
    def __init__(self, run,               # the `Run` to fit: its step, config, data and place are read
                 seconds: float,          # the budget
                 calibrate: int = 20,     # steps timed before the step count is first fitted
                 fill: float = 0.97,      # the share of the budget the run is fitted to end at
                 clock=time.monotonic):   # seconds, as a function of nothing: the loop's clock, simulated in tests
        self.run, self.seconds, self.calibrate, self.fill, self.clock = run, seconds, calibrate, fill, clock
        self.start = clock()
        self.fits, self.refitted = run.step == 0, 0.0       # a fresh run fits its length; a resumed one only stops in time
        self.step_s, self.cost = [], {'val': 0.0, 'grid': 0.0, 'ckpt': 0.0}   # seconds per step; per event, measured
        self.pace = {'val': None, 'grid': None, 'ckpt': None}   # seconds per step when each event cost was measured
    def elapsed(self) -> float: return self.clock() - self.start
    def pace_now(self) -> float | None:
        "Mean seconds of the last 50 steps: the machine now, not at the start of the run."
        recent = self.step_s[-50:]
        return sum(recent) / len(recent) if recent else None
    def measured(self, kind: str, seconds: float):
        "Keep `seconds` as the cost of one event of `kind`, with the steps' pace then: a busy machine slows both alike."
        self.cost[kind], self.pace[kind] = seconds, self.pace_now()
    def timed(self, kind: str, fn, *args, **kwargs):
        "Call `fn`, keeping its duration as the cost of one event of `kind`."
        t0 = self.clock(); out = fn(*args, **kwargs); self.measured(kind, self.clock() - t0)
        return out
    def probe_grid(self, steps: int = 50, n: int = 8):
        "Estimate a sample grid's cost before the first one: one guided sampling step on its batch, times `steps`."
        y, t0 = torch.arange(len(self.run.classes)).repeat_interleave(n), self.clock()
        sample(self.run.ema.model, self.run.diffusion, y, shape=self.run.shape, steps=1, generator=torch.Generator(self.run.device))
        self.measured('grid', steps * (self.clock() - t0))
    def first_fit(self) -> bool:
        "Is this the step the run is first fitted at? Then a validation and a checkpoint are timed, and a grid probed."
        first = self.fits and self.run.step == self.calibrate
        if first and self.run.cfg.sample_every and not self.cost['grid'] and self.run.place.main: self.probe_grid()
        return first
    def spent(self) -> bool:
        "Is the budget spent? Rank 0's clock decides for every rank."
        return bool(self.run.place.from_main(self.elapsed() > self.seconds, device=self.run.device)[0])
    def _events(self, every: int, end: int) -> int:
        "Events due after the current step, up to `end`: one every `every` steps (0: none), plus the final one."
        step = self.run.step
        return 0 if not every else end // every - step // every + (end % every != 0)
    def fit(self) -> int:
        "The largest step count whose remaining time fits the budget (at least one more step)."
        cfg, per_epoch = self.run.cfg, len(self.run.train_dl)
        step_s, left = self.pace_now(), self.fill * self.seconds - self.elapsed()
        # an event timed while the machine was busier (or idler) costs what it cost then, scaled by the steps' pace since
        each = {k: c * (step_s / self.pace[k] if self.pace[k] else 1.0) for k, c in self.cost.items()}
        def cost(end):
            return ((end - self.run.step) * step_s + self._events(cfg.val_every, end) * each['val']
                    + self._events(grid_every(cfg, per_epoch), end) * each['grid']
                    + self._events(cfg.ckpt_every, end) * each['ckpt'])
        lo, hi = self.run.step + 1, self.run.step + 2
        while cost(hi) <= left: lo, hi = hi, 2 * hi           # then bisect: cost grows with the end
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if cost(mid) <= left else (lo, mid)
        return lo
    def refit(self, first: bool, # this is the step of the first fit
              last: bool,  # this is the run's last step
              ) -> int | None:
        "A new step count, when a refit is due (every 2 % of the budget) and moves it by more than 1 %; else None."
        run = self.run
        if not self.fits or last or run.step < self.calibrate: return None
        due = first or self.elapsed() - self.refitted > 0.02 * self.seconds
        due, steps = run.place.from_main(due, self.fit() if due and run.place.main else 0, device=run.device)
        if not due: return None
        self.refitted = self.elapsed()
        return int(steps) if abs(steps - run.cfg.steps) > max(1, 0.01 * steps) else None

# %%
show_doc(TimeBudget)

# %%
show_doc(TimeBudget.fit)

# %% [markdown]
# What a five-minute budget is fitted to, for a run whose steps take 0.1 s and whose validation, grid and
# checkpoint take 1, 8 and 0.5 s, as the pace of its steps changes (a stand-in run: only the numbers `fit`
# reads):

# %%
cfg = SimpleNamespace(val_every=500, ckpt_every=500, sample_every=40)
fake = SimpleNamespace(step=20, cfg=cfg, train_dl=range(25), place=None, classes=range(10))
paces = [0.05, 0.075, 0.1, 0.15, 0.2, 0.3]
for grid_s in (0.0, 8.0):
    b = TimeBudget(fake, 300, clock=lambda: 0.0)
    b.step_s, b.cost = [0.1] * 20, {'val': 1.0, 'grid': grid_s, 'ckpt': 0.5}
    fitted = []
    for p in paces:
        b.step_s = [p] * 20; b.pace = {k: p for k in b.pace}
        fitted.append(b.fit())
    plt.plot(paces, fitted, 'o-', label=f'grid {grid_s:g} s')
plt.xlabel('seconds per step'); plt.ylabel('steps fitted to 5 minutes'); plt.legend(fontsize=8);
