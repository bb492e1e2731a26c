# %%
#| default_exp data

# %% [markdown]
# # Data
# > The bundled digits, CIFAR-10, MNIST, FashionMNIST or any folder of images: resized, scaled to [-1, 1], split, and shown

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/00_data.ipynb)
# This lesson has no GPU-only cells: it ran top to bottom in 6 seconds on a 2-core CPU (measured); a Colab runtime is no slower.

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
import argparse, contextlib, math, os, re, sys, tempfile, warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from numbers import Integral, Real
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

# %%
#| hide
from fastcore.test import *
from torchvision.utils import save_image
import shutil, tempfile
import numpy as np
from PIL import Image as PILImage
from minddpm.data import pick_device, pick_preset

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)              # the same pictures on every run

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # 'colab' sizes on a CUDA GPU, 'tiny' elsewhere


# %% [markdown]
# A diffusion model learns from nothing but images (and, for a conditional model, their labels).
# This lesson builds the one function every later lesson calls to get them, `get_dataloaders`, and
# settles three questions on the way: which data we can use offline, what numeric range the pixels
# should live in, and how to hold out a validation set that the model never trains on.
#
# ## The bundled digits
#
# Lessons and tests need a real dataset that works without internet: on a laptop, in CI, on a train.
# minddpm ships one inside the package: the 1,797 handwritten digits (8×8 pixels, 10 classes) that
# scikit-learn also bundles, a copy of the test set of the UCI *Optical Recognition of Handwritten
# Digits* data (Alpaydin & Kaynak, 1998; CC BY 4.0). At 131 kB it is small enough to ship, and it
# is real handwriting, so a model trained on it for a few minutes on a CPU draws recognisable digits.
# `data/make_digits.py` in the repo wrote the file once; minddpm never needs scikit-learn.
#
# The file lives in the installed package, so it is read through `importlib.resources`, never through
# a path relative to the repo: the same call works from a clone, from `pip install minddpm`, and on Colab.

# %%
#| export
def load_bundled() -> dict:
    "The bundled digits: uint8 `images` (N, 1, 8, 8), int64 `labels` and the `classes` names."
    with resources.files('minddpm.assets').joinpath('digits.pt').open('rb') as f:
        return torch.load(f, weights_only=True)


# %%
digits = load_bundled()
digits['images'].shape, digits['images'].dtype, digits['classes']

# %% [markdown]
# The classes are balanced, so a random hold-out will hold roughly the same share of every digit:

# %%
counts = digits['labels'].bincount()
fig, ax = plt.subplots(figsize=(5, 1.8))
ax.bar(digits['classes'], counts)
ax.set(xlabel='class', ylabel='images', title=f"{len(digits['labels']):,} bundled digits");

# %%
test_eq(counts.sum(), 1797)
test_eq(len(digits['classes']), 10)
assert counts.min() >= 170, counts


# %% [markdown]
# ## Pixels in [-1, 1]
#
# The forward process of the next lessons mixes an image with Gaussian noise,
# $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$ with $\varepsilon \sim \mathcal N(0, I)$.
# The noise is centred on 0 with unit spread. If the pixels are too (roughly centred, roughly unit scale),
# $x_t$ keeps about the same scale at every step and the network sees inputs of one size from $t=0$ to
# $t=T-1$. Raw bytes in {0,…,255} would drown the noise for hundreds of steps; [0, 1] would be off-centre.
# So every image goes to [-1, 1], and every image that comes out goes back to bytes by **rounding**.

# %%
#| exports
def to_unit_range(x: torch.Tensor, # uint8 pixels in {0,…,255}, any shape
                  ) -> torch.Tensor:
    "uint8 pixels {0,…,255} → float pixels in [-1, 1]."
    return x.float() / 127.5 - 1

def to_uint8(x: torch.Tensor, # float pixels in [-1, 1], any shape; values outside are clamped
             ) -> torch.Tensor:
    "Float pixels in [-1, 1] → uint8, clamped and *rounded* (truncating would darken by half a level)."
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


# %% [markdown]
# The round trip is exact, and rounding matters: the well-known DDPM notebooks truncate with
# `.type(torch.uint8)`, which maps 254.99 to 254 and darkens every image by half a grey level on average.

# %%
b = torch.arange(256, dtype=torch.uint8)
test_eq(to_uint8(to_unit_range(b)), b)
x = torch.rand(100_000) * 2 - 1
exact = (x + 1) * 127.5
truncated = exact.to(torch.uint8).float()
rounded = to_uint8(x).float()
print(f"mean error, truncating: {(truncated - exact).mean():+.3f} levels; rounding: {(rounded - exact).mean():+.3f}")
test_close((truncated - exact).mean(), -0.5, eps=0.01)
test_close((rounded - exact).mean(), 0.0, eps=0.01)

# %% [markdown]
# Here is what the scaling buys: the bundled pixels in [-1, 1] next to the noise they will be mixed with.

