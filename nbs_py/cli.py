# %%
#| default_exp cli

# %% [markdown]
# # Commands
# > The seven commands, `minddpm_data`, `minddpm_train`, `minddpm_distill`, `minddpm_sample`, `minddpm_edit`, `minddpm_bench` and `minddpm_demo`: every number checked as it is parsed, every output path before any work

# %%
#| hide
from fastcore.test import *
import contextlib, io, tempfile
from importlib import resources
from IPython.display import Image as Picture
from PIL import Image
from minddpm.data import load_bundled, resize_uint8

# %% [markdown]
# Lesson 00 loads data, lesson 07 trains, lesson 05 samples, lesson 11 edits, lesson 09 measures and lesson 12
# serves; this page turns them into
# the commands that `pip install minddpm` puts on your path. Their arguments come from a terminal, where odd
# values are common and costly: `nan` parses as a float and would draw black images, `-4` parses as an int, a
# path can point into a file or at a folder, and a mistake found after an hour of training loses the hour.
# So every number is checked as it is parsed, refusing NaN, infinities and values out of range by name; every
# output path is made writable before any work; and every warning or error prints as one line that starts
# with the command. Those checks, and the readers of image files, are on the page *Command-line input*
# (`minddpm.args`); the options of each command, with their `--help`, on *Command-line options*
# (`minddpm.parsers`). This page is what each command does.

# %%
#| export
import argparse, contextlib, dataclasses, io, json, os, socket, sys
from pathlib import Path

import torch

from minddpm.args import (MASKS, USER_ERRORS, _drop_empty, _image_files, _label_index, _new_folders, _refuse, _save_pngs,
                          _upsample_factor, cli_warnings, image_suffixes, read_auth, read_image, read_mask, writable_dir,
                          writable_file)
from minddpm.data import get_datasets, pick_device, show_images
from minddpm.distributed import launched, leave
from minddpm.bench import _check_bench_args, format_table, run_bench
from minddpm.demo import demo_app
from minddpm.parsers import (EDIT_TASKS, _check_edit_options, _check_gamma, _check_sampler_options, _train_changes, distill_parser,
                             bench_parser, data_parser, demo_parser, edit_parser, sample_parser, train_parser)
from minddpm.training import TRAIN_PRESETS, Run, export_model, load_checkpoint, load_model, resume, set_steps, train
from minddpm.sampling import sample

# %% [markdown]
# ## Looking at a dataset
#
# `minddpm_data` loads a dataset exactly as training will, prints what
# it found (and, for an image folder, names every file it leaves out), and saves a labelled grid: a quick
# check of a new image folder before a long run.
#
# ```sh
# minddpm_data --dataset digits --size 16 --out digits.png
# minddpm_data --dataset ~/photos/landscapes --size 64
# ```

# %%
#| export
def minddpm_data(argv=None): # command-line arguments as a list of strings; None reads `sys.argv[1:]`
    "Load a dataset as training would, summarise it and save a labelled grid."
    p = data_parser(minddpm_data.__doc__)
    args = p.parse_args(argv)
    with cli_warnings('minddpm_data'):
        try:
            out = writable_file(args.out, image_suffixes())
            train, val = get_datasets(args.dataset, args.size, val_frac=args.val_frac, root=args.root)
        except USER_ERRORS as e: _refuse(p, e)
    x, y = train[0]
    print(f"{args.dataset}: {len(train):,} train / {len(val):,} validation images, {len(train.classes)} classes, "
          f"image {tuple(x.shape)} in [-1, 1]")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:args.n].tolist()
    show_images(torch.stack([train[i][0] for i in idx]), [train[i][1] for i in idx], train.classes)
    import matplotlib.pyplot as plt
    plt.savefig(out, dpi=80)
    plt.close('all')
    print(f"saved a grid of {len(idx)} training images to {out}")

