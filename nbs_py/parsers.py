# %%
#| default_exp parsers

# %% [markdown]
# # Command-line options
# > The options of each command, every number checked as it is parsed, and the checks between options

# %%
#| export
from __future__ import annotations
import argparse

from minddpm.args import MASKS, float_arg, int_arg
from minddpm.data import DATASETS
from minddpm.dit import NETWORKS
from minddpm.flow import T_SAMPLINGS
from minddpm.forward import WEIGHTINGS
from minddpm.run import DIT_DEFAULTS, FLOW_DEFAULTS, TRAIN_OBJECTIVES
from minddpm.sampling import FLOW_SAMPLERS, PRECISIONS, SAMPLERS, SPACINGS
from minddpm.training import TRAIN_PRESETS
from minddpm.demo import MAX_IMAGES

# %%
#| hide
from fastcore.test import *
import contextlib, io

# %% [markdown]
# Each command of minddpm declares its options in one function here, so that its `--help`, its checks and its
# defaults can be read in one place, and tested without running the command. Every number goes through
# `int_arg` or `float_arg` (page *Command-line input*), so `nan`, `inf`, `-4` and `2.5` are refused by name as
# they are parsed. The commands themselves are on the page *Commands*.

# %%
#| export
def data_parser(description: str = None, # what `--help` says first: the command's docstring
                ) -> argparse.ArgumentParser:
    "The options of `minddpm_data`, each number checked as it is parsed."
    p = argparse.ArgumentParser(prog='minddpm_data', description=description)
    p.add_argument('--dataset', default='digits',
                   help=f"one of {', '.join(DATASETS)}, or a folder with one sub-folder of images per class (default: digits)")
    p.add_argument('--size', type=int_arg(1), default=32, help='image side in pixels (default: 32)')
    p.add_argument('--n', type=int_arg(1), default=32, help='images in the grid (default: 32)')
    p.add_argument('--val-frac', type=float_arg(0, 1, open_low=True, open_high=True), default=0.1,
                   help='share of an image folder held out for validation (default: 0.1; at least one image)')
    p.add_argument('--root', default=None, help='download folder for torchvision sets (default: $MINDDPM_DATA or ./data)')
    p.add_argument('--out', default='minddpm_data.png', help='where to save the grid, a .png (default: minddpm_data.png)')
    return p


# %%
data_parser('Load a dataset as training would, summarise it and save a labelled grid.').print_help()

# %% [markdown]
# `minddpm_train` starts a run from a preset or resumes a checkpoint; the options it is given replace the
# preset's values (`_train_changes`), and `--snr-gamma` is refused under a weighting that would ignore it.

# %%
#| export
def train_parser(description: str = None, # what `--help` says first: the command's docstring
                 ) -> argparse.ArgumentParser:
    "The options of `minddpm_train`, each number checked as it is parsed."
    p = argparse.ArgumentParser(prog='minddpm_train', description=description)
    p.add_argument('--dataset', help="digits (default), cifar10, mnist, fashion_mnist, or a folder of class sub-folders")
    p.add_argument('--preset', help=f"one of {', '.join(TRAIN_PRESETS)} (default: tiny)")
    p.add_argument('--img-size', type=int_arg(1), help='image side in pixels')
    p.add_argument('--unet', choices=NETWORKS, help="the network: a UNet (tiny, seed; lesson 03) or a transformer (dit-tiny, "
                                                    "dit-colab; lesson 15) (default: the preset's: tiny for tiny and flow, seed for colab and full, dit-tiny for dit); "
                                                    f"dit-tiny takes --lr {DIT_DEFAULTS['lr']:g} unless given (lesson 15 measured it)")
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
    p.add_argument('--objective', choices=TRAIN_OBJECTIVES, help="what the network predicts: the noise ε (eps), v, or the clean image x0 "
                                                           "(default: the preset's: v for tiny, eps for colab and full, flow for flow); or flow: "
                                                           "flow matching's velocity ε − x0 on the straight path (lesson 13), with "
                                                           "--t-sampling logit_normal and --weighting uniform unless given")
    p.add_argument('--t-sampling', choices=T_SAMPLINGS, help="how a flow run draws t in [0, 1]: uniform, or logit_normal (SD3's; "
                                                             "the default of --objective flow and of --preset flow); flow runs only")
    p.add_argument('--weighting', choices=WEIGHTINGS, help="loss weighting over timesteps: uniform, or min_snr (min-SNR-γ) "
                                                           "(default: the preset's: min_snr for tiny, uniform for colab, full and flow)")
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
    return p


