# %%
#| default_exp checkpoint

# %% [markdown]
# # Checkpoints
# > One file that holds a whole run, written atomically, read with a clear message when it is wrong, and a resume that continues exactly

# %% [markdown]
# A checkpoint holds every state of the run: model, EMA, optimiser, LR schedule, grad scaler, step, config,
# history and the minddpm version. It is written to a temporary file and renamed over the old one, so a run
# killed while saving leaves the previous checkpoint intact. Lesson 07 shows a resumed run taking the same
# losses as one that never stopped.

# %%
#| export
from __future__ import annotations
import dataclasses, os, warnings
from dataclasses import asdict
from pathlib import Path

import torch

import minddpm
from minddpm.device import pick_device
from minddpm.run import Run, TrainConfig

# %%
#| export
def save_checkpoint(run: Run, # the run to save, every state of it
                    path,     # the file to write (replaced if it exists); missing folders are made
                    ) -> Path:
    "Write the whole run to `path` atomically (temporary file, then rename)."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    state = {'model': run.model.state_dict(), 'ema': run.ema.state_dict(), 'opt': run.opt.state_dict(),
             'sched': run.sched.state_dict(), 'scaler': run.scaler.state_dict(), 'step': run.step,
             'config': asdict(run.cfg), 'history': run.history, 'classes': run.classes, 'version': minddpm.__version__}
    tmp = path.with_name(path.name + '.tmp')
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic on POSIX and Windows
    run.checkpoint = (path, run.step)
    return path

# %%
#| hide
from fastcore.test import *
from nbdev.showdoc import show_doc
import dataclasses, tempfile
import matplotlib.pyplot as plt
from minddpm.run import TRAIN_PRESETS
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it

# %% [markdown]
# What the checkpoint of a `tiny` run holds: half of it is the optimiser's two moment estimates per
# weight, which only training needs; the other half is the weights and their EMA.

# %%
run = Run(dataclasses.replace(TRAIN_PRESETS['tiny'], batch_size=8, out=tempfile.mkdtemp()))
for p in run.model.parameters(): p.grad = torch.zeros_like(p)
run.opt.step()                      # AdamW's first step creates its two moment estimates per weight
path = save_checkpoint(run, Path(run.cfg.out)/'checkpoint.pt')
state = torch.load(path, weights_only=True)
def megabytes(obj): return (sum(map(megabytes, obj.values())) if isinstance(obj, dict) else
                            sum(map(megabytes, obj)) if isinstance(obj, (list, tuple)) else
                            obj.numel() * obj.element_size() / 1e6 if torch.is_tensor(obj) else 0)
sizes = {k: megabytes(v) for k, v in state.items()}
plt.figure(figsize=(5, 1.8)); plt.barh(list(sizes), list(sizes.values())); plt.xlabel('MB')
plt.title(f"checkpoint.pt: {path.stat().st_size / 1e6:.1f} MB on disk", fontsize=9);

# %% [markdown]
# Reading one refuses what is not a checkpoint with the reason, before anything else happens. Resuming
# rebuilds the run from the saved config and loads every state; the loop then skips the batches of the
# current epoch already used. No random generator's state needs saving: each step's draws follow from
# `(seed, step)`. A resume may change how the run is carried out (`RESUME_CHANGES`: its length, peak learning
# rate, time budget, folder, device, precision, logging, intervals), never what defines it (data, model,
# batch, seed). Files written before targets and weightings were chosen are read as ε, uniform
# (`saved_config`), whatever today's defaults are.

# %%
#| export
#| hide
def _read(path, needs: set, map_location='cpu') -> dict:
    "A file `torch.save` wrote, read with `weights_only=True`, refusing a folder, a missing or corrupt file, or missing keys."
    path = Path(path)
    if path.is_dir(): raise ValueError(f"{path} is a folder; give the checkpoint file in it, e.g. {path/'checkpoint.pt'}")
    if not path.is_file(): raise FileNotFoundError(f"no checkpoint at {path}")
    with open(path, 'rb') as f: head = f.read(4)
    if head[:2] != b'PK' and head[:1] != b'\x80':   # torch.save writes a zip archive (a pickle before PyTorch 1.6)
        raise ValueError(f"{path} is not a readable minddpm checkpoint or model file: torch.save did not write it (it starts with {head!r})")
    try: state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:   # the first line of torch's reason: some run to a page of advice about pickles
        raise ValueError(f"{path} is not a readable minddpm checkpoint ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})") from e
    missing = needs - set(state) if isinstance(state, dict) else needs
    if missing: raise ValueError(f"{path} is not a minddpm checkpoint: it lacks {sorted(missing)}")
    return state