# %%
px = to_unit_range(digits['images']).flatten()
bins = torch.linspace(-4, 4, 81)
fig, ax = plt.subplots(figsize=(6, 2.2))
ax.hist(px, bins=bins, density=True, alpha=.7, label='digit pixels in [-1, 1]')
ax.hist(torch.randn(len(px)), bins=bins, density=True, alpha=.5, label='noise ε ~ N(0, 1)')
ax.set(xlabel='value', ylabel='density', ylim=(0, 1.2))
ax.annotate(f'{(px == -1).float().mean():.0%} of pixels are background, at −1 (bar cut off)',
            xy=(-1, 1.15), xytext=(-3.9, 0.95), fontsize=8, arrowprops=dict(arrowstyle='->'))
ax.legend(fontsize=8, loc='upper right');


# %% [markdown]
# ## Resizing
#
# The UNet of lesson 03 takes any size divisible by $2^{\text{levels}}$, and the course uses the same
# model for 8×8 digits and 32×32 CIFAR-10, so every dataset is resized to one requested `size`.
# In-memory sets (the digits, MNIST, FashionMNIST, CIFAR-10) are resized once, all together, with
# antialiased bilinear interpolation, and kept as bytes: CIFAR-10 at 32 px is 150 MB as uint8 and four
# times that as float32, and the per-item work in the data loader is then a single scale-and-shift.

# %%
#| export
def _check_positive_int(value, name: str, what: str):
    if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer ({what}), got {value!r}")

def resize_uint8(images: torch.Tensor, # uint8 images (N, C, H, W)
                 size: int,            # side of the square output, in pixels; already `size`×`size` → returned as is
                 chunk: int = 4096,    # images interpolated at once, bounding the memory of their float32 copy
                 ) -> torch.Tensor:
    "Resize uint8 images (N, C, H, W) to `size`×`size` with antialiased bilinear interpolation, kept as uint8."
    _check_positive_int(size, 'size', 'the side of the square images, in pixels')
    if images.shape[-2:] == (size, size): return images
    out = torch.empty(*images.shape[:2], size, size, dtype=torch.uint8)
    for i in range(0, len(images), chunk):  # chunks bound the float32 copy's memory
        x = F.interpolate(images[i:i+chunk].float(), size=(size, size), mode='bilinear', antialias=True)
        out[i:i+chunk] = x.round().clamp(0, 255).to(torch.uint8)
    return out


# %% [markdown]
# Upsampled 8×8 digits become smooth strokes rather than blocks:

# %%
fig, axs = plt.subplots(1, 3, figsize=(5, 1.9))
for ax, s in zip(axs, (8, 16, 32)):
    ax.imshow(resize_uint8(digits['images'][:1], s)[0, 0], cmap='gray', interpolation='nearest')
    ax.set_title(f'{s}×{s}', fontsize=9); ax.axis('off')

# %%
test_eq(resize_uint8(digits['images'][:5], 16).shape, (5, 1, 16, 16))
test_eq(resize_uint8(digits['images'][:5], 8), digits['images'][:5])
test_fail(lambda: resize_uint8(digits['images'], 0), contains='positive integer')


# %% [markdown]
# ## A dataset and a held-out split
#
# An item is `(image, label)` with the image in [-1, 1]. Random horizontal flips are the one
# augmentation the DDPM paper uses on CIFAR-10; they are off by default because they turn digits into
# mirror-writing.

# %%
#| export
class ImageTensorDataset(Dataset):
    "Images held in memory as uint8 (N, C, H, W) with int labels; an item is (image in [-1, 1], label)."
    def __init__(self, images: torch.Tensor,  # uint8 images (N, C, H, W)
                 labels: torch.Tensor,        # N int class indices (a tensor or anything `torch.as_tensor` takes)
                 classes,                     # class names, indexed by label
                 hflip: bool = False,         # flip each item horizontally with probability 0.5
                 files=None):                 # the N files the images were read from (image folders); None: not from files
        self.images, self.labels, self.classes, self.hflip = images, torch.as_tensor(labels), list(classes), hflip
        self.files = files
    def __len__(self): return len(self.images)
    def __getitem__(self, i):
        x = to_unit_range(self.images[i])
        if self.hflip and torch.rand(()) < 0.5: x = x.flip(-1)
        return x, int(self.labels[i])


# %% [markdown]
# Validation must measure images the model never trained on. The originals computed their
# "validation" loss on the training loader, augmentation included; here the digits and image folders
# are split once by a seeded permutation, and the torchvision sets use their official test split.