# %%
#| hide
#| export
def _train_changes(a: argparse.Namespace) -> dict:
    "The config fields the command line sets; `minutes` always, since a time budget belongs to one command."
    changes = {k: v for k, v in dict(dataset=a.dataset, img_size=a.img_size, unet=a.unet, steps=a.steps, batch_size=a.batch_size,
                                     grad_accum=a.grad_accum, lr=a.lr, objective=a.objective, t_sampling=a.t_sampling, weighting=a.weighting,
                                     snr_gamma=a.snr_gamma, val_frac=a.val_frac, out=a.out, device=a.device,
                                     precision=a.precision, seed=a.seed, hflip=a.hflip).items() if v is not None}
    if a.objective == 'flow' and not a.resume: changes = {**FLOW_DEFAULTS, **changes}   # flow's measured recipe where the line is silent
    if a.unet == 'dit-tiny' and not a.resume: changes = {**DIT_DEFAULTS, **changes}    # and the DiT's
    elif a.objective and not a.resume: changes.setdefault('t_sampling', 'uniform')       # a diffusion run, even from the flow preset
    return {**changes, **{k: True for k in ('wandb', 'compile') if getattr(a, k)}, 'minutes': a.minutes}

def _check_gamma(a: argparse.Namespace, cfg):
    "Refuse `--snr-gamma` where it would do nothing: under any weighting but min-SNR."
    if a.snr_gamma is not None and cfg.weighting != 'min_snr':
        raise ValueError(f"--snr-gamma does nothing with {cfg.weighting} weighting: it is min-SNR's γ; "
                         f"leave it out, or {'start a run with' if a.resume else 'add'} --weighting min_snr")


# %%
print(train_parser().format_usage())

# %% [markdown]
# `minddpm_sample` and `minddpm_edit` refuse, rather than ignore, an option that the chosen sampler or task
# would not use, and `minddpm_edit` a task without the option it needs:

# %%
#| export
def sample_parser(description: str = None, # what `--help` says first: the command's docstring
                  ) -> argparse.ArgumentParser:
    "The options of `minddpm_sample`, each number checked as it is parsed."
    p = argparse.ArgumentParser(prog='minddpm_sample', description=description)
    p.add_argument('checkpoint', nargs='?', help='a checkpoint from minddpm_train, or a model file from --export '
                                                 '(default: the shipped tiny digits model)')
    p.add_argument('--labels', nargs='*', help='classes to draw, by name or index (default: all)')
    p.add_argument('--n', type=int_arg(1), default=1, help='images per label (default: 1)')
    p.add_argument('--sampler', choices=SAMPLERS + FLOW_SAMPLERS,
                   help='ddim (the default), dpm++ (DPM-Solver++(2M): the deterministic path of a v-prediction model such as '
                        'the shipped one in 10 to 20 steps, where ddim with --eta 0 needs 50; ddim with --eta 1 scores better '
                        'from 10 steps on that model, see lesson 08) or ddpm (all T steps); a flow model (--objective flow): '
                        'euler (its default) or heun (two calls a step, lesson 13)')
    p.add_argument('--steps', type=int_arg(1), help="network calls of ddim, dpm++ and euler; heun takes 2 × steps − 1 (default: 50; a distilled student's calls)")
    p.add_argument('--spacing', choices=SPACINGS,
                   help='their timesteps: linspace (T-1 down to 0; ddim\'s default) or trailing (Lin et al. 2023; '
                        'dpm++\'s default, which draws clean digits from 5 steps where linspace does not)')
    p.add_argument('--guidance', type=float_arg(0), help="w: 0 unconditional, 1 conditional, above 1 guided (default: 3; a distilled "
                                                         "student's own, folded into it: lesson 14)")
    p.add_argument('--eta', type=float_arg(0, 1), help='ddim\'s noise, 0 (deterministic) to 1 (default: 1; a distilled student\'s 0)')
    p.add_argument('--img-size', type=int_arg(1), help='image side (default: the training size)')
    p.add_argument('--precision', default='auto', choices=PRECISIONS,
                   help='the network\'s precision: fp32, bf16 (its weights cast once), or auto (the default): bf16 on a CPU '
                        'with bf16 instructions (AMX or AVX512-BF16), where it samples twice as fast with the same quality '
                        '(lesson 05), else fp32')
    p.add_argument('--seed', type=int_arg(0, 2**31 - 1), default=0, help='seeds the noise: the same seed and options give the same images (default: 0)')
    p.add_argument('--out', default='samples.png', help='the grid, a .png (or another ending matplotlib writes; default: samples.png)')
    p.add_argument('--each', help='also write one PNG per image into this folder')
    return p