# %%
work = Path(tempfile.mkdtemp())
minddpm_data(['--size', '16', '--n', '16', '--out', str(work/'digits.png')])
Picture(filename=work/'digits.png')

# %% [markdown]
# ## Training and sampling
#
# `minddpm_train` starts a run from a preset, or resumes a checkpoint. Resuming applies what it can
# (`--steps`, `--epochs`, `--lr`, `--minutes`, `--out`, `--device`, `--precision`, …; the learning-rate
# schedule carries on at the new peak) and refuses what would make it another run (`--dataset`,
# `--img-size`, `--batch-size`, `--seed`, `--val-frac`, `--hflip`). A run that its time budget cut short
# says so, and says how to carry on. Its options are in `train_parser` (page *Command-line options*); under
# `torchrun` (lesson 10) every process runs the same command, and rank 0 alone makes folders and speaks.

# %%
#| hide
#| export
def _new_config(a: argparse.Namespace, changes: dict):
    "The config of a new run: the preset's with `changes`; a bad preset, --snr-gamma or device is refused before any folder is made."
    preset = a.preset or 'tiny'
    if preset not in TRAIN_PRESETS: raise ValueError(f"Unknown preset {preset!r}; use one of {', '.join(TRAIN_PRESETS)}")
    objective = changes.get('objective', TRAIN_PRESETS[preset].objective)
    if a.t_sampling is not None and objective != 'flow':
        raise ValueError(f"--t-sampling does nothing with objective {objective!r}: it draws a flow run's t; leave it out, or add --objective flow")
    cfg = dataclasses.replace(TRAIN_PRESETS[preset], **changes)
    _check_gamma(a, cfg)
    pick_device(cfg.device)
    out = Path(cfg.out)
    if (out/'checkpoint.pt').exists():
        raise ValueError(f"{cfg.out} already holds a run: continue it with --resume {out/'checkpoint.pt'}, or give another --out")
    return cfg

def _export_target(path) -> Path:
    "The file `--export` may write: writable, and not a training checkpoint, which the smaller export would replace."
    path = writable_file(path)
    if path.is_file():
        try: load_checkpoint(path)
        except (ValueError, FileNotFoundError): return path   # an earlier export, or not ours: replaced as asked
        raise ValueError(f"--export {path} is a training checkpoint; exporting over it would lose the run: give another file")
    return path

# %%
#| export
def minddpm_train(argv=None): # command-line arguments as a list of strings; None: `sys.argv[1:]`
    "Train a conditional DDPM from a preset, or resume a checkpoint."
    p = train_parser(minddpm_train.__doc__)
    rank = int(os.environ.get('RANK', 0)) if launched() else 0
    with contextlib.redirect_stderr(io.StringIO()) if rank else contextlib.nullcontext():
        a = p.parse_args(argv)   # under torchrun every rank parses alike, and rank 0 alone says what is wrong
    if a.resume and a.preset: p.error("--preset cannot be used with --resume: the checkpoint holds its config")
    changes = _train_changes(a)
    made = _new_folders(Path(a.export).parent) if a.export and rank == 0 else []   # folders it makes, removed again if refused
    with cli_warnings('minddpm_train'):
        try:
            if a.export: _export_target(a.export)                  # paths first: a bad one must not cost a run
            if a.resume: run = resume(a.resume, **changes); _check_gamma(a, run.cfg)
            else:
                cfg = _new_config(a, changes)
                if rank == 0: made += _new_folders(cfg.out); writable_dir(cfg.out)
                run = Run(cfg)
            if a.epochs: set_steps(run, a.epochs * len(run.train_dl))
            finished = run.step >= run.cfg.steps                    # a finished run, resumed only to be exported
            if finished:
                if not a.export: raise ValueError(f"{a.resume} is already at its last step, {run.step}: nothing to train; "
                                                  f"pass --steps (more than {run.step}) or --epochs to train it further")
            else: run = train(run=run)
            if a.export and run.place.main: print(f"exported the model to {export_model(run, a.export)}")
        except USER_ERRORS as e: _drop_empty(made); _refuse(p, e, rank)
        finally: leave()
    if not run.place.main: return
    if run.step < run.cfg.steps:
        print(f"the time budget ran out at step {run.step} of {run.cfg.steps}, before the learning rate had annealed; "
              f"carry on with: minddpm_train --resume {run.checkpoint[0]}")
    print(f"{'the run had already finished, at' if finished else 'trained to'} step {run.step}; checkpoint: {run.checkpoint[0]}")