def load_checkpoint(path,               # a file written by `save_checkpoint`
                    map_location='cpu', # where the tensors are loaded, as `torch.load` takes it
                    ) -> dict:
    "Read a checkpoint written by `save_checkpoint`, refusing missing or corrupt files with a clear message."
    return _read(path, {'model', 'ema', 'opt', 'config', 'step'}, map_location)

def saved_config(state: dict, # a checkpoint or exported model, as read by `load_checkpoint`
                 ) -> TrainConfig:
    "The `TrainConfig` a checkpoint was trained with; files written before targets and weightings were chosen are ε, uniform."
    return TrainConfig(**{'objective': 'eps', 'weighting': 'uniform', **state['config']})

def set_steps(run: Run,               # the run to change: its config and LR schedule are replaced
              steps: int,             # the new total of optimiser steps; more than the run's current step
              lr: float | None = None, # a new peak learning rate; None: keep `run.cfg.lr`
              ):
    "Change the run's length (and peak LR): the same OneCycle shape stretched or shrunk to `steps`, continuing at the current step."
    if steps < max(run.step, 1): raise ValueError(f"the run is at step {run.step}; steps={steps} would end before it")
    run.cfg = dataclasses.replace(run.cfg, steps=steps, lr=run.cfg.lr if lr is None else lr)
    for g in run.opt.param_groups:   # OneCycleLR reads these when it continues a schedule (last_epoch ≥ 0)
        g.update(max_lr=run.cfg.lr, initial_lr=run.cfg.lr / 25, min_lr=run.cfg.lr / 25 / 1e4)   # its div factors
    run.sched = torch.optim.lr_scheduler.OneCycleLR(run.opt, max_lr=run.cfg.lr, total_steps=steps, last_epoch=run.step - 1)

RESUME_CHANGES = ('steps', 'lr', 'minutes', 'out', 'device', 'precision', 'wandb', 'compile', 'val_every', 'ckpt_every',
                  'sample_every', 'grad_accum')   # what `resume` may change; the other fields define the run

def _resumed_config(path, saved: TrainConfig, step: int, changes: dict) -> TrainConfig:
    """`saved` with `changes`, refusing a change to a field that defines the run, or a length that ends before `step`. A
    device the checkpoint names that is not here (saved on CUDA, resumed on a CPU) falls back to 'auto', with a warning."""
    unused = () if saved.weighting == 'min_snr' else ('snr_gamma',)   # γ means nothing under uniform weights
    fixed = {k: (getattr(saved, k), v) for k, v in changes.items()
             if k not in RESUME_CHANGES + unused and hasattr(saved, k) and getattr(saved, k) != v}
    if fixed: raise ValueError(f"resuming {path} cannot change " + ', '.join(f"{k} ({a!r} → {b!r})" for k, (a, b) in fixed.items())
                               + f": {'they define' if len(fixed) > 1 else 'it defines'} the run it holds; start a new run (another out) for that")
    if 'device' not in changes:
        try: pick_device(saved.device)
        except ValueError as e:
            warnings.warn(f"{e}: {path} was saved on {saved.device}; resuming on {pick_device('auto')} instead (pass device to choose)")
            changes = {**changes, 'device': 'auto'}
    cfg = dataclasses.replace(saved, **changes)
    if cfg.steps < step: raise ValueError(f"the checkpoint is at step {step}; steps={cfg.steps} would end before it")
    return cfg


# %%
show_doc(load_checkpoint)

# %%
show_doc(saved_config)

# %%
show_doc(set_steps)

# %%
#| export
def resume(path,      # a checkpoint written by `save_checkpoint`
           **changes, # `TrainConfig` fields in `RESUME_CHANGES` to change, e.g. `out`, `steps`, `lr`, `minutes`
           ) -> Run:
    """Rebuild a run from its checkpoint, every state restored. A new `steps` stretches the LR schedule's OneCycle shape,
    a new `lr` continues it at the new height. Raises `ValueError` for a change to a field that defines the run."""
    state = load_checkpoint(path)
    saved = saved_config(state)
    run = Run(_resumed_config(path, saved, state['step'], changes))
    run.model.load_state_dict(state['model']); run.ema.load_state_dict(state['ema'])
    run.opt.load_state_dict(state['opt'])
    if state['scaler'] and run.scaler.is_enabled(): run.scaler.load_state_dict(state['scaler'])  # fp16 then and now
    run.step, run.history, run.checkpoint = state['step'], list(state['history']), (Path(path), state['step'])
    if (run.cfg.steps, run.cfg.lr) == (saved.steps, saved.lr): run.sched.load_state_dict(state['sched'])
    else: set_steps(run, run.cfg.steps, run.cfg.lr)
    return run

# %%
(Path(run.cfg.out)/'bad.pt').write_bytes(b'not a checkpoint')
for bad in (lambda: load_checkpoint(Path(run.cfg.out)/'bad.pt'), lambda: resume(path, seed=1)):
    try: bad()
    except ValueError as e: print(e)
