# %%
#| default_exp args

# %% [markdown]
# # Command-line input
# > Numbers checked as they are parsed, output paths checked before any work, one-line warnings and errors, and image files and masks read as training reads them

# %%
#| export
from __future__ import annotations
import argparse, contextlib, math, os, sys, tempfile, warnings
from pathlib import Path

import numpy as np
import torch

from minddpm.data import to_uint8, to_unit_range
from minddpm.folders import IMAGE_EXTENSIONS, is_hidden, load_rgb

# %%
#| hide
from fastcore.test import *
from nbdev.showdoc import show_doc
import matplotlib.pyplot as plt
from PIL import Image

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it

# %% [markdown]
# The commands of minddpm (`minddpm_data`, `minddpm_train`, `minddpm_sample`, `minddpm_edit`) take numbers
# and paths from a terminal, where odd values are common and costly: `nan` parses as a float and would draw
# black images, `-4` parses as an int, a path can point into a file or at a folder, and a mistake found after
# an hour of training loses the hour. This page holds what every command uses to refuse them early, with a
# message that names the argument, what it got and what it takes.
#
# An argparse `type` is any function from the text typed to a value; raising `ArgumentTypeError` makes
# argparse print `argument --name: <message>` and exit with status 2. `int_arg` and `float_arg` build such
# functions for a range:

# %%
#| export
def int_arg(minimum: int = 1,           # the smallest value allowed
            maximum: int | None = None, # the largest value allowed; None: no bound
            ):
    "An argparse `type`: a whole number in [minimum, maximum], else an error that says so."
    def parse(text):
        try: value = int(text)
        except ValueError: raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum: raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum: raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value
    return parse

def float_arg(low: float | None = None,  # the smallest value allowed; None: no bound
              high: float | None = None, # the largest value allowed; None: no bound
              open_low: bool = False,    # exclude `low` itself
              open_high: bool = False,   # exclude `high` itself
              ):
    "An argparse `type`: a finite number (never nan or inf) within the bounds, else an error that says so."
    wanted = (f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}" if low is not None and high is not None else
              f"{'greater than' if open_low else 'at least'} {low:g}" if low is not None else
              f"{'less than' if open_high else 'at most'} {high:g}" if high is not None else 'a finite number')
    def parse(text):
        try: value = float(text)
        except ValueError: raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value): raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if (low is not None and (value <= low if open_low else value < low)) or \
           (high is not None and (value >= high if open_high else value > high)):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value
    return parse

# %%
p = argparse.ArgumentParser(prog='demo', exit_on_error=False)
p.add_argument('--w', type=float_arg()); p.add_argument('--size', type=int_arg(1))
for bad in (['--w', 'nan'], ['--w', 'inf'], ['--size', '-4'], ['--size', '2.5']):
    try: p.parse_args(bad)
    except argparse.ArgumentError as e: print(f"{' '.join(bad):14} → {e}")

# %% [markdown]
# An output path is checked before any work: `writable_dir` makes the folder now and writes a
# temporary file in it, and `writable_file` also refuses a folder, or an ending that chooses no format we
# write. A command that is refused removes the folders it made for its outputs (`_new_folders`,
# `_drop_empty`), so a typo leaves nothing behind. `cli_warnings` prints each warning as one line,
# `minddpm_data: warning: …`, and `_refuse` ends a command with status 2 and one line, `minddpm_data: error: …`,
# for the errors a user can fix (`USER_ERRORS`), never with a traceback. They are defined in a hidden cell:

# %%
#| hide
#| export
USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError, FloatingPointError)   # what a command reports in one line

