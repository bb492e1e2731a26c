# %%
#| hide
#| default_exp all

# %% [markdown]
# # minddpm
# > Learn denoising diffusion by building a small, correct and fast conditional DDPM in PyTorch, one lesson at a time

# %% [markdown]
# minddpm is a course and a package. Each numbered lesson is a notebook that explains one piece of a
# conditional denoising diffusion model (DDPM), with pictures and tests, and exports that piece to the
# `minddpm` Python package. Run the lessons on a Colab GPU, or `pip install minddpm` and use the
# package as a library.
#
# The course follows the classic recipe (a linear β schedule over T = 1000 steps, an ε-predicting UNet
# with self-attention and a sinusoidal time embedding, class labels with classifier-free guidance, EMA,
# AdamW with OneCycleLR, mixed precision, W&B logging) and fixes what the well-known originals get
# subtly wrong, from a mixed-precision context that is never entered to a validation loss measured on
# the training set. Then it goes past it, measuring each step: the digits model predicts v instead of ε
# (its deterministic samplers stop drawing faint digits), and DPM-Solver++ samples in 10 to 20 network
# calls instead of DDIM's 50.
#
# ## What you will build
#
# A conditional DDPM that draws the class you ask for. These are ten guided samples of every digit from
# the small model shipped with minddpm (1.1 M weights, trained for eight minutes on two CPU cores), drawn
# with `minddpm_sample` (DDIM, 50 steps, w = 3):
#
# <img src="images/digits_tiny_samples.png" alt="ten guided samples of each digit 0 to 9 from the shipped tiny model" width="440">
#
# On the way you write every piece yourself and test it: the noise schedule, the forward process, the
# UNet, label conditioning with classifier-free guidance, DDPM, DDIM and DPM-Solver++ samplers, EMA, the training
# loop, training on many processes, the metrics and the speed-ups, then editing images with the trained model
# (denoising, image-to-image, inpainting, super-resolution), flow matching, the frame today's image models train in, on
# the same network (lesson 13), distillation to a few network calls (lesson 14), and a transformer (DiT) in place of the
# UNet (lesson 15). The capstone, lesson 16, trains the same package on CIFAR-10 on a
# free Colab GPU, with checkpoints that survive a disconnect.
#
# Lessons 01–15 end with [exercises](exercises.ipynb): a function to write in place of a stub, and `check(your_function)`,
# which runs it against a reference on random and edge cases and prints ✓, or where it differs and a hint. Left
# unsolved they print "not done yet" and the notebook runs on.
#
# ## Lessons
#
# Open any lesson in Colab with its badge; every lesson also runs on a CPU with a small setting.

# %%
#| hide
from pathlib import Path
import json
from IPython.display import Markdown
from nbdev.config import get_config


# %%
#| echo: false
def lesson_table():
    "A Markdown table of the numbered lessons, each with an Open-in-Colab badge for the repo named in settings.ini."
    cfg = get_config()
    badge = 'https://colab.research.google.com/assets/colab-badge.svg'
    rows = ['| lesson | what it builds | |', '|---|---|---|']
    for nb in sorted(Path(cfg.nbs_path).glob('[0-9][0-9]_*.ipynb')):
        md = [''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'markdown']
        lines = next(m for m in md if m.startswith('# ')).splitlines()
        title = lines[0][2:]
        sub = next((l[2:] for l in lines[1:] if l.startswith('> ')), '')
        colab = f'https://colab.research.google.com/github/{cfg.user}/{cfg.repo}/blob/{cfg.branch}/nbs/{nb.name}'
        rows.append(f'| [{nb.stem[:2]} · {title}]({nb.stem}.html) | {sub} | [![Open In Colab]({badge})]({colab}) |')
    return Markdown('\n'.join(rows))

lesson_table()

# %% [markdown]
# The scrubber that the forward lesson uses has [a page of its own](scrubber.html).
#
# ## Quick start
#
# ```sh
# pip install minddpm
# minddpm_data --dataset digits --size 16 --out digits.png            # the bundled dataset, as training sees it
# minddpm_train --preset tiny --minutes 3 --out runs/digits            # train on the CPU for three minutes
# minddpm_sample runs/digits/checkpoint.pt --n 4 --out samples.png     # four guided samples of every digit
# ```
#
# ```python
# import torch
# from minddpm.all import *
# train_dl, val_dl = get_dataloaders('digits', size=16, batch_size=64)
# tiny = load_model()                    # the model shipped with minddpm, trained on these digits
# x = sample(tiny.model, tiny.diffusion, torch.arange(10), shape=tiny.shape)   # one guided sample per digit
# ```
#
# ## For instructors
#
# Clone the repo, `pip install -e ".[dev,wandb]"`, edit the notebooks in `nbs/`, then run `nbdev_export` to
# regenerate the package, `nbdev_test` to run every lesson, and `nbdev_docs` (which needs Quarto) to
# build this site. Each notebook has a plain-text twin in `nbs_py/` for review; `jupytext --sync nbs/*.ipynb`
# keeps them in step. The whole test suite (README's test command) runs every lesson once and must stay
# within 20 minutes on a 2-core machine: a new lesson keeps its CPU run to a minute or two and flags longer
# cells `#| slow`.

# %%
#| export
#| hide
from minddpm import device, data, folders, schedule, forward, scrubber, unet, conditioning, sampling, ema, run, checkpoint, trained, budget, training, distributed, args, parsers, cli, metrics, original, measure, bench, editing, demo, flow, dit
from minddpm import distill as _distill   # the module: its function `distill` comes with the names below
from minddpm.device import *
from minddpm.data import *
from minddpm.folders import *
from minddpm.schedule import *
from minddpm.forward import *
from minddpm.scrubber import *
from minddpm.unet import *
from minddpm.conditioning import *
from minddpm.sampling import *
from minddpm.ema import *
from minddpm.run import *
from minddpm.checkpoint import *
from minddpm.trained import *
from minddpm.budget import *
from minddpm.training import *
from minddpm.distributed import *
from minddpm.args import *
from minddpm.parsers import *
from minddpm.cli import *
from minddpm.metrics import *
from minddpm.original import *
from minddpm.measure import *
from minddpm.bench import *
from minddpm.editing import *
from minddpm.demo import *
from minddpm.flow import *
from minddpm.distill import *
from minddpm.dit import *

__all__ = (device.__all__ + data.__all__ + folders.__all__ + schedule.__all__ + forward.__all__ + scrubber.__all__ + unet.__all__ + conditioning.__all__ + sampling.__all__ + ema.__all__ + run.__all__ + checkpoint.__all__ + trained.__all__ + budget.__all__ + training.__all__ + distributed.__all__ + args.__all__ + parsers.__all__ + cli.__all__ + metrics.__all__ + original.__all__ + measure.__all__ + bench.__all__ + editing.__all__ + demo.__all__ + flow.__all__ + _distill.__all__ + dit.__all__)  # nbdev lists only names defined here, so the star-imported ones are named explicitly
