# %%
#| default_exp cli

# %% [markdown]
# # Commands
# > `minddpm_train`, `minddpm_sample` and `minddpm_edit`: every number checked as it is parsed, every output path before any work

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

import numpy as np
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
                                                           "(default: the preset's: min_snr for tiny, uniform for colab and full)")
    p.add_argument('--snr-gamma', type=float_arg(0, open_low=True), help="min-SNR's γ, with --weighting min_snr only (default: 5)")
    p.add_argument('--val-frac', type=float_arg(0, 1, open_low=True, open_high=True),
                   help='share of the digits or an image folder held out for validation (default: 0.1; at least one image)')
    p.add_argument('--out', help='run directory (default: runs/minddpm)')
    p.add_argument('--resume', help='checkpoint to continue from')
    p.add_argument('--wandb', action='store_true', help='log to Weights & Biases (offline without credentials)')
    p.add_argument('--compile', action='store_true', help='train through torch.compile')
    p.add_argument('--device', help='auto, cuda, cuda:N, mps or cpu; under torchrun auto, cuda (the GPU of each local rank) or cpu')
    p.add_argument('--precision', choices=('auto', 'bf16', 'fp16', 'fp32'),
                   help='autocast precision; auto: bf16 or fp16 on CUDA, fp32 elsewhere (bf16 also pays on CPUs with AMX: see minddpm_bench)')
    p.add_argument('--seed', type=int_arg(0, 2**31 - 1), help='seeds the split, the data order, the noise and the initial weights (default: 0)')
    p.add_argument('--export', help='also write the model alone to this file at the end: EMA and raw weights in half precision, or, for a '
                        'path ending in .pt2 or .onnx, the EMA network as a float32 graph (torch.export or ONNX)')
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
    def gamma_used(cfg):
        if a.snr_gamma is not None and cfg.weighting != 'min_snr':
            raise ValueError(f"--snr-gamma does nothing with {cfg.weighting} weighting: it is min-SNR's γ; "
                             f"leave it out, or {'start a run with' if a.resume else 'add'} --weighting min_snr")
    with cli_warnings('minddpm_train'):
        try:
            if a.export: _export_target(a.export)                  # paths first: a bad one must not cost a run
            if a.resume: run = resume(a.resume, **changes); gamma_used(run.cfg)
            else:
                preset = a.preset or 'tiny'
                if preset not in TRAIN_PRESETS: raise ValueError(f"Unknown preset {preset!r}; use one of {', '.join(TRAIN_PRESETS)}")
                cfg = dataclasses.replace(TRAIN_PRESETS[preset], **changes)
                gamma_used(cfg)
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
                   help='ddim (default), dpm++ (DPM-Solver++(2M): the deterministic path of a v-prediction model such as '
                        'the shipped one in 10 to 20 steps, where ddim with --eta 0 needs 50; ddim with --eta 1 scores better '
                        'from 10 steps on that model, see lesson 08) or ddpm (all T steps)')
    p.add_argument('--steps', type=int_arg(1), help='network calls of ddim and dpm++ (default: 50)')
    p.add_argument('--spacing', choices=SPACINGS,
                   help='their timesteps: linspace (T-1 down to 0; ddim\'s default) or trailing (Lin et al. 2023; '
                        'dpm++\'s default, which draws clean digits from 5 steps where linspace does not)')
    p.add_argument('--guidance', type=float_arg(), default=3.0, help='w: 0 unconditional, 1 conditional (default: 3)')
    p.add_argument('--eta', type=float_arg(0, 1), help='ddim\'s noise, 0 (deterministic) to 1 (default: 1)')
    p.add_argument('--img-size', type=int_arg(1), help='image side (default: the training size)')
    p.add_argument('--precision', default='auto', choices=PRECISIONS,
                   help='the network\'s precision: fp32, bf16 (its weights cast once), or auto (the default): bf16 on a CPU '
                        'with bf16 instructions (AMX or AVX512-BF16), where it samples twice as fast with the same quality '
                        '(lesson 05), else fp32')
    p.add_argument('--seed', type=int_arg(0, 2**31 - 1), default=0, help='seeds the noise: the same seed and options give the same images (default: 0)')
    p.add_argument('--out', default='samples.png', help='the grid, a .png (or another ending matplotlib writes; default: samples.png)')
    p.add_argument('--each', help='also write one PNG per image into this folder')
    a = p.parse_args(argv)
    unused = {'ddpm': ('steps', 'spacing', 'eta'), 'dpm++': ('eta',), 'ddim': ()}[a.sampler]   # refused, not ignored
    given = ['--' + k for k in unused if getattr(a, k) is not None]
    if given: p.error(f"{' and '.join(given)} {'does' if len(given) == 1 else 'do'} nothing with --sampler {a.sampler}: " +
                      ("ddpm takes all T steps, each with its own noise" if a.sampler == 'ddpm' else "dpm++ is deterministic") +
                      f"; leave {'it' if len(given) == 1 else 'them'} out, or use --sampler ddim")
    made = _new_folders(Path(a.out).parent, a.each)
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
            x = sample(m.model, m.diffusion, y, shape=shape, sampler=a.sampler, steps=a.steps or 50, spacing=a.spacing,
                       w=a.guidance, eta=1.0 if a.eta is None else a.eta, generator=torch.Generator().manual_seed(a.seed),
                       precision=a.precision)
        except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as e:
            _drop_empty(made)
            p.exit(2, f"minddpm_sample: error: {e}\n")
    import matplotlib.pyplot as plt
    show_images(x, y, m.classes, ncols=max(a.n, min(len(y), 10)))
    plt.savefig(out, dpi=80); plt.close('all')
    print(f"saved {len(y)} sample{'s' if len(y) > 1 else ''} to {out}")
    if folder:
        from PIL import Image
        for i, (img, l) in enumerate(zip(to_uint8(x), y.tolist())):
            Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy()).save(folder/f'{i:04d}_{m.classes[l]}.png')
        print(f"saved one PNG per image to {folder}")


