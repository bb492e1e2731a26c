# %%
#| default_exp cli

# %% [markdown]
# # Commands
# > `minddpm_train` and `minddpm_sample`: every number checked as it is parsed, every output path before any work

# %%
#| hide
from fastcore.test import *
import contextlib, io, tempfile
from importlib import resources

# %% [markdown]
# Lesson 07 builds training and lesson 05 sampling; this page turns them into the two commands that
# `pip install minddpm` puts on your path. Their arguments come from a terminal, where odd values are
# common and costly: `nan` parses as a float and would draw black images, `-4` parses as an int, a path
# can point into a file or at a folder, and a mistake found after an hour of training loses the hour.
# So every number is checked as it is parsed (`int_arg` and `float_arg`, lesson 00), refusing NaN,
# infinities and values out of range by name; every output path is made writable before any work
# (`writable_dir`, `writable_file`); and every warning prints as one line that starts with the command.
#
# Resuming applies what it can (`--steps`, `--epochs`, `--lr`, `--minutes`, `--out`, `--device`,
# `--precision`, …; the learning-rate schedule carries on at the new peak) and refuses what would make it
# another run (`--dataset`, `--img-size`, `--batch-size`, `--seed`, `--val-frac`, `--hflip`). A run that
# its time budget cut short says so, and says how to carry on.

# %%
#| export
import argparse, contextlib, dataclasses, io, os
from pathlib import Path

import torch

from minddpm.data import (cli_warnings, float_arg, image_suffixes, int_arg, pick_device, show_images, to_uint8, writable_dir,
                          writable_file)
from minddpm.distributed import launched, leave
from minddpm.forward import OBJECTIVES, WEIGHTINGS
from minddpm.sampling import PRECISIONS, SAMPLERS, SPACINGS, sample
from minddpm.training import TRAIN_PRESETS, Run, export_model, load_checkpoint, load_model, resume, set_steps, train


# %%
#| export
def _export_target(path) -> Path:
    "The file `--export` may write: writable, and not a training checkpoint, which the smaller export would replace."
    path = writable_file(path)
    if path.is_file():
        try: load_checkpoint(path)
        except (ValueError, FileNotFoundError): return path   # an earlier export, or not ours: replaced as asked
        raise ValueError(f"--export {path} is a training checkpoint; exporting over it would lose the run: give another file")
    return path