def writable_dir(path, # the folder to write into; made with its parents if missing
                 ) -> Path:
    "Make the folder `path` now and check that a file can be written in it, else raise `ValueError` naming what is in the way."
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None: raise ValueError(f"cannot use {path} as a folder: {blocker} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e: raise ValueError(f"cannot write in the folder {path}: {e.strerror or e}") from None
    return path

def writable_file(path,          # the file to write later; its folder is made now
                  suffixes=None, # the endings allowed (they choose the format), e.g. ('.png',); None: any
                  ) -> Path:
    "Check now that a file can be written at `path`, else raise `ValueError` saying why and what would work."
    p = Path(path)
    if p.is_dir() or str(path).endswith(('/', os.sep)):
        raise ValueError(f"{path} is a folder; give a file name in it, e.g. {p/('out' + (suffixes[0] if suffixes else ''))}")
    if suffixes and p.suffix.lower() not in suffixes:
        raise ValueError(f"{path} must end in one of {', '.join(suffixes)}, which choose the format; e.g. {p.with_suffix(suffixes[0])}")
    writable_dir(p.parent)
    return p

def image_suffixes() -> tuple:
    "The endings matplotlib's `savefig` can write on its own, '.png' first (not .pgf, which needs a LaTeX install)."
    from matplotlib.backend_bases import FigureCanvasBase
    return ('.png',) + tuple(sorted(f'.{k}' for k in FigureCanvasBase.get_supported_filetypes() if k not in ('png', 'pgf')))

@contextlib.contextmanager
def cli_warnings(prog: str): # the command's name, which starts each warning's line
    """Within this context, a warning prints as one line, `prog: warning: …`, on stderr (no source line, no code). Under
    torchrun (lesson 10) only rank 0 prints them: every rank reads the same data and would say the same."""
    quiet = os.environ.get('RANK', '0') != '0'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore' if quiet else 'default')
        warnings.showwarning = lambda message, *args, **kwargs: print(f"{prog}: warning: {message}", file=sys.stderr)
        yield

def _refuse(p: argparse.ArgumentParser, e: Exception, rank: int = 0):
    """End the command with status 2 and `prog: error: …`. Every rank meets the same bad config, data or NaN, and rank 0
    says so; a `RuntimeError` may be this rank's alone, so another rank says it too, naming itself."""
    if rank == 0: p.exit(2, f"{p.prog}: error: {e}\n")
    p.exit(2, f"{p.prog} (rank {rank}): error: {e}\n" if isinstance(e, RuntimeError) else None)

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

def _save_pngs(folder: Path, images: torch.Tensor, names: list):
    "Write each image (B, C, H, W) in [-1, 1] as `folder/NNNN_name.png`, numbered: two inputs may share a name."
    from PIL import Image
    for i, (img, name) in enumerate(zip(to_uint8(images), names)):
        Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy()).save(folder/f'{i:04d}_{name}.png')
    print(f"saved one PNG per image to {folder}")

# %%
show_doc(writable_dir)

# %%
show_doc(writable_file)

# %%
show_doc(image_suffixes)

# %%
show_doc(cli_warnings)

# %% [markdown]
# With a file where a folder should be, an output path without an ending, and a folder given as a file:

# %%
blocker = Path(tempfile.mkdtemp())/'a_file'
blocker.write_text('in the way')
for path in (blocker/'run'/'grid.png', blocker.parent/'grid', blocker.parent):
    try: writable_file(path, image_suffixes())
    except ValueError as e: print(str(e).replace(str(blocker.parent), '…').replace(', '.join(image_suffixes()), '.png, …'))

# %%
#| hide
test_eq(float_arg(0, 1)('0.5'), 0.5)
test_fail(lambda: float_arg(0, open_low=True)('0'), contains='must be greater than 0, got 0')
test_fail(lambda: writable_dir(blocker/'run'), contains='is a file')
test_fail(lambda: writable_file(blocker.parent/'grid', ('.png',)), contains='must end in one of .png')
test_fail(lambda: writable_file(blocker.parent, ('.png',)), contains='is a folder')
test_eq(writable_file(blocker.parent/'new'/'grid.png', ('.png',)).parent.is_dir(), True)
made = _new_folders(blocker.parent/'x'/'y')
writable_dir(blocker.parent/'x'/'y'); _drop_empty(made)
assert not (blocker.parent/'x').exists()