# %% [markdown]
# `minddpm_distill` (lesson 14) distils a model that predicts v or x0 into a student that samples in `--calls`
# network calls, guidance folded in, one round of training per halving: a run directory per round under `--out`,
# each resumable, so the same command carries on after an interruption or a spent `--minutes` budget.

# %%
#| export
def minddpm_distill(argv=None): # command-line arguments as a list of strings; None: `sys.argv[1:]`
    "Distil a trained model into a student that samples in a few network calls, guidance folded in (lesson 14)."
    from minddpm.distill import distill
    p = distill_parser(minddpm_distill.__doc__)
    a = p.parse_args(argv)
    made = _new_folders(a.out, Path(a.export).parent if a.export else None)   # removed again if it is refused
    changes = {k: v for k in ('batch_size', 'device', 'precision') if (v := getattr(a, k)) is not None}
    with cli_warnings('minddpm_distill'):
        try:
            if a.export: _export_target(a.export)          # paths first: a bad one must not cost the rounds
            writable_dir(a.out)
            if a.device: pick_device(a.device)
            last = distill(a.teacher, a.calls, a.start, a.guidance, a.steps, a.lr, a.out, a.minutes, **changes)
            m = load_model(last)
            if a.export and m.diffusion.calls == a.calls: print(f"exported the student to {export_model(last, a.export)}")
        except USER_ERRORS as e: _drop_empty(made); _refuse(p, e)
    if m.diffusion.calls != a.calls:
        print(f"the time budget ran out with a student of {m.diffusion.calls} calls ({last}); carry on with the same command")
    else: print(f"distilled to {a.calls} call{'s' * (a.calls != 1)} at w = {m.diffusion.guidance:g}: {last}; sample it with minddpm_sample {last}")

# %% [markdown]
# `minddpm_sample` draws a labelled grid from a checkpoint's EMA weights, or from a model file that
# `--export` wrote. An option the chosen sampler would not use is refused rather than ignored.

# %%
#| export
def minddpm_sample(argv=None): # command-line arguments as a list of strings; None: `sys.argv[1:]`
    "Draw a labelled grid of samples from a checkpoint's EMA weights, or from the shipped digits model."
    p = sample_parser(minddpm_sample.__doc__)
    a = p.parse_args(argv)
    _check_sampler_options(p, a)
    made = _new_folders(Path(a.out).parent, a.each)
    with cli_warnings('minddpm_sample'):
        try:
            out = writable_file(a.out, image_suffixes())
            folder = writable_dir(a.each) if a.each else None
            m = load_model(a.checkpoint)
            if m.diffusion.objective == 'flow' and a.eta is not None:
                raise ValueError(f"--eta does nothing with a flow model ({a.checkpoint}, lesson 13): its samplers, euler and heun, "
                                 "add no noise; leave it out")
            labels = [_label_index(l, m.classes, '--labels') for l in a.labels] if a.labels else list(range(len(m.classes)))
            shape = m.shape if a.img_size is None else (m.shape[0], a.img_size, a.img_size)
            m.model.check_input(torch.zeros(1, *shape))
            y = torch.tensor(labels).repeat_interleave(a.n)
            x = sample(m.model, m.diffusion, y, shape=shape, sampler=a.sampler, steps=a.steps, spacing=a.spacing,
                       w=a.guidance, eta=a.eta, generator=torch.Generator().manual_seed(a.seed),
                       precision=a.precision)
        except USER_ERRORS as e: _drop_empty(made); _refuse(p, e)
    import matplotlib.pyplot as plt
    show_images(x, y, m.classes, ncols=max(a.n, min(len(y), 10)))
    plt.savefig(out, dpi=80); plt.close('all')
    student = f" (a student: {m.diffusion.calls} calls, w = {m.diffusion.guidance:g})" if getattr(m.diffusion, 'calls', None) else ''
    print(f"saved {len(y)} sample{'s' if len(y) > 1 else ''} to {out}{student}")
    if folder: _save_pngs(folder, x, [m.classes[l] for l in y.tolist()])