def minddpm_train(argv=None): # command-line arguments as a list of strings; None: `sys.argv[1:]`
    "Entry point of `minddpm_train`: train a conditional DDPM from a preset, or resume a checkpoint."
    p = argparse.ArgumentParser(prog='minddpm_train', description=minddpm_train.__doc__)
    p.add_argument('--dataset', help="digits (default), cifar10, mnist, fashion_mnist, or a folder of class sub-folders")
    p.add_argument('--preset', help=f"one of {', '.join(TRAIN_PRESETS)} (default: tiny)")
    p.add_argument('--img-size', type=int_arg(1), help='image side in pixels')
    p.add_argument('--hflip', action=argparse.BooleanOptionalAction,
                   help="random horizontal flips of training images (default: the preset's, on for colab and full)")
    length = p.add_mutually_exclusive_group()
    length.add_argument('--steps', type=int_arg(1), help='optimiser steps in all')
    length.add_argument('--epochs', type=int_arg(1), help='passes over the training split in all')
    p.add_argument('--minutes', type=float_arg(0, open_low=True),
                   help='time budget: a new run fits its step count to it as it goes; any run stops by it')
    p.add_argument('--batch-size', type=int_arg(1),
                   help="the global batch: images per optimiser step over all processes (default: the preset's, 64 for tiny); "
                        "under torchrun a multiple of the processes × --grad-accum")
    p.add_argument('--grad-accum', type=int_arg(1),
                   help='micro-batches per step on each process: the same run in less memory (default: 1)')
    p.add_argument('--lr', type=float_arg(0, open_low=True), help='peak learning rate (on --resume: the schedule goes on at it)')
    p.add_argument('--objective', choices=OBJECTIVES, help="what the network predicts: the noise ε (eps), v, or the clean image x0 "
                                                           "(default: the preset's: v for tiny, eps for colab and full)")
    p.add_argument('--weighting', choices=WEIGHTINGS, help="loss weighting over timesteps: uniform, or min_snr (min-SNR-γ) "
                                                           "(default: uniform)")
    p.add_argument('--snr-gamma', type=float_arg(0, open_low=True), help="min-SNR's γ (default: 5)")
    p.add_argument('--val-frac', type=float_arg(0, 1, open_low=True, open_high=True),
                   help='share of the digits or an image folder held out for validation (default: 0.1; at least one image)')
    p.add_argument('--out', help='run directory (default: runs/minddpm)')
    p.add_argument('--resume', help='checkpoint to continue from')
    p.add_argument('--wandb', action='store_true', help='log to Weights & Biases (offline without credentials)')
    p.add_argument('--compile', action='store_true', help='train through torch.compile')
    p.add_argument('--device', help='auto, cuda, cuda:N, mps or cpu; under torchrun auto, cuda (the GPU of each local rank) or cpu')
    p.add_argument('--precision', choices=('auto', 'bf16', 'fp16', 'fp32'),
                   help='autocast precision; auto: bf16 or fp16 on CUDA, fp32 elsewhere (bf16 also pays on CPUs with AMX: see minddpm_bench)')
    p.add_argument('--seed', type=int_arg(0))
    p.add_argument('--export', help='also write the model alone (EMA and raw weights, half precision) to this file at the end')
    rank = int(os.environ.get('RANK', 0)) if launched() else 0
    with contextlib.redirect_stderr(io.StringIO()) if rank else contextlib.nullcontext():
        a = p.parse_args(argv)   # under torchrun every rank parses alike, and rank 0 alone says what is wrong
    if a.resume and a.preset: p.error("--preset cannot be used with --resume: the checkpoint holds its config")
    changes = {k: v for k, v in dict(dataset=a.dataset, img_size=a.img_size, steps=a.steps, batch_size=a.batch_size,
                                     grad_accum=a.grad_accum, lr=a.lr, objective=a.objective, weighting=a.weighting,
                                     snr_gamma=a.snr_gamma,
                                     val_frac=a.val_frac, out=a.out, device=a.device, precision=a.precision, seed=a.seed,
                                     hflip=a.hflip).items() if v is not None}
    changes.update({k: True for k in ('wandb', 'compile') if getattr(a, k)}, minutes=a.minutes)  # a budget is per command
    made = False   # did this command make the run folder?
    with cli_warnings('minddpm_train'):
        try:
            if a.export: _export_target(a.export)                  # paths first: a bad one must not cost a run
            if a.resume: run = resume(a.resume, **changes)
            else:
                preset = a.preset or 'tiny'
                if preset not in TRAIN_PRESETS: raise ValueError(f"Unknown preset {preset!r}; use one of {', '.join(TRAIN_PRESETS)}")
                cfg = dataclasses.replace(TRAIN_PRESETS[preset], **changes)
                pick_device(cfg.device)                          # a wrong device makes no run folder
                if rank == 0: made = not Path(cfg.out).exists(); writable_dir(cfg.out)
                if (Path(cfg.out)/'checkpoint.pt').exists():
                    raise ValueError(f"{cfg.out} already holds a run: continue it with --resume {Path(cfg.out)/'checkpoint.pt'}, "
                                     f"or give another --out")
                run = Run(cfg)
            if a.epochs: set_steps(run, a.epochs * len(run.train_dl))
            if run.step >= run.cfg.steps:
                if not a.export: raise ValueError(f"{a.resume} is already at its last step, {run.step}: nothing to train; "
                                                  f"pass --steps (more than {run.step}) or --epochs to train it further")
            else: run = train(run=run)
            if a.export and run.place.main: print(f"exported the model to {export_model(run, a.export)}")
        except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as e:
            folder = Path(cfg.out) if made and rank == 0 else None
            if folder and folder.is_dir() and not any(folder.iterdir()): folder.rmdir()   # a refused run leaves no folder behind
            # every rank meets the same bad config, data or NaN, and rank 0 says so; a RuntimeError may be this rank's alone
            if rank == 0: p.exit(2, f"minddpm_train: error: {e}\n")
            p.exit(2, f"minddpm_train (rank {rank}): error: {e}\n" if isinstance(e, RuntimeError) else None)
        finally: leave()
    if not run.place.main: return
    if run.step < run.cfg.steps:
        print(f"the time budget ran out at step {run.step} of {run.cfg.steps}, before the learning rate had annealed; "
              f"carry on with: minddpm_train --resume {run.checkpoint[0]}")
    print(f"trained to step {run.step}; checkpoint: {run.checkpoint[0]}")