# %%
#| hide
#| export
def _check_sampler_options(p: argparse.ArgumentParser, a: argparse.Namespace):
    "Refuse, rather than ignore, the options the chosen sampler does not use."
    unused = {'ddpm': ('steps', 'spacing', 'eta'), 'dpm++': ('eta',), 'euler': ('spacing', 'eta'), 'heun': ('spacing', 'eta')
              }.get(a.sampler, ())
    given = ['--' + k for k in unused if getattr(a, k) is not None]
    why = {'ddpm': "ddpm takes all T steps, each with its own noise", 'dpm++': "dpm++ is deterministic"}.get(
        a.sampler, f"{a.sampler} steps a flow model evenly in t from 1 to 0, deterministically")
    if given: p.error(f"{' and '.join(given)} {'does' if len(given) == 1 else 'do'} nothing with --sampler {a.sampler}: {why}"
                      f"; leave {'it' if len(given) == 1 else 'them'} out" + (", or use --sampler ddim" if a.sampler in SAMPLERS else ''))

# %%
#| export
EDIT_TASKS = ('denoise', 'img2img', 'inpaint', 'upsample')

def edit_parser(description: str = None, # what `--help` says first: the command's docstring
                ) -> argparse.ArgumentParser:
    "The options of `minddpm_edit`, each number checked as it is parsed."
    p = argparse.ArgumentParser(prog='minddpm_edit', description=description)
    p.add_argument('checkpoint', help='a checkpoint from minddpm_train, or a model file from --export')
    p.add_argument('images', nargs='+', help="image files, or folders of them, at the model's size (upsample: a whole fraction of it)")
    p.add_argument('--task', required=True, choices=EDIT_TASKS,
                   help='denoise: remove Gaussian noise of level --sigma; img2img: redraw towards --label (SDEdit); '
                        'inpaint: fill the --mask; upsample: sample at the model\'s size keeping the images\' block means (ILVR)')
    p.add_argument('--label', help="class name or index to draw towards (img2img) or fill with (others); default: none, unconditional")
    p.add_argument('--guidance', type=float_arg(0), help='w, with --label: 1 conditional, >1 guided (default: 3; denoise: 1)')
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
    return p


# %%
#| hide
#| export
def _check_edit_options(p: argparse.ArgumentParser, a: argparse.Namespace):
    "Refuse the options of another task, and a task without the option it needs."
    own = dict(denoise=('sigma', 'add_noise'), img2img=('strength',), inpaint=('mask', 'resample', 'jump'), upsample=())
    wrong = [f"--{k.replace('_', '-')}" for task, keys in own.items() if task != a.task for k in keys if getattr(a, k) not in (None, False)]
    if wrong: p.error(f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} nothing with --task {a.task}")
    if a.task == 'denoise' and a.sigma is None: p.error("--task denoise needs --sigma, the noise level of the images")
    if a.task == 'inpaint' and a.mask is None: p.error(f"--task inpaint needs --mask: {', '.join(MASKS)}, or a black-and-white image")
    if a.guidance is not None and a.label is None: p.error("--guidance needs --label: it weighs the class against no class")


# %% [markdown]
# `minddpm_bench` times minddpm against the original recipe (lesson 09); its sizes are checked together by
# `_check_bench_args` of that lesson, since a size must also be a multiple of 8. `minddpm_demo` serves a model
# (lesson 12): a port is a number from 1 to 65535, and a batch of requests must hold the largest request.

# %%
#| export
def bench_parser(description: str = None, # what `--help` says first: the command's docstring
                 ) -> argparse.ArgumentParser:
    "The options of `minddpm_bench`."
    p = argparse.ArgumentParser(prog='minddpm_bench', description=description)
    p.add_argument('--size', type=int_arg(8), default=32, help="image size, a multiple of 8 (default 32)")
    p.add_argument('--batch', type=int_arg(1), default=16, help="images per training step and per sampling batch (default 16)")
    p.add_argument('--device', default='auto', help="auto (cuda, then mps, then cpu), cpu, cuda, …")
    p.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'bf16', 'fp16'),
                   help="minddpm's autocast precision; auto: what the device does best (bf16 on a CPU only with AMX or AVX512-BF16)")
    p.add_argument('--compile', default='auto', choices=('auto', 'on', 'off'), help="torch.compile minddpm; auto: on for CUDA only")
    p.add_argument('--full', action='store_true', help="run the 999- and 1000-step samplers to the end instead of estimating them")
    p.add_argument('--largest-batch', default='auto', choices=('auto', 'on', 'off'),
                   help="find the largest training batch within 15 GiB; auto: on for CUDA only")
    p.add_argument('--steps', type=int_arg(1), default=5, help="training steps timed per setting, after 2 warm-up steps (default 5)")
    p.add_argument('--json', default='minddpm_bench.json', help="where to write the results (default minddpm_bench.json)")
    return p