# %%
#| exports
def split_indices(n: int,          # number of items, indexed `range(n)`; at least 2
                  val_frac: float,  # share held out, strictly between 0 and 1; rounded, and at least one item each side
                  seed: int = 0,    # seeds the random permutation
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    "Disjoint (train, val) index tensors: a seeded random `val_frac` of `range(n)` is held out, at least one item, never all."
    if isinstance(val_frac, bool) or not isinstance(val_frac, Real) or not 0 < val_frac < 1:  # NaN fails `0 < val_frac`
        raise ValueError(f"val_frac must be a share strictly between 0 and 1, got {val_frac!r}")
    if n < 2:
        raise ValueError(f"{n} image{'s' * (n != 1)} cannot be split: training and validation need at least one each, "
                         f"so a dataset needs at least 2 images")
    n_val = min(max(round(n * val_frac), 1), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]


# %%
tr, va = split_indices(1797, 0.1)
test_eq(len(tr) + len(va), 1797)
test_eq(len(set(tr.tolist()) & set(va.tolist())), 0)
test_eq(split_indices(1797, 0.1)[1], va)  # the same seed gives the same split
test_eq([len(i) for i in split_indices(4, 0.1)], [3, 1])   # a tiny set still holds one image out
test_fail(lambda: split_indices(1, 0.1), contains='at least 2 images')
test_fail(lambda: split_indices(10, float('nan')), contains='strictly between 0 and 1')


# %% [markdown]
# ## Showing images
#
# `show_images` draws a grid with each image's class name as its title. It takes floats in [-1, 1]
# (what the loaders and, later, the samplers return) or uint8.

# %%
#| export
def show_images(images: torch.Tensor, # (B, C, H, W) floats in [-1, 1], or uint8
                labels=None,          # B class indices drawn as titles
                classes=None,         # class names for the labels
                ncols: int = 8,       # images per row
                scale: float = 1.1,   # inches per image
                title: str | None = None): # figure title above the grid; none when empty
    "Draw a labelled grid of images with matplotlib."
    images = images.detach().cpu()
    if images.dtype != torch.uint8: images = to_uint8(images)
    n = len(images)
    nrows = max(1, -(-n // ncols))
    ncols = min(ncols, n)
    fig, axs = plt.subplots(nrows, ncols, figsize=(ncols * scale, nrows * scale * 1.15), squeeze=False)
    for i, ax in enumerate(axs.flat):
        ax.axis('off')
        if i >= n: continue
        img = images[i].permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap='gray', vmin=0, vmax=255, interpolation='nearest')
        if labels is not None:
            lbl = int(labels[i])
            ax.set_title(classes[lbl] if classes is not None else str(lbl), fontsize=8)
    if title: fig.suptitle(title)
    fig.tight_layout()


# %%
ds = ImageTensorDataset(resize_uint8(digits['images'], 16), digits['labels'], digits['classes'])
xb = torch.stack([ds[i][0] for i in range(16)])
show_images(xb, [ds[i][1] for i in range(16)], ds.classes)

# %% [markdown]
# ## Any folder of images
#
# The originals trained on a folder of landscape photos, one sub-folder per class. Any such folder
# works here. Folders from the wild hold more than images, though, and each of these can stop a
# training run long after it started, or quietly train on the wrong pictures:
#
# - files the system wrote: macOS's `.DS_Store` and its AppleDouble twins (`._0001.png`, which are
#   not PNGs at all), `__MACOSX/` in a zip made on a Mac, Windows' `Thumbs.db`, Jupyter's
#   `.ipynb_checkpoints/`;
# - a download that stopped half-way: the file starts like a PNG, so it is listed, and fails only
#   when a batch first needs it;
# - formats and modes the usual loader mishandles: GIFs (torchvision's `ImageFolder` ignores them),
#   16-bit greyscale PNGs (converted to RGB by clipping, so they come out white), transparent PNGs
#   (the alpha channel dropped, revealing whatever colour hid under it), phone photos whose rotation
#   lives in their EXIF tag.
#
# So minddpm decides what counts by **one rule**, used by every check and by the loader alike: a
# *class* is a visible sub-folder of the root; an *image* is a visible file under it whose extension is
# in `IMAGE_EXTENSIONS`; anything hidden (a name starting with `.`, or inside a folder that does) or
# written by an operating system is not there at all. Then it **decodes every image once, before
# training**, at the training size, into the same uint8 tensor as the other datasets. A file that
# cannot be decoded is named by its path and left out, with one warning that lists them all; a class
# left with no images is refused. Nothing can fail mid-run, and each step reads bytes from memory
# instead of decoding files (at 64 px, 10,000 colour images take 123 MB).

# %%
#| export
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.jfif', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.pgm', '.ppm', '.pbm', '.pnm')
_SYSTEM_NAMES = ('__macosx', 'thumbs.db', 'desktop.ini')   # written by macOS's zip and Windows' Explorer

def is_hidden(rel, # a path relative to the dataset's root
              ) -> bool:
    "Is any part of `rel` hidden (`.DS_Store`, AppleDouble `._0001.png`, `.ipynb_checkpoints/`) or an operating system's own file?"
    return any(part.startswith('.') or part.lower() in _SYSTEM_NAMES for part in Path(rel).parts)

@dataclass
class FolderScan:
    "What `scan_folder` found in a folder of class sub-folders."
    root: Path     # the folder scanned
    classes: list  # class names: its visible sub-folders, sorted
    files: list    # every image file (Path), class after class, sorted
    labels: list   # the class index of each file
    others: list   # visible files that are not images by their extension: left out
    loose: list    # images in the root itself, in no class: left out

def scan_folder(root, # a folder with one sub-folder of images per class (nested folders belong to their class)
                ) -> FolderScan:
    "Classes and image files of `root`, by the one rule: visible sub-folders are classes, visible files with an image extension are images."
    root = Path(root)
    classes, files, labels, others, loose = [], [], [], [], []
    for entry in sorted(root.iterdir()):
        if is_hidden(entry.relative_to(root)): continue
        if entry.is_file(): (loose if entry.suffix.lower() in IMAGE_EXTENSIONS else others).append(entry)
        if not entry.is_dir(): continue
        for f in sorted(entry.rglob('*')):
            if not f.is_file() or is_hidden(f.relative_to(root)): continue
            if f.suffix.lower() in IMAGE_EXTENSIONS: files.append(f); labels.append(len(classes))
            else: others.append(f)
        classes.append(entry.name)
    return FolderScan(root, classes, files, labels, others, loose)


# %% [markdown]
# Decoding is where true brightness is kept or lost. Pillow's `convert('RGB')` clips 16-bit greyscale
# (0…65535) at 255, and drops transparency; `load_rgb` scales the first and composites the second on
# white, as a browser shows it. Every other mode (palette, 1-bit, CMYK, YCbCr, LAB, …) goes through
# Pillow's own conversion, which is right for them.

# %%
#| export
_DEEP_GREY = ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F')   # 16/32-bit integer and float greyscale
_ALPHA = ('RGBA', 'LA', 'PA', 'RGBa', 'La')

def load_rgb(path, # an image file in any mode Pillow opens
             ) -> 'PIL.Image.Image':
    """Decode the whole of `path` into 8-bit RGB with its true brightness: EXIF rotation applied, 16-bit integer
    greyscale scaled by 255/65535 (32-bit integer too; float greyscale taken as [0, 1] when it lies there, else
    [0, 255]), transparency composited on white. Raises whatever Pillow raises for a file it cannot decode."""
    import numpy as np
    from PIL import Image, ImageOps
    with Image.open(path) as im:
        im.load()                                 # decode it all now: a truncated file fails here, not mid-run
        im = ImageOps.exif_transpose(im)          # phone photos: stand the picture up as it was shot
    if im.mode in _DEEP_GREY:                     # Pillow's convert would clip these at 255
        a = np.asarray(im, dtype=np.float64)
        a = a * 255 if im.mode == 'F' and a.max() <= 1 else a if im.mode == 'F' else a / 257
        im = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))
    if im.mode in _ALPHA or 'transparency' in im.info:
        im = Image.alpha_composite(Image.new('RGBA', im.size, 'white'), im.convert('RGBA'))
    return im.convert('RGB')