def minddpm_sample(argv=None): # command-line arguments as a list of strings; None: `sys.argv[1:]`
    "Entry point of `minddpm_sample`: draw a labelled grid of samples from a checkpoint's EMA weights."
    p = argparse.ArgumentParser(prog='minddpm_sample', description=minddpm_sample.__doc__)
    p.add_argument('checkpoint', help='a checkpoint from minddpm_train, or a model file from --export')
    p.add_argument('--labels', type=int, nargs='*', help='classes to draw (default: all)')
    p.add_argument('--n', type=int_arg(1), default=1, help='images per label (default: 1)')
    p.add_argument('--sampler', default='ddim', choices=SAMPLERS,
                   help='ddim (default), dpm++ (DPM-Solver++(2M), a deterministic ODE solver that needs 10 to 20 steps on '
                        'a v-prediction model such as the shipped one; no --eta) or ddpm (all T steps)')
    p.add_argument('--steps', type=int_arg(1), default=50, help='network calls of ddim and dpm++ (default: 50)')
    p.add_argument('--spacing', default='linspace', choices=SPACINGS,
                   help='their timesteps: linspace (T-1 down to 0, the default) or trailing (Lin et al. 2023)')
    p.add_argument('--guidance', type=float_arg(), default=3.0, help='w: 0 unconditional, 1 conditional (default: 3)')
    p.add_argument('--eta', type=float_arg(0, 1), default=1.0, help='DDIM noise, 0 (deterministic) to 1 (default: 1)')
    p.add_argument('--img-size', type=int_arg(1), help='image side (default: the training size)')
    p.add_argument('--precision', default='auto', choices=PRECISIONS,
                   help='the network\'s precision: fp32, bf16 (its weights cast once), or auto (the default): bf16 on a CPU '
                        'with bf16 instructions (AMX or AVX512-BF16), where it samples twice as fast with the same quality '
                        '(lesson 05), else fp32')
    p.add_argument('--seed', type=int_arg(0), default=0)
    p.add_argument('--out', default='samples.png', help='the grid, a .png (or another ending matplotlib writes; default: samples.png)')
    p.add_argument('--each', help='also write one PNG per image into this folder')
    a = p.parse_args(argv)
    with cli_warnings('minddpm_sample'):
        try:
            out = writable_file(a.out, image_suffixes())
            folder = writable_dir(a.each) if a.each else None
            m = load_model(a.checkpoint)
            labels = list(range(len(m.classes))) if not a.labels else a.labels
            bad = [l for l in labels if not 0 <= l < len(m.classes)]
            if bad: raise ValueError(f"labels {bad} are unknown to this model; it knows 0 … {len(m.classes) - 1} ({', '.join(m.classes)})")
            shape = m.shape if a.img_size is None else (m.shape[0], a.img_size, a.img_size)
            m.model.check_input(torch.zeros(1, *shape))
            y = torch.tensor(labels).repeat_interleave(a.n)
            x = sample(m.model, m.diffusion, y, shape=shape, sampler=a.sampler, steps=a.steps, spacing=a.spacing, w=a.guidance,
                       eta=a.eta, generator=torch.Generator().manual_seed(a.seed), precision=a.precision)
        except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as e: p.exit(2, f"minddpm_sample: error: {e}\n")
    import matplotlib.pyplot as plt
    show_images(x, y, m.classes, ncols=max(a.n, min(len(y), 10)))
    plt.savefig(out, dpi=80); plt.close('all')
    print(f"saved {len(y)} samples to {out}")
    if folder:
        from PIL import Image
        for i, (img, l) in enumerate(zip(to_uint8(x), y.tolist())):
            Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy()).save(folder/f'{i:04d}_{m.classes[l]}.png')
        print(f"saved one PNG per image to {folder}")


# %% [markdown]
# Each mistake below is refused in well under a second, before a model is loaded or a batch is drawn,
# with a message that names the argument, what it got and what it takes:

# %%
def refused(command, *args) -> str:
    "Run `command` in-process with `args`; return what it printed to stderr on exiting with status 2."
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try: command(list(args))
        except SystemExit as e: assert e.code == 2, e.code
        else: raise AssertionError(f"{args} was accepted")
    return err.getvalue().strip().splitlines()[-1]

shipped = str(resources.files('minddpm.assets')/'digits_tiny.pt')
blocker = Path(tempfile.mkdtemp())/'notes.txt'
blocker.write_text('a file, not a folder')
for command, args in [(minddpm_sample, [shipped, '--guidance', 'nan']), (minddpm_sample, [shipped, '--img-size', '-4']),
                      (minddpm_sample, [shipped, '--out', str(blocker.parent/'grid')]),
                      (minddpm_train, ['--lr', 'inf']), (minddpm_train, ['--out', str(blocker/'run')]),
                      (minddpm_train, ['--resume', shipped, '--preset', 'colab'])]:
    print(refused(command, *args).replace(str(blocker.parent), '…'))