def distill_parser(description: str = None, # what `--help` says first: the command's docstring
                   ) -> argparse.ArgumentParser:
    "The options of `minddpm_distill`, each number checked as it is parsed."
    p = argparse.ArgumentParser(prog='minddpm_distill', description=description)
    p.add_argument('teacher', nargs='?', help='a checkpoint from minddpm_train or from an earlier round, or a weights file from '
                                              '--export, of a model predicting v or x0 (default: the shipped tiny digits model)')
    p.add_argument('--calls', type=int_arg(1), default=4, help="network calls of the last student (default: 4): the teacher's "
                                                                "--start halved once a round")
    p.add_argument('--start', type=int_arg(2), help="DDIM steps of the first teacher, --calls times a power of two (default: 64); "
                                                    "a student goes on from its own calls")
    p.add_argument('--guidance', type=float_arg(0), help="w folded into the students, one call a step (default: 3; a student's own)")
    p.add_argument('--steps', type=int_arg(1), default=1000, help='optimiser steps per new round (default: 1000); a round already begun keeps its own')
    p.add_argument('--lr', type=float_arg(0, open_low=True), default=1e-4, help='peak learning rate per round (default: 1e-4)')
    p.add_argument('--minutes', type=float_arg(0, open_low=True),
                   help='time budget for the rounds left, shared evenly; the same command carries on where it stopped')
    p.add_argument('--batch-size', type=int_arg(1), help="images per optimiser step (default: the teacher's)")
    p.add_argument('--out', default='runs/distill', help='one run directory per round: OUT/calls_032, OUT/calls_016, … (default: runs/distill)')
    p.add_argument('--export', help='also write the last student as a model file: weights (.pt), or a .pt2 or .onnx graph')
    p.add_argument('--device', help='auto, cuda, cuda:N, mps or cpu (default: auto)')
    p.add_argument('--precision', choices=('auto', 'bf16', 'fp16', 'fp32'), help="autocast precision of the student (default: auto)")
    return p

def demo_parser(description: str = None, # what `--help` says first: the command's docstring
                ) -> argparse.ArgumentParser:
    "The options of `minddpm_demo`, each number checked as it is parsed."
    p = argparse.ArgumentParser(prog='minddpm_demo', description=description)
    p.add_argument('checkpoint', nargs='?', help='a checkpoint from minddpm_train, or a model file from --export '
                                                 '(default: the shipped tiny digits model)')
    p.add_argument('--host', default='127.0.0.1', help='address to serve on (default: 127.0.0.1, this machine only; '
                                                       '0.0.0.0 serves the network)')
    p.add_argument('--port', type=int_arg(1, 65535), default=7860, help='port (default: 7860)')
    p.add_argument('--share', action='store_true', help="also ask Gradio for a public link through its tunnel (off by default)")
    p.add_argument('--auth-file', help="a file of user:password lines: the page and its API then ask for a login "
                                       "(default: none, which suits 127.0.0.1 alone)")
    p.add_argument('--max-rows', type=int_arg(2 * MAX_IMAGES), default=128,
                   help=f'network rows per batch of requests; a guided image is two (default: 128, at least {2 * MAX_IMAGES})')
    p.add_argument('--no-batching', action='store_true', help='sample each request alone')
    p.add_argument('--precision', default='auto', choices=PRECISIONS,
                   help="the network's: fp32, bf16, or auto (the default): bf16 on a CPU with bf16 instructions")
    return p


# %%
def refusal(parser, check, *argv) -> str:
    "What `parser` says on stderr when `check` refuses `argv`."
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try: check(parser, parser.parse_args(list(argv)))
        except SystemExit: return err.getvalue().strip().splitlines()[-1]
    return 'accepted'

print(refusal(sample_parser(), _check_sampler_options, 'model.pt', '--sampler', 'ddpm', '--steps', '20', '--eta', '0'))
print(refusal(edit_parser(), _check_edit_options, 'model.pt', 'x.png', '--task', 'inpaint'))
print(refusal(edit_parser(), _check_edit_options, 'model.pt', 'x.png', '--task', 'denoise', '--sigma', '0.2', '--mask', 'left'))

# %%
#| hide
test_eq(refusal(sample_parser(), _check_sampler_options, 'model.pt', '--sampler', 'dpm++', '--steps', '10'), 'accepted')
test_eq(refusal(sample_parser(), _check_sampler_options, 'model.pt', '--sampler', 'dpm++', '--eta', '1'),
        'minddpm_sample: error: --eta does nothing with --sampler dpm++: dpm++ is deterministic; leave it out, or use --sampler ddim')
test_eq(refusal(edit_parser(), _check_edit_options, 'model.pt', 'x.png', '--task', 'img2img', '--guidance', '2'),
        'minddpm_edit: error: --guidance needs --label: it weighs the class against no class')
a = train_parser().parse_args(['--steps', '10', '--lr', '1e-3', '--wandb'])
test_eq(_train_changes(a), dict(steps=10, lr=1e-3, wandb=True, minutes=None))
a = train_parser().parse_args(['--snr-gamma', '3'])
test_fail(lambda: _check_gamma(a, TRAIN_PRESETS['colab']), contains='--snr-gamma does nothing with uniform weighting')