# %% [markdown]
# The model shipped with the package draws two of each digit in ten network calls:

# %%
shipped = str(resources.files('minddpm.assets')/'digits_tiny.pt')
minddpm_sample([shipped, '--n', '2', '--sampler', 'dpm++', '--steps', '10', '--out', str(work/'samples.png')])
Picture(filename=work/'samples.png')

# %% [markdown]
# ## Editing images
#
# `minddpm_edit` runs the four edits of lesson 11 on image files, or on every image in a folder (hidden and
# system files skipped): it reads them at the model's size and channel count, refusing any other with the
# size or mode it found, and writes a grid of each input, what the edit starts from (the noisy image, the
# image with its hole in grey, the low-resolution image) and the result. Options another task would use are
# refused rather than ignored. It reads each file with `read_image` (page *Command-line input*), as training
# does and never resized behind your back, and `--mask` with `read_mask`: a half or the centre square by name,
# or a black-and-white image.

# %%
#| hide
#| export
def _edit_grid(a: argparse.Namespace, files: list, before, result, classes: list, label, factor: int, out: Path):
    "Save the grid of each input's `before` (what the edit starts from) beside its `result`, titled with the edit."
    import matplotlib.pyplot as plt
    H, W = result.shape[-2:]
    done = {'denoise': 'denoised', 'img2img': 'edited', 'inpaint': 'inpainted', 'upsample': f'{W}×{H}'}[a.task]
    names = [n for f in files for n in (f.stem[:14], done)]   # each input titled with its file name, each result with the task
    what = {'denoise': lambda: f'denoised, σ = {a.sigma:g}', 'img2img': lambda: f'SDEdit, strength {a.strength or 0.6:g}',
            'inpaint': lambda: f'{a.mask} filled', 'upsample': lambda: f'upsampled ×{factor} (ILVR)'}[a.task]()
    if label is not None: what += f', class {classes[label]}'
    show_images(torch.stack([before, result], 1).flatten(0, 1), torch.arange(len(names)), names, ncols=2 * min(len(files), 4), title=what)
    plt.savefig(out, dpi=80); plt.close('all')