def decode_images(files,            # image paths
                  size: int,        # resize the short side to `size`, then crop the centre square
                  workers: int = 0, # decoding threads; 0: one per CPU core, at most 8
                  ) -> tuple[torch.Tensor, list, list]:
    "Decode `files` into uint8 (N, 3, size, size): (images, indices of the files decoded, [(path, reason)] of those that failed)."
    from torchvision.transforms import functional as TF
    def one(path):
        try: return TF.pil_to_tensor(TF.center_crop(TF.resize(load_rgb(path), size, antialias=True), size))
        except Exception as e: return f"{type(e).__name__}: {e}"   # any failure to decode: reported with its path
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:  # Pillow decodes without the GIL
        out = list(tqdm(pool.map(one, files), total=len(files), desc='decoding images', disable=len(files) < 2000))
    kept = [i for i, x in enumerate(out) if isinstance(x, torch.Tensor)]
    images = torch.stack([out[i] for i in kept]) if kept else torch.empty(0, 3, size, size, dtype=torch.uint8)
    return images, kept, [(files[i], x) for i, x in enumerate(out) if not isinstance(x, torch.Tensor)]


# %% [markdown]
# `_folder_datasets` puts the three together, and says what it left out. The checks that need no
# decoding come first, so a wrong folder is refused in a moment:

# %%
#| export
def _listing(paths, limit: int = 10) -> str:
    "`paths` as one line, the first `limit` of them named."
    shown = ', '.join(map(str, paths[:limit]))
    return shown + (f", and {len(paths) - limit} more" if len(paths) > limit else '')

def _count(n: int, noun: str) -> str: return f"{n:,} {noun}{'s' * (n != 1)}"

def _folder_datasets(path, size: int, val_frac: float, seed: int, hflip: bool):
    "Train and val `ImageTensorDataset`s of the folder at `path`, decoded once at `size`, split by `split_indices`."
    scan, path = scan_folder(path), Path(path)
    example = f"e.g. {path/'cats'/'0001.png'}; images are files ending in {', '.join(IMAGE_EXTENSIONS)}"
    if not scan.files:
        found = f"; it holds {len(scan.loose)} images outside any class folder" if scan.loose else ''
        raise ValueError(f"No images found in {path}: expected one sub-folder per class holding image files{found} ({example})")
    counts = Counter(scan.labels)
    empty = [c for k, c in enumerate(scan.classes) if not counts[k]]
    if empty: raise ValueError(f"Class folders without images in {path}: {', '.join(empty)}; remove them or add images ({example})")
    if scan.loose: warnings.warn(f"left out {_count(len(scan.loose), 'image')} in {path} itself, outside any class folder: "
                                 f"{_listing(scan.loose)}")
    if scan.others: warnings.warn(f"left out {_count(len(scan.others), 'file')} of {path} not ending like an image "
                                  f"({', '.join(IMAGE_EXTENSIONS)}): {_listing(scan.others)}")
    images, kept, failed = decode_images(scan.files, size)
    if failed: warnings.warn(f"left out {_count(len(failed), 'image file')} of {len(scan.files):,} in {path} that cannot be "
                             f"decoded: {_listing([f'{p} ({why})' for p, why in failed])}")
    labels = torch.tensor([scan.labels[i] for i in kept], dtype=torch.long)
    gone = [c for k, c in enumerate(scan.classes) if not (labels == k).any()]
    if gone: raise ValueError(f"Every image of class {', '.join(gone)} in {path} failed to decode (see the warning); fix or remove them")
    files = [scan.files[i] for i in kept]
    tr, va = split_indices(len(files), val_frac, seed)
    return tuple(ImageTensorDataset(images[i], labels[i], scan.classes, hflip=hflip and train, files=[files[j] for j in i.tolist()])
                 for i, train in ((tr, True), (va, False)))