# %% [markdown]
# ## Image files and masks
#
# `minddpm_edit` reads image files for a model: `_image_files` lists the files named and the visible image
# files in each folder named (hidden and system files skipped, by the rule of *Image folders*); `read_image` reads one
# as training does (`load_rgb`: any mode, to RGB) and never resizes behind your back: a file of another size, or
# in colour for a greyscale model, is refused with the size or mode it has. `read_mask` reads `--mask`, a half
# or the centre square by name, or a black-and-white image of the model's size.

# %%
#| hide
#| export
MASKS = ('left', 'right', 'top', 'bottom', 'centre')   # the part --mask fills ('center' is taken too)

def _named_mask(name: str, h: int, w: int) -> torch.Tensor:
    "(h, w) mask filling one half, or the centre half-size square: 1 keeps, 0 fills."
    m = torch.ones(h, w)
    part = {'left': (slice(None), slice(0, w // 2)), 'right': (slice(None), slice(w // 2, None)),
            'top': (slice(0, h // 2), slice(None)), 'bottom': (slice(h // 2, None), slice(None)),
            'centre': (slice(h // 4, h - h // 4), slice(w // 4, w - w // 4))}[name]
    m[part] = 0
    return m

def _image_files(paths) -> list[Path]:
    "The files named, and the visible image files directly inside each folder named, sorted; a missing path raises."
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.is_file() and not is_hidden(f.name) and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                subs = sorted(f.name for f in path.iterdir() if f.is_dir() and not is_hidden(f.name))
                inside = (f"; its images are in sub-folders ({', '.join(subs[:3])}{', …' if len(subs) > 3 else ''}): "
                          f"name one of them, e.g. {path/subs[0]}" if subs else '')
                raise ValueError(f"{path} holds no image files (by their endings: {', '.join(IMAGE_EXTENSIONS)}){inside}")
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
    try: m = torch.from_numpy(np.array(load_rgb(path)))[..., 0]   # 16-bit and other modes scaled to 8 bits, as images are
    except Exception as e: raise ValueError(f"--mask {path} cannot be read as an image ({type(e).__name__}: {e})") from None
    if tuple(m.shape) != tuple(size): raise ValueError(f"--mask {path} is {m.shape[1]}×{m.shape[0]} pixels; the images are {size[1]}×{size[0]}")
    grey = ((m != 0) & (m != 255)).sum().item()
    if grey: raise ValueError(f"--mask {path} must be black (fill) and white (keep) only; {grey} of its pixels are grey")
    return (m == 255).float()

def _label_index(label: str, classes: list, flag: str = '--label') -> int:
    "The class `label` names, by its name or its index, else `ValueError` listing the classes (`flag`: the option it came from)."
    i = {n: i for i, n in enumerate(classes)}.get(label)
    if i is None:
        try: i = int(label)
        except ValueError: pass
    if i is None or not 0 <= i < len(classes):
        raise ValueError(f"{flag} {label} is unknown to this model; it knows {', '.join(classes)} (or 0 … {len(classes) - 1})")
    return i

def _upsample_factor(first: Path, shape: tuple) -> tuple[int, str]:
    "(factor, why): the first image to upsample sets the factor to the model's (C, H, W); the others must match it."
    _, H, W = shape
    h0, w0 = read_image(first, shape[0], None).shape[1:]
    factor = H // h0 if H % h0 == 0 and W == w0 * (H // h0) and H // h0 >= 2 else None
    if factor is None: raise ValueError(f"{first} is {w0}×{h0} pixels; upsample needs a whole fraction of {W}×{H}, "
                                        f"such as {W // 2}×{H // 2} or {W // 4}×{H // 4}")
    return factor, f" (the size of {first.name}, the first image: upsampled ×{factor} to the model's {W}×{H})"


# %%
show_doc(read_image)

# %%
show_doc(read_mask)

# %% [markdown]
# The masks by name, at 16 px, beside a digit read back from a PNG file with each of them applied (white keeps, black fills):

# %%
from minddpm.data import load_bundled, resize_uint8
folder = Path(tempfile.mkdtemp())
Image.fromarray(resize_uint8(load_bundled()['images'][:1], 16)[0, 0].numpy()).save(folder/'digit.png')
x = read_image(folder/'digit.png', 1, (16, 16))
fig, axs = plt.subplots(2, len(MASKS), figsize=(1.2 * len(MASKS), 2.6))
for j, name in enumerate(MASKS):
    m = read_mask(name, (16, 16))
    axs[0, j].imshow(m, cmap='gray', vmin=0, vmax=1); axs[0, j].set_title(name, fontsize=8)
    axs[1, j].imshow(x[0] * m - (1 - m), cmap='gray', vmin=-1, vmax=1)
for ax in axs.flat: ax.axis('off')

# %%
#| hide
test_eq(x.shape, (1, 16, 16))
assert -1 <= x.min() and x.max() <= 1
Image.new('RGB', (16, 16), (200, 30, 30)).save(folder/'red.png')
test_fail(lambda: read_image(folder/'red.png', 1, (16, 16)), contains='is in colour; this model draws greyscale')
test_fail(lambda: read_image(folder/'digit.png', 1, (32, 32)), contains='is 16×16 pixels; this needs 32×32')
test_eq(read_image(folder/'digit.png', 3, (16, 16)).shape, (3, 16, 16))   # greyscale for an RGB model: three equal channels
test_eq(read_mask('center', (16, 16)), read_mask('centre', (16, 16)))
test_fail(lambda: read_mask('middle', (16, 16)), contains='neither a file nor one of left, right, top, bottom, centre')
test_fail(lambda: read_mask(str(folder/'digit.png'), (16, 16)), contains='must be black (fill) and white (keep) only')
test_eq(_image_files([folder]), [folder/'digit.png', folder/'red.png'])
test_eq(_label_index('3', [str(i) for i in range(10)]), 3)
test_fail(lambda: _label_index('cat', ['a', 'b']), contains='--label cat is unknown to this model; it knows a, b (or 0 … 1)')

# %% [markdown]
# A served model is open to whoever reaches it. `minddpm_demo --auth-file FILE` asks for a login: the file holds
# `user:password` lines, so that no password appears on a command line, where `ps` shows it to every user of
# the machine. A wrong file is refused by line number, never by echoing a password.

# %%
#| export
def read_auth(path, # a text file of `user:password` lines; blank lines and lines starting with `#` are skipped
              ) -> list[tuple[str, str]]:
    "The (user, password) pairs of `path`; `ValueError` for a missing file, a line that is not `user:password`, or no pair at all."
    p = Path(path)
    if not p.is_file(): raise ValueError(f"{path} is not a file of user:password lines")
    pairs = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith('#'): continue
        user, sep, password = line.partition(':')
        if not (sep and user.strip() and password): raise ValueError(f"line {i} of {path} is not user:password")
        pairs.append((user.strip(), password))
    if not pairs: raise ValueError(f"{path} holds no user:password line")
    return pairs

# %%
#| hide
(folder/'auth').write_text('# who may use the demo\nada:s3cret:with:colons\n\nbob: pw\n')
test_eq(read_auth(folder/'auth'), [('ada', 's3cret:with:colons'), ('bob', ' pw')])
(folder/'bad').write_text('ada:ok\njust-a-password\n')
test_fail(lambda: read_auth(folder/'bad'), contains='line 2 of')
assert 'just-a-password' not in str(read_auth.__doc__)
try: read_auth(folder/'bad')
except ValueError as e: assert 'just-a-password' not in str(e)
test_fail(lambda: read_auth(folder/'none'), contains='is not a file of user:password lines')
(folder/'empty').write_text('# nobody\n')
test_fail(lambda: read_auth(folder/'empty'), contains='holds no user:password line')