# %%
#| export
def minddpm_edit(argv=None): # command-line arguments as a list of strings; None: `sys.argv[1:]`
    "Denoise, edit (SDEdit), inpaint or upsample images with a trained model (lesson 11)."
    p = edit_parser(minddpm_edit.__doc__)
    a = p.parse_args(argv)
    _check_edit_options(p, a)
    from minddpm.editing import denoise, img2img, inpaint, upsample
    made = _new_folders(Path(a.out).parent, a.each)
    with cli_warnings('minddpm_edit'):
        try:
            out = writable_file(a.out, image_suffixes())
            folder = writable_dir(a.each) if a.each else None
            files = _image_files(a.images)
            m = load_model(a.checkpoint)
            (C, H, W), T = m.shape, m.diffusion.T
            label = None if a.label is None else _label_index(a.label, m.classes)
            if a.task == 'img2img' and round((a.strength or 0.6) * T) < 1:
                raise ValueError(f"--strength {a.strength:g} is less than one step of this model's T={T}, and would leave "
                                 f"the images as they are: give at least {1 / T:g}")
            factor, why = _upsample_factor(files[0], m.shape) if a.task == 'upsample' else (1, '')
            x = torch.stack([read_image(f, C, (H // factor, W // factor), why) for f in files])
            gen = torch.Generator().manual_seed(a.seed)
            kw = dict(labels=None if label is None else torch.full((len(files),), label), steps=a.steps, generator=gen,
                      w=a.guidance if a.guidance is not None else (1.0 if a.task == 'denoise' else 3.0),
                      eta=a.eta if a.eta is not None else (0.0 if a.task == 'denoise' else 1.0), precision=a.precision)
            if a.task == 'denoise':                      # each task: where it starts, drawn beside the result
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
        except USER_ERRORS as e: _drop_empty(made); _refuse(p, e)
    _edit_grid(a, files, start.clamp(-1, 1), result, m.classes, label, factor, out)
    print(f"edited {len(files)} image{'s' if len(files) > 1 else ''} ({a.task}); grid: {out}")
    if folder: _save_pngs(folder, result, [f'{f.stem}_{a.task}' for f in files])

# %% [markdown]
# Four digits written out as PNG files, their bottom halves hidden and drawn again by the shipped model
# (RePaint with two passes over each stretch of 10 steps):

# %%
digits, pngs = load_bundled(), work/'pngs'
pngs.mkdir()
for i in range(4): Image.fromarray(resize_uint8(digits['images'][i:i+1], 16)[0, 0].numpy()).save(pngs/f'digit_{i}.png')
minddpm_edit([shipped, str(pngs), '--task', 'inpaint', '--mask', 'bottom', '--steps', '10', '--resample', '2',
              '--out', str(work/'edited.png')])
Picture(filename=work/'edited.png')

# %% [markdown]
# ## Measuring speed and serving a model
#
# `minddpm_bench` runs lesson 09's measurements, minddpm against the original recipe on this machine, prints
# the table and writes the results as JSON; `minddpm_demo` serves a trained model as lesson 12's Gradio demo
# and HTTP API. Both check their arguments before any work: the bench its sizes and device, the demo its model
# and whether the port can be served on, so that a taken port is said in the command's terms, not as a
# traceback from inside the web server.
#
# ```sh
# minddpm_bench --size 32 --json bench.json
# minddpm_demo runs/digits/checkpoint.pt --port 7861
# ```
#
# The page `minddpm_demo` serves, as `tests/test_demo.py` finds it in a real browser (its screenshot):
#
# ![minddpm_demo's page: the class, image count, guidance, sampler, steps and seed on the left; the samples and the trajectory of the first one on the right](images/demo.png)

# %%
#| export
def minddpm_bench(argv=None):  # command-line arguments as a list of strings; None: `sys.argv[1:]`
    "Measure minddpm against the original recipe, print the table and write the results as JSON."
    p = bench_parser(minddpm_bench.__doc__)
    a = p.parse_args(argv)
    try: _check_bench_args(a.size, a.batch, a.steps)
    except ValueError as e: p.error(f'--{e}')   # "--size must be a multiple of 8 …"
    try: out = writable_file(a.json)    # before minutes of measuring, not after
    except ValueError as e: p.error(f'--json: {e}')
    try: device = pick_device(a.device); torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as e: p.error(f"--device {a.device} is not usable here: {e}")
    on_off = {'auto': None, 'on': True, 'off': False}
    res = run_bench(a.size, a.batch, device, a.precision, 'auto' if a.compile == 'auto' else on_off[a.compile], a.full,
                    on_off[a.largest_batch], a.steps, log=lambda m: print(m, file=sys.stderr, flush=True))
    out.write_text(json.dumps(res, indent=1))
    print(format_table(res))
    print(f"\n{res['seconds'] / 60:.1f} min; results in {a.json}")

# %%
#| export
def minddpm_demo(argv=None): # command-line arguments as a list of strings; None: `sys.argv[1:]`
    "Serve a trained model as a Gradio demo and HTTP API until stopped."
    p = demo_parser(minddpm_demo.__doc__)
    a = p.parse_args(argv)
    try: auth = read_auth(a.auth_file) if a.auth_file else None
    except ValueError as e: p.error(f'--auth-file: {e}')
    try: app = demo_app(a.checkpoint, a.max_rows, a.precision, not a.no_batching)
    except (ImportError, ValueError, FileNotFoundError, RuntimeError) as e: p.exit(2, f"minddpm_demo: error: {e}\n")
    if not auth and (a.share or a.host not in ('127.0.0.1', 'localhost', '::1')):
        print(f"minddpm_demo: warning: {'the public --share link' if a.share else a.host} serves the model to anyone who "
              f"reaches it, with no login; --auth-file FILE (user:password lines) asks for one", file=sys.stderr)
    try:   # a taken port or an unknown host, said here in the command's terms before Gradio tries
        family, kind, _, _, address = socket.getaddrinfo(a.host, a.port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the server will
            s.bind(address)
    except OSError as e:
        app.batcher.close()
        p.exit(2, f"minddpm_demo: error: cannot serve on {a.host}:{a.port} ({e.strerror or e}): give another --port, "
                  f"or a --host this machine has\n")
    try:   # Gradio's own lines speak of launch(); these speak of the command's options
        _, local, public = app.launch(server_name=a.host, server_port=a.port, share=a.share, auth=auth, quiet=True,
                                      prevent_thread_lock=True)
        if a.share and not public:
            print("minddpm_demo: warning: Gradio could not make a --share link (no route to its servers?)", file=sys.stderr)
        where = (f" and {public}" if public else '' if a.share else
                 " (this machine only; --share for a public link)" if a.host in ('127.0.0.1', 'localhost', '::1') else
                 " and on every address of this machine" if a.host in ('0.0.0.0', '::') else f" and on {a.host}")
        print(f"minddpm_demo: serving at {local}{where}; Ctrl+C stops it", flush=True)
        app.block_thread()
    finally: app.batcher.close()

# %% [markdown]
# Whatever the command, each mistake below is refused in well under a second, before a model is loaded or
# an image is drawn, with a message that names the argument, what it got and what it takes:

# %%
#| hide
def refused(command, *args) -> str:
    "Run `command` in-process with `args`; return what it printed to stderr on exiting with status 2."
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try: command(list(args))
        except SystemExit as e: assert e.code == 2, e.code
        else: raise AssertionError(f"{args} was accepted")
    return err.getvalue().strip().splitlines()[-1]

blocker = Path(tempfile.mkdtemp())/'notes.txt'
blocker.write_text('a file, not a folder')

# %%
for command, args in [(minddpm_sample, [shipped, '--guidance', 'nan']), (minddpm_sample, [shipped, '--img-size', '-4']),
                      (minddpm_sample, [shipped, '--out', str(blocker.parent/'grid')]),
                      (minddpm_sample, [shipped, '--sampler', 'dpm++', '--eta', '0']), (minddpm_train, ['--weighting', 'uniform', '--snr-gamma', '3']),
                      (minddpm_edit, [shipped, str(blocker.parent), '--task', 'img2img', '--strength', '0']),
                      (minddpm_edit, [shipped, str(blocker.parent), '--task', 'upsample', '--mask', 'left']),
                      (minddpm_train, ['--lr', 'inf']), (minddpm_train, ['--out', str(blocker/'run')]),
                      (minddpm_train, ['--resume', shipped, '--preset', 'colab']), (minddpm_data, ['--dataset', 'cifar100']),
                      (minddpm_bench, ['--size', '12']), (minddpm_bench, ['--json', str(blocker/'bench.json')]),
                      (minddpm_distill, ['--calls', '3']), (minddpm_demo, [shipped, '--port', '80000'])]:
    print(refused(command, *args).replace(str(blocker.parent), '…'))