# %% [markdown]
# To see it work offline, write some of the digits out as PNG files, one folder per class, and load
# the folder back at 16 px:

# %%
folder = Path(tempfile.mkdtemp())/'digits_png'
for i in range(200):
    lbl = int(digits['labels'][i])
    (folder/f'class_{lbl}').mkdir(parents=True, exist_ok=True)
    save_image(digits['images'][i].float() / 255, folder/f'class_{lbl}'/f'{i:04d}.png')
ftrain, fval = _folder_datasets(folder, 16, 0.2, 0, False)
len(ftrain), len(fval), ftrain.classes[:3]

# %%
x, y = ftrain[0]
test_eq(x.shape, (3, 16, 16))  # PNGs come back as RGB
assert -1 <= x.min() <= x.max() <= 1
test_eq(len(ftrain) + len(fval), 200)
test_eq(set(ftrain.files) & set(fval.files), set())   # held out means held out
show_images(torch.stack([ftrain[i][0] for i in range(8)]), [ftrain[i][1] for i in range(8)], ftrain.classes)

# %% [markdown]
# Now the same folder the way it arrives from the wild: every one of the troublemakers above added to
# it, and the images of one class stored in modes that a plain `convert('RGB')` gets wrong. Loading it
# warns once for each kind of file it leaves out, naming them, and loses nothing else:

# %%
wild = Path(tempfile.mkdtemp())/'wild'
shutil.copytree(folder, wild)
(wild/'.ipynb_checkpoints').mkdir()                                   # Jupyter's, empty
(wild/'.DS_Store').write_bytes(b'\x00\x00\x00\x01Bud1')                # Finder's
(wild/'class_0'/'._0000.png').write_bytes(b'\x00\x05\x16\x07 AppleDouble')   # macOS's twin of 0000.png
good = (wild/'class_1'/'0001.png').read_bytes()
(wild/'class_1'/'broken.png').write_bytes(good[:len(good) // 2])       # a download that stopped half-way
(wild/'class_1'/'notes.txt').write_text('scanned on Tuesday')
seven = resize_uint8(digits['images'][digits['labels'] == 7][:4], 32)[:, 0].numpy()
(wild/'class_7b').mkdir()
PILImage.fromarray(seven[0].astype('uint16') * 257).save(wild/'class_7b'/'deep.png')              # 16-bit greyscale
PILImage.fromarray(seven[1]).convert('P').save(wild/'class_7b'/'anim.gif')                        # a GIF
rgba = PILImage.new('RGBA', (32, 32), 'black')
rgba.putalpha(PILImage.fromarray(seven[2]))                             # black ink on transparent paper
rgba.save(wild/'class_7b'/'ink.png')
PILImage.fromarray(seven[3]).convert('1').save(wild/'class_7b'/'bilevel.png')                      # 1-bit
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    wtrain, wval = _folder_datasets(wild, 16, 0.2, 0, False)
for w in caught: print('warning:', w.message)
test_eq(len(wtrain) + len(wval), 200 + 4)            # every real image, and only those
test_eq(len(caught), 2)                              # notes.txt; broken.png, named
assert 'broken.png' in str(caught[1].message) and 'notes.txt' in str(caught[0].message)

# %% [markdown]
# Here is what the careful decode buys, on the four odd files of `class_7b`: what Pillow's plain
# `convert('RGB')` makes of them (as torchvision's loader does), and what `load_rgb` makes of them.

# %%
odd = sorted((wild/'class_7b').iterdir())
fig, axs = plt.subplots(2, len(odd), figsize=(1.3 * len(odd), 3))
for j, f in enumerate(odd):
    with PILImage.open(f) as im: naive = im.convert('RGB')
    for i, (img, how) in enumerate(((naive, "convert('RGB')"), (load_rgb(f), 'load_rgb'))):
        axs[i, j].imshow(img, interpolation='nearest'); axs[i, j].set_xticks([]); axs[i, j].set_yticks([])
        if j == 0: axs[i, j].set_ylabel(how, fontsize=8)
    axs[0, j].set_title(f"{f.name}\n{PILImage.open(f).mode}", fontsize=8)
fig.tight_layout()

# %%
with PILImage.open(wild/'class_7b'/'deep.png') as im: test_eq(im.mode, 'I;16')
test_eq(torch.tensor(np.array(load_rgb(wild/'class_7b'/'deep.png')))[..., 0], torch.tensor(seven[0]))  # 16-bit: same brightness
with PILImage.open(wild/'class_7b'/'ink.png') as im: test_eq(np.asarray(im.convert('RGB')).max(), 0)  # alpha dropped: black on black
assert np.asarray(load_rgb(wild/'class_7b'/'ink.png')).min(-1).max() == 255     # composited on white paper
test_fail(lambda: load_rgb(wild/'class_1'/'broken.png'), contains='truncated')
test_eq(wtrain.classes, sorted(ftrain.classes + ['class_7b']))
assert not [f for f in scan_folder(wild).files if is_hidden(f.relative_to(wild))]

# %% [markdown]
# ## CIFAR-10, MNIST and FashionMNIST
#
# These come from torchvision with `download=True` into `root` (`$MINDDPM_DATA`, else `./data`: on
# Colab that is `/content/data`). Their images are read once into one uint8 tensor, so they go through
# exactly the same in-memory path as the digits. Without internet the download fails, and the error
# says how to carry on with the bundled set.

# %%
#| export
_TORCHVISION_SETS = {'cifar10': 'CIFAR10', 'mnist': 'MNIST', 'fashion_mnist': 'FashionMNIST'}
DATASETS = ('digits',) + tuple(_TORCHVISION_SETS)

def default_root() -> Path:
    "Where torchvision datasets are downloaded: `$MINDDPM_DATA`, else `./data`."
    return Path(os.environ.get('MINDDPM_DATA', 'data'))

def _torchvision_split(name: str, root: Path, train: bool, download: bool):
    "One split of a torchvision dataset as (uint8 images (N, C, H, W), labels, classes)."
    from torchvision import datasets
    cls = getattr(datasets, _TORCHVISION_SETS[name])
    try: ds = cls(root, train=train, download=download)
    except (OSError, RuntimeError) as e:
        raise RuntimeError(f"Could not load {name!r} from {root}/ ({type(e).__name__}: {e}). "
                           f"Without internet, use the bundled dataset: get_dataloaders('digits'); "
                           f"or put the files in {root}/ and pass download=False.") from e
    data = torch.as_tensor(ds.data)  # CIFAR: (N, H, W, 3) numpy; MNIST: (N, H, W) tensor
    images = data.permute(0, 3, 1, 2) if data.ndim == 4 else data[:, None]
    return images.contiguous(), torch.as_tensor(ds.targets), list(ds.classes)


# %% [markdown]
# ## One function for all of them
#
# `get_datasets` picks the source by name, or treats the name as a folder path; `get_dataloaders`
# wraps the two splits in `DataLoader`s. The training loader shuffles with a seeded generator, so a
# run is reproducible.

# %%
#| export
def get_datasets(name: str = 'digits', # one of `DATASETS`, or a folder with one sub-folder of images per class
                 size: int = 32,       # images are resized to `size`×`size` pixels
                 val_frac: float = 0.1,  # share held out for validation (torchvision sets use their test split)
                 root=None,            # download folder for torchvision sets; default `default_root()`
                 download: bool = True,  # download torchvision sets if they are not in `root`
                 hflip: bool = False,  # random horizontal flips in the training split
                 seed: int = 0):       # seeds the split
    "Train and validation datasets whose items are (image in [-1, 1] of shape (C, size, size), label)."
    _check_positive_int(size, 'size', 'the side of the square images, in pixels')
    key = str(name).lower().replace('-', '_')
    if key in _TORCHVISION_SETS:
        root = Path(root) if root is not None else default_root()
        splits = [_torchvision_split(key, root, train, download) for train in (True, False)]
        return tuple(ImageTensorDataset(resize_uint8(x, size), y, c, hflip=hflip and train)
                     for (x, y, c), train in zip(splits, (True, False)))
    if key == 'digits':
        d = load_bundled()
        tr, va = split_indices(len(d['labels']), val_frac, seed)
        x = resize_uint8(d['images'], size)
        return (ImageTensorDataset(x[tr], d['labels'][tr], d['classes'], hflip=hflip),
                ImageTensorDataset(x[va], d['labels'][va], d['classes']))
    if Path(name).is_dir(): return _folder_datasets(name, size, val_frac, seed, hflip)
    if Path(name).exists(): raise ValueError(f"{name} is a file; pass a folder with one sub-folder of images per class")
    if os.sep in str(name) or '/' in str(name): raise FileNotFoundError(f"no folder at {name}: pass a folder with one sub-folder "
                                                                         f"of images per class, or one of {', '.join(DATASETS)}")
    raise ValueError(f"Unknown dataset {name!r}. Known names: {', '.join(DATASETS)}; "
                     f"or pass the path of a folder with one sub-folder of images per class.")


# %%
#| export
def get_dataloaders(name: str = 'digits', # one of `DATASETS`, or a folder of class sub-folders
                    size: int = 32,       # images are resized to `size`×`size` pixels
                    batch_size: int = 64, # images per batch
                    val_frac: float = 0.1,  # share held out for validation (torchvision sets use their test split)
                    root=None,            # download folder for torchvision sets; default `default_root()`
                    download: bool = True,  # download torchvision sets if they are not in `root`
                    hflip: bool = False,  # random horizontal flips in the training split
                    seed: int = 0,        # seeds the split and the training shuffle
                    num_workers: int = 0):  # loader processes; 0 suits the in-memory sets
    "Train and validation `DataLoader`s of (images in [-1, 1] (B, C, size, size), labels (B,))."
    _check_positive_int(batch_size, 'batch_size', 'images per batch')
    train, val = get_datasets(name, size, val_frac, root, download, hflip, seed)
    kw = dict(batch_size=batch_size, num_workers=num_workers, pin_memory=torch.cuda.is_available())
    return (DataLoader(train, shuffle=True, generator=torch.Generator().manual_seed(seed), **kw),
            DataLoader(val, shuffle=False, **kw))


# %%
train_dl, val_dl = get_dataloaders('digits', size=16, batch_size=32)
xb, yb = next(iter(train_dl))
print(f"{len(train_dl.dataset)} train / {len(val_dl.dataset)} val images; batch {tuple(xb.shape)}, "
      f"values in [{xb.min():.2f}, {xb.max():.2f}]")
show_images(xb, yb, train_dl.dataset.classes, title='a training batch of bundled digits at 16 px')

# %%
test_eq(xb.shape, (32, 1, 16, 16))
test_eq(yb.shape, (32,))
assert xb.min() >= -1 and xb.max() <= 1 and xb.min() < -0.99 and xb.max() > 0.99
test_eq(len(train_dl.dataset) + len(val_dl.dataset), 1797)

# %% [markdown]
# ## A setting for each machine
#
# Every lesson runs on a laptop CPU and in CI in seconds, and on a Colab GPU at full size. One call
# picks the device (CUDA, then Apple's MPS, then the CPU) and one picks the preset: `tiny` off CUDA
# (the bundled digits at 16 px), `colab` on a CUDA GPU such as Colab's free T4 (CIFAR-10 at 32 px,
# as in the DDPM paper). `MINDDPM_PRESET=colab` (or `full`, the originals' 64×64 setting) overrides it.

# %%
#| export
PRESETS = ('tiny', 'colab', 'full')

DATA_PRESETS = {  # keyword arguments of `get_dataloaders` for each preset
    'tiny': dict(name='digits', size=16, batch_size=64),                # CPU and CI: seconds per epoch
    'colab': dict(name='cifar10', size=32, batch_size=128, hflip=True), # one T4: CIFAR-10 as in the DDPM paper
    'full': dict(name='cifar10', size=64, batch_size=64, hflip=True),   # the originals' 64×64 resolution
}

def pick_device(device: str = 'auto', # 'auto', or any name `torch.device` takes: 'cpu', 'cuda', 'cuda:1', 'mps'
                ) -> torch.device:
    "`'auto'` picks CUDA, then Apple's MPS, then the CPU. A named device must be usable here, else `ValueError` says what is."
    if device == 'auto':
        if torch.cuda.is_available(): return torch.device('cuda')
        if torch.backends.mps.is_available(): return torch.device('mps')
        return torch.device('cpu')
    try: d = torch.device(device)
    except (RuntimeError, TypeError): raise ValueError(f"Unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if d.type == 'cuda' and (d.index or 0) >= n_cuda:
        raise ValueError(f"device {device!r} is not available: torch sees {n_cuda or 'no'} CUDA GPU{'s' * (n_cuda != 1)} here; "
                         f"use auto or cpu")
    if d.type == 'mps' and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} is not available: torch sees no Apple GPU here; use auto or cpu")
    return d

def pick_preset(device: str = 'auto', # as for `pick_device`; CUDA gives 'colab'; unused if $MINDDPM_PRESET is set
                ) -> str:
    "`$MINDDPM_PRESET` if set, else `'colab'` on a CUDA GPU and `'tiny'` anywhere else (CPU, CI, MPS)."
    preset = os.environ.get('MINDDPM_PRESET') or ('colab' if pick_device(device).type == 'cuda' else 'tiny')
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r} in $MINDDPM_PRESET; use one of {', '.join(PRESETS)}")
    return preset

def cpu_has_bf16() -> bool:
    "Does this CPU have bf16 matrix instructions (AMX-BF16 or AVX512-BF16)? Read from /proc/cpuinfo (Linux; False elsewhere)."
    try: flags = Path('/proc/cpuinfo').read_text()
    except OSError: return False
    return bool(re.search(r'\b(amx_bf16|avx512_bf16)\b', flags))


# %%
device, preset = pick_device(), pick_preset()
print(f"device: {device}; preset: {preset}, data: {DATA_PRESETS[preset]}")
train_dl, val_dl = get_dataloaders(**DATA_PRESETS[preset])
xb, yb = next(iter(train_dl))
show_images(xb[:16], yb[:16], train_dl.dataset.classes, title=f'{preset} preset')

# %%
os.environ['MINDDPM_PRESET'] = 'huge'
test_fail(pick_preset, contains="use one of tiny, colab, full")
del os.environ['MINDDPM_PRESET']
test_eq(pick_device('cpu'), torch.device('cpu'))
test_fail(lambda: pick_device('gpu'), contains="Unknown device 'gpu'")
if not torch.cuda.is_available(): test_fail(lambda: pick_device('cuda'), contains="'cuda' is not available")

# %% [markdown]
# On Colab (or anywhere with internet) this cell downloads CIFAR-10 (170 MB) and shows it; it is
# flagged `slow` because it needs the network, so the tests skip it.

# %%
#| slow
train, val = get_datasets('cifar10', size=32)
show_images(torch.stack([train[i][0] for i in range(16)]), [train[i][1] for i in range(16)], train.classes)

# %% [markdown]
# Bad input stops early with a message that says what was wrong and what is allowed:

# %%
test_fail(lambda: get_dataloaders('cifar100'), contains="Known names: digits, cifar10, mnist, fashion_mnist")
test_fail(lambda: get_dataloaders(size=0), contains='size must be a positive integer')
test_fail(lambda: get_dataloaders(size=31.5), contains='size must be a positive integer')
test_fail(lambda: get_dataloaders(batch_size=-1), contains='batch_size must be a positive integer')
empty = Path(tempfile.mkdtemp())
test_fail(lambda: get_dataloaders(empty), contains='No images found')


# %% [markdown]
# ## Commands that check their input first
#
# The commands of the course (`minddpm_data` here, `minddpm_train` and `minddpm_sample` in lesson 07)
# take numbers and paths from a terminal, where typos and odd values are common: `nan` parses as a float,
# `-4` as an int, and a path can point into a file or at a folder. Each value is checked as it is parsed,
# and each output path is made writable before any work starts, so a mistake costs a second, not a run.

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


# %%
p = argparse.ArgumentParser(prog='demo', exit_on_error=False)
p.add_argument('--w', type=float_arg()); p.add_argument('--size', type=int_arg(1))
for bad in (['--w', 'nan'], ['--w', 'inf'], ['--size', '-4'], ['--size', '2.5']):
    try: p.parse_args(bad)
    except argparse.ArgumentError as e: print(f"{' '.join(bad):14} → {e}")
test_eq(float_arg(0, 1)('0.5'), 0.5)
test_fail(lambda: float_arg(0, open_low=True)('0'), contains='must be greater than 0, got 0')
blocker = Path(tempfile.mkdtemp())/'a_file'
blocker.write_text('in the way')
test_fail(lambda: writable_dir(blocker/'run'), contains='is a file')
test_fail(lambda: writable_file(blocker.parent/'grid', ('.png',)), contains='must end in one of .png')
test_fail(lambda: writable_file(blocker.parent, ('.png',)), contains='is a folder')
test_eq(writable_file(blocker.parent/'new'/'grid.png', ('.png',)).parent.is_dir(), True)


# %% [markdown]
# ## The `minddpm_data` command
#
# `minddpm_data` loads a dataset exactly as training will, prints what it found (and, for an image
# folder, names every file it leaves out), and saves a labelled grid: a quick check of a new image
# folder before a long run.
#
# ```sh
# minddpm_data --dataset digits --size 16 --out digits.png
# minddpm_data --dataset ~/photos/landscapes --size 64
# ```

# %%
#| export
def minddpm_data(argv=None): # command-line arguments as a list of strings; None reads `sys.argv[1:]`
    "Entry point of `minddpm_data`: load a dataset as training would, summarise it and save a labelled grid."
    p = argparse.ArgumentParser(prog='minddpm_data', description=minddpm_data.__doc__)
    p.add_argument('--dataset', default='digits',
                   help=f"one of {', '.join(DATASETS)}, or a folder with one sub-folder of images per class (default: digits)")
    p.add_argument('--size', type=int_arg(1), default=32, help='image side in pixels (default: 32)')
    p.add_argument('--n', type=int_arg(1), default=32, help='images in the grid (default: 32)')
    p.add_argument('--val-frac', type=float_arg(0, 1, open_low=True, open_high=True), default=0.1,
                   help='share of an image folder held out for validation (default: 0.1; at least one image)')
    p.add_argument('--root', default=None, help='download folder for torchvision sets (default: $MINDDPM_DATA or ./data)')
    p.add_argument('--out', default='minddpm_data.png', help='where to save the grid, a .png (default: minddpm_data.png)')
    args = p.parse_args(argv)
    with cli_warnings('minddpm_data'):
        try:
            out = writable_file(args.out, image_suffixes())
            train, val = get_datasets(args.dataset, args.size, val_frac=args.val_frac, root=args.root)
        except (ValueError, FileNotFoundError, RuntimeError) as e: p.exit(2, f"minddpm_data: error: {e}\n")
    x, y = train[0]
    print(f"{args.dataset}: {len(train):,} train / {len(val):,} validation images, {len(train.classes)} classes, "
          f"image {tuple(x.shape)} in [-1, 1]")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:args.n].tolist()
    show_images(torch.stack([train[i][0] for i in idx]), [train[i][1] for i in idx], train.classes)
    plt.savefig(out, dpi=80)
    plt.close('all')
    print(f"saved a grid of {len(idx)} training images to {out}")


# %%
out = Path('_minddpm_data_demo.png')
minddpm_data(['--size', '16', '--n', '8', '--out', str(out)])
assert out.stat().st_size > 1000
out.unlink()