# %% [markdown]
# ## Editing images
#
# `minddpm_edit` runs the four edits of lesson 11 on image files, or on every image in a folder (hidden and
# system files skipped): it reads them at the model's size and channel count, refusing any other with the
# size or mode it found, and writes a grid of each input, what the edit starts from (the noisy image, the
# image with its hole in grey, the low-resolution image) and the result. Options another task would use are
# refused rather than ignored.

# %%
#| export
EDIT_TASKS = ('denoise', 'img2img', 'inpaint', 'upsample')
MASKS = ('left', 'right', 'top', 'bottom', 'centre')   # the part --mask fills ('center' is taken too)

def _named_mask(name: str, h: int, w: int) -> torch.Tensor:
    "(h, w) mask filling one half, or the centre half-size square: 1 keeps, 0 fills."
    m = torch.ones(h, w)
    part = {'left': (slice(None), slice(0, w // 2)), 'right': (slice(None), slice(w // 2, None)),
            'top': (slice(0, h // 2), slice(None)), 'bottom': (slice(h // 2, None), slice(None)),
            'centre': (slice(h // 4, h - h // 4), slice(w // 4, w - w // 4))}[name]
    m[part] = 0
    return m

def _new_folders(*paths) -> list[Path]:
    "For each folder path (None skipped), the outermost of it and its parents that does not exist yet: what writing there would make."
    tops = []
    for path in paths:
        if path is None: continue
        path, top = Path(path).absolute(), None
        while not path.exists(): top, path = path, path.parent
        if top: tops.append(top)
    return tops

def _drop_empty(tops: list[Path]):
    "Remove the folders under and at `tops` that are still empty, deepest first: a refused command leaves nothing behind."
    for top in tops:
        if not top.is_dir(): continue
        for d in sorted((d for d in top.rglob('*') if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
            if not any(d.iterdir()): d.rmdir()
        if not any(top.iterdir()): top.rmdir()

def _image_files(paths) -> list[Path]:
    "The files named, and the visible image files directly inside each folder named, sorted; a missing path raises."
    from minddpm.data import IMAGE_EXTENSIONS, is_hidden
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.is_file() and not is_hidden(f.name) and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found: raise ValueError(f"{path} holds no image files (by their endings: {', '.join(IMAGE_EXTENSIONS)})")
            files += found
        elif path.is_file(): files.append(path)
        else: raise FileNotFoundError(f"no such image file or folder: {path}")
    return files

def read_image(path,               # an image file in any mode Pillow opens
               channels: int,      # what the model takes: 1 (greyscale) or 3 (RGB)
               size: tuple | None, # (H, W) wanted, in pixels; None: any
               why: str = '',      # said after the size wanted when it does not match, e.g. where that size comes from
               ) -> torch.Tensor:  # (channels, H, W) floats in [-1, 1]
    """One image for a model, read as training reads it (`load_rgb`: any mode, to RGB). Raises `ValueError` naming its size
    if that is not `size` (no resizing behind your back), or if it is in colour and the model draws greyscale."""
    from minddpm.data import load_rgb, to_unit_range
    try: rgb = torch.from_numpy(np.array(load_rgb(path))).permute(2, 0, 1)
    except Exception as e: raise ValueError(f"{path} cannot be read as an image ({type(e).__name__}: {e})") from None
    if size is not None and tuple(rgb.shape[1:]) != tuple(size):
        raise ValueError(f"{path} is {rgb.shape[2]}×{rgb.shape[1]} pixels; this needs {size[1]}×{size[0]}{why}: resize it first")
    grey = bool((rgb == rgb[:1]).all())
    if channels == 1 and not grey:
        raise ValueError(f"{path} is in colour; this model draws greyscale images: convert it first (e.g. Pillow's .convert('L'))")
    return to_unit_range(rgb[:channels])   # a greyscale file for an RGB model: three equal channels, as in training

def read_mask(spec: str,      # one of `MASKS` (the part to fill), or a black-and-white image file: white keeps, black fills
              size: tuple,    # (H, W) of the images
              ) -> torch.Tensor:  # (H, W): 1 keeps a pixel, 0 fills it
    "The inpainting mask `--mask` names. Raises `ValueError` for a file of another size, or with pixels neither black nor white."
    if spec in MASKS + ('center',): return _named_mask(spec.replace('center', 'centre'), *size)
    path = Path(spec)
    if not path.is_file(): raise ValueError(f"--mask {spec}: neither a file nor one of {', '.join(MASKS)} (the part to fill)")
    from minddpm.data import load_rgb
    try: m = torch.from_numpy(np.array(load_rgb(path)))[..., 0]   # 16-bit and other modes scaled to 8 bits, as images are
    except Exception as e: raise ValueError(f"--mask {path} cannot be read as an image ({type(e).__name__}: {e})") from None
    if tuple(m.shape) != tuple(size): raise ValueError(f"--mask {path} is {m.shape[1]}×{m.shape[0]} pixels; the images are {size[1]}×{size[0]}")
    grey = ((m != 0) & (m != 255)).sum().item()
    if grey: raise ValueError(f"--mask {path} must be black (fill) and white (keep) only; {grey} of its pixels are grey")
    return (m == 255).float()

def minddpm_edit(argv=None): # command-line arguments as a list of strings; None: `sys.argv[1:]`
    "Entry point of `minddpm_edit`: denoise, edit (SDEdit), inpaint or upsample images with a trained model (lesson 11)."
    p = argparse.ArgumentParser(prog='minddpm_edit', description=minddpm_edit.__doc__)
    p.add_argument('checkpoint', help='a checkpoint from minddpm_train, or a model file from --export')
    p.add_argument('images', nargs='+', help="image files, or folders of them, at the model's size (upsample: a whole fraction of it)")
    p.add_argument('--task', required=True, choices=EDIT_TASKS,
                   help='denoise: remove Gaussian noise of level --sigma; img2img: redraw towards --label (SDEdit); '
                        'inpaint: fill the --mask; upsample: sample at the model\'s size keeping the images\' block means (ILVR)')
    p.add_argument('--label', help="class name or index to draw towards (img2img) or fill with (others); default: none, unconditional")
    p.add_argument('--guidance', type=float_arg(), help='w, with --label: 1 conditional, >1 guided (default: 3; denoise: 1)')
    p.add_argument('--sigma', type=float_arg(0, open_low=True), help='denoise: the noise level of the images, in [-1, 1] units (255 levels = 2)')
    p.add_argument('--add-noise', action='store_true', help='denoise: add noise of level --sigma to the images first, to try it on clean ones')
    p.add_argument('--strength', type=float_arg(0, 1, open_low=True), help='img2img: how far to noise, in (0, 1] (default: 0.6)')
    p.add_argument('--mask', help=f"inpaint: the part to fill, {', '.join(MASKS)}, or a black-and-white image, white kept, black filled")
    p.add_argument('--resample', type=int_arg(1, 100), help='inpaint: RePaint\'s passes over each stretch, 1 to 100; 1 is plain '
                                                           'replacement; each pass costs as many network calls again (default: 5)')
    p.add_argument('--jump', type=int_arg(1, 100), help='inpaint: RePaint\'s steps walked back each time, 1 to 100 (default: 5)')
    p.add_argument('--steps', type=int_arg(1, 1000), default=50, help='network calls of a full walk down, 1 to 1000 (default: 50)')
    p.add_argument('--eta', type=float_arg(0, 1), help='DDIM noise, 0 to 1 (default: 1; denoise: 0)')
    p.add_argument('--precision', default='auto', choices=PRECISIONS, help="the network's: fp32, bf16, or auto (as minddpm_sample)")
    p.add_argument('--seed', type=int_arg(0, 2**31 - 1), default=0, help='seeds every draw (default: 0)')
    p.add_argument('--out', default='edited.png', help='the before/after grid (default: edited.png)')
    p.add_argument('--each', help='also write each result as a PNG into this folder')
    a = p.parse_args(argv)
    own = dict(denoise=('sigma', 'add_noise'), img2img=('strength',), inpaint=('mask', 'resample', 'jump'), upsample=())
    wrong = [f"--{k.replace('_', '-')}" for task, keys in own.items() if task != a.task for k in keys if getattr(a, k) not in (None, False)]
    if wrong: p.error(f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} nothing with --task {a.task}")
    if a.task == 'denoise' and a.sigma is None: p.error("--task denoise needs --sigma, the noise level of the images")
    if a.task == 'inpaint' and a.mask is None: p.error(f"--task inpaint needs --mask: {', '.join(MASKS)}, or a black-and-white image")
    if a.guidance is not None and a.label is None: p.error("--guidance needs --label: it weighs the class against no class")
    from PIL import Image
    from minddpm.editing import denoise, img2img, inpaint, upsample
    made = _new_folders(Path(a.out).parent, a.each)
    with cli_warnings('minddpm_edit'):
        try:
            out = writable_file(a.out, image_suffixes())
            folder = writable_dir(a.each) if a.each else None
            files = _image_files(a.images)
            m = load_model(a.checkpoint)
            C, H, W = m.shape
            labels = None
            if a.label is not None:
                names = {n: i for i, n in enumerate(m.classes)}
                i = names.get(a.label)
                if i is None:
                    try: i = int(a.label)
                    except ValueError: pass
                if i is None or not 0 <= i < len(m.classes):
                    raise ValueError(f"--label {a.label} is unknown to this model; it knows {', '.join(m.classes)} (or 0 … {len(m.classes) - 1})")
                labels = torch.full((len(files),), i)
            if a.task == 'img2img' and round((a.strength or 0.6) * m.diffusion.T) < 1:
                raise ValueError(f"--strength {a.strength:g} is less than one step of this model's T={m.diffusion.T}, and would leave "
                                 f"the images as they are: give at least {1 / m.diffusion.T:g}")
            factor, why = 1, ''
            if a.task == 'upsample':                     # the first image sets the factor; the others must match it
                h0, w0 = read_image(files[0], C, None).shape[1:]
                factor = H // h0 if H % h0 == 0 and W == w0 * (H // h0) and H // h0 >= 2 else None
                if factor is None: raise ValueError(f"{files[0]} is {w0}×{h0} pixels; upsample needs a whole fraction of {W}×{H}, "
                                                    f"such as {W // 2}×{H // 2} or {W // 4}×{H // 4}")
                why = f" (the size of {files[0].name}, the first image: upsampled ×{factor} to the model's {W}×{H})"
            x = torch.stack([read_image(f, C, (H // factor, W // factor), why) for f in files])
            gen = torch.Generator().manual_seed(a.seed)
            eta = a.eta if a.eta is not None else (0.0 if a.task == 'denoise' else 1.0)
            kw = dict(labels=labels, w=a.guidance if a.guidance is not None else (1.0 if a.task == 'denoise' else 3.0),
                      steps=a.steps, eta=eta, generator=gen, precision=a.precision)
            if a.task == 'denoise':
                start = x + a.sigma * torch.randn(x.shape, generator=gen) if a.add_noise else x
                result = denoise(m.model, m.diffusion, start, a.sigma, **kw)
            elif a.task == 'img2img':
                start, result = x, img2img(m.model, m.diffusion, x, strength=a.strength or 0.6, **kw)
            elif a.task == 'inpaint':
                mask = read_mask(a.mask, (H, W))
                start = x * mask + (1 - mask) * -0.3     # the hole in grey
                result = inpaint(m.model, m.diffusion, x, mask, **{k: v for k in ('jump', 'resample') if (v := getattr(a, k))}, **kw)
            else:
                start = torch.nn.functional.interpolate(x, scale_factor=factor, mode='nearest')
                result = upsample(m.model, m.diffusion, x, factor, **kw)
        except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as e:
            _drop_empty(made)
            p.exit(2, f"minddpm_edit: error: {e}\n")
    import matplotlib.pyplot as plt
    cols = [start.clamp(-1, 1), result] if a.task != 'img2img' else [x, result]
    done = {'denoise': 'denoised', 'img2img': 'edited', 'inpaint': 'inpainted', 'upsample': f'{W}×{H}'}[a.task]
    names = [n for f in files for n in (f.stem[:14], done)]   # each input titled with its file name, each result with the task
    what = {'denoise': lambda: f'denoised, σ = {a.sigma:g}', 'img2img': lambda: f'SDEdit, strength {a.strength or 0.6:g}',
            'inpaint': lambda: f'{a.mask} filled', 'upsample': lambda: f'upsampled ×{factor} (ILVR)'}[a.task]()
    if a.label is not None: what += f', class {m.classes[int(labels[0])]}'
    show_images(torch.stack(cols, 1).flatten(0, 1), torch.arange(len(names)), names, ncols=2 * min(len(files), 4), title=what)
    plt.savefig(out, dpi=80); plt.close('all')
    print(f"edited {len(files)} image{'s' if len(files) > 1 else ''} ({a.task}); grid: {out}")
    if folder:
        for i, (f, img) in enumerate(zip(files, to_uint8(result))):   # numbered: two folders may hold the same name
            Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy()).save(folder/f'{i:04d}_{f.stem}_{a.task}.png')
        print(f"saved one PNG per image to {folder}")


# %% [markdown]
# Each mistake below is refused in well under a second, before a model is loaded or an image is drawn,
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
                      (minddpm_sample, [shipped, '--sampler', 'dpm++', '--eta', '0']), (minddpm_train, ['--weighting', 'uniform', '--snr-gamma', '3']),
                      (minddpm_edit, [shipped, str(blocker.parent), '--task', 'img2img', '--strength', '0']),
                      (minddpm_edit, [shipped, str(blocker.parent), '--task', 'upsample', '--mask', 'left']),
                      (minddpm_train, ['--lr', 'inf']), (minddpm_train, ['--out', str(blocker/'run')]),
                      (minddpm_train, ['--resume', shipped, '--preset', 'colab'])]:
    print(refused(command, *args).replace(str(blocker.parent), '…'))
