# %%
#| default_exp data

# %% [markdown]
# # Data
# > The bundled digits, CIFAR-10, MNIST, FashionMNIST or any folder of images: resized, scaled to [-1, 1], split, and shown; and the data preset for your machine

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/00_data.ipynb)
# This lesson has no GPU-only cells: it ran top to bottom in 5 seconds on a 2-core CPU (measured); a Colab runtime is no slower.

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
import os
from importlib import resources
from numbers import Integral, Real
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from minddpm.device import PRESETS, cpu_has_bf16, pick_device, pick_preset
from minddpm.folders import IMAGE_EXTENSIONS, FolderScan, decode_images, is_hidden, load_rgb, read_folder, scan_folder

# %%
#| hide
from fastcore.test import *
from nbdev.showdoc import show_doc
from torchvision.utils import save_image
import tempfile

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)              # the same pictures on every run
import warnings
warnings.showwarning = lambda message, *args, **kwargs: print(f"warning: {message}")   # one line each, as the commands print them

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # 'colab' sizes on a CUDA GPU, 'tiny' elsewhere


# %% [markdown]
# A diffusion model learns from nothing but images (and, for a conditional model, their labels).
# This lesson builds the one function every later lesson calls to get them, `get_dataloaders`, and
# settles three questions on the way: which data we can use offline, what numeric range the pixels
# should live in, and how to hold out a validation set that the model never trains on. It ends with
# the device and the preset every later lesson runs with.
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
#| exports
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
#| hide
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
test_eq(to_uint8(to_unit_range(b)), b)                           # exact both ways
x = torch.rand(100_000) * 2 - 1
exact, truncated, rounded = (x + 1) * 127.5, ((x + 1) * 127.5).to(torch.uint8).float(), to_uint8(x).float()
print(f"mean error, truncating: {(truncated - exact).mean():+.3f} levels; rounding: {(rounded - exact).mean():+.3f}")

# %%
#| hide
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
#| hide
#| export
def _check_positive_int(value, name: str, what: str):
    "Raise `ValueError` unless `value` is a positive int (not a bool, not a float such as 32.0), naming `name` and `what` it is."
    if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer ({what}), got {value!r}")


# %%
#| exports
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
#| hide
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
#| exports
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
#| hide
#| export
def _check_split(n: int, val_frac: float):
    "Raise `ValueError` unless `val_frac` is a share strictly between 0 and 1 and `n` items can give one to each side."
    if isinstance(val_frac, bool) or not isinstance(val_frac, Real) or not 0 < val_frac < 1:  # NaN fails `0 < val_frac`
        raise ValueError(f"val_frac must be a share strictly between 0 and 1, got {val_frac!r}")
    if n < 2:
        raise ValueError(f"{n} image{'s' * (n != 1)} cannot be split: training and validation need at least one each, "
                         f"so a dataset needs at least 2 images")


# %%
#| exports
def split_indices(n: int,          # number of items, indexed `range(n)`; at least 2
                  val_frac: float,  # share held out, strictly between 0 and 1; rounded, and at least one item each side
                  seed: int = 0,    # seeds the random permutation
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    "Disjoint (train, val) index tensors: a seeded random `val_frac` of `range(n)` is held out, at least one item, never all."
    _check_split(n, val_frac)
    n_val = min(max(round(n * val_frac), 1), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]


# %% [markdown]
# Each class gives roughly a tenth of its images to the held-out split, give or take the luck of a random
# draw, and no image is on both sides:

# %%
tr, va = split_indices(len(digits['labels']), 0.1)
test_eq(set(tr.tolist()) & set(va.tolist()), set())             # held out means held out
share = digits['labels'][va].bincount(minlength=10) / digits['labels'].bincount()
fig, ax = plt.subplots(figsize=(5, 1.8))
ax.bar(digits['classes'], share); ax.axhline(0.1, color='k', ls='--', lw=1)
ax.set(xlabel='class', ylabel='share held out', title=f'{len(tr):,} train / {len(va)} held out');

# %%
#| hide
test_eq(len(tr) + len(va), 1797)
test_eq(split_indices(1797, 0.1)[1], va)  # the same seed gives the same split
test_eq([len(i) for i in split_indices(4, 0.1)], [3, 1])   # a tiny set still holds one image out
test_fail(lambda: split_indices(1, 0.1), contains='at least 2 images')
test_fail(lambda: split_indices(10, float('nan')), contains='strictly between 0 and 1')


# %% [markdown]
# ## Showing images
#
# `show_images` draws a grid with each image's class name (or any string) as its title. It takes floats in [-1, 1]
# (what the loaders and, later, the samplers return) or uint8.

# %%
#| exports
def show_images(images: torch.Tensor, # (B, C, H, W) floats in [-1, 1], or uint8
                labels=None,          # B titles: class indices (named by `classes`), or strings drawn as they are
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
            lbl = labels[i] if isinstance(labels[i], str) else int(labels[i])
            ax.set_title(classes[lbl] if classes is not None and not isinstance(lbl, str) else str(lbl), fontsize=8)
    if title: fig.suptitle(title)
    fig.tight_layout()


# %%
ds = ImageTensorDataset(resize_uint8(digits['images'], 16), digits['labels'], digits['classes'])
xb = torch.stack([ds[i][0] for i in range(16)])
show_images(xb, [ds[i][1] for i in range(16)], ds.classes)

# %% [markdown]
# ## Any folder of images
#
# The originals trained on a folder of landscape photos, one sub-folder per class. Any such folder works
# here. Folders from the wild hold more than images, though: files the operating system wrote
# (`.DS_Store`, `Thumbs.db`, `.ipynb_checkpoints/`), downloads that stopped half-way, and modes the usual
# loader gets wrong (16-bit greyscale comes out white, transparent PNGs lose their paper). `read_folder`
# (page *Image folders*, `minddpm.folders`) handles them all before training starts: one rule decides what
# a class and an image are, every image is decoded once with its true brightness into one uint8 tensor, and
# each file it leaves out is named in a warning. What is left is the same as for the digits: split, and wrap
# each side in an `ImageTensorDataset`.

# %%
#| exports
def _folder_datasets(path, size: int, val_frac: float, seed: int, hflip: bool):
    "Train and val `ImageTensorDataset`s of the folder at `path`, decoded once at `size` by `read_folder`, split by `split_indices`."
    images, labels, classes, files = read_folder(path, size)
    tr, va = split_indices(len(files), val_frac, seed)
    return tuple(ImageTensorDataset(images[i], labels[i], classes, hflip=hflip and train, files=[files[j] for j in i.tolist()])
                 for i, train in ((tr, True), (va, False)))


# %% [markdown]
# To see it work offline, write some of the digits out as PNG files, one folder per class, add a download
# that stopped half-way and a note, and load the folder back at 16 px:

# %%
folder = Path(tempfile.mkdtemp())/'digits_png'
for i in range(200):
    lbl = int(digits['labels'][i])
    (folder/f'class_{lbl}').mkdir(parents=True, exist_ok=True)
    save_image(digits['images'][i].float() / 255, folder/f'class_{lbl}'/f'{i:04d}.png')
(folder/'class_1'/'broken.png').write_bytes((folder/'class_1'/'0001.png').read_bytes()[:100])
(folder/'class_1'/'notes.txt').write_text('scanned on Tuesday')
ftrain, fval = _folder_datasets(folder, 16, 0.2, 0, False)
print(f"{len(ftrain)} train / {len(fval)} held out, classes {ftrain.classes[:3]} …")
show_images(torch.stack([ftrain[i][0] for i in range(8)]), [ftrain[i][1] for i in range(8)], ftrain.classes)

# %%
#| hide
x, y = ftrain[0]
test_eq(x.shape, (3, 16, 16))  # PNGs come back as RGB
assert -1 <= x.min() <= x.max() <= 1
test_eq(len(ftrain) + len(fval), 200)                 # every real image, and only those
test_eq(set(ftrain.files) & set(fval.files), set())   # held out means held out

# %% [markdown]
# ## One function for every source
#
# CIFAR-10, MNIST and FashionMNIST come from torchvision with `download=True` into `root`
# (`$MINDDPM_DATA`, else `./data`: on Colab that is `/content/data`). Their images are read once into one
# uint8 tensor, so they go through exactly the same in-memory path as the digits, and their official test
# split is the held-out one. Without internet the download fails, and the error says how to carry on
# with the bundled set.
#
# `get_datasets` picks the source by name, or treats the name as a folder path; `get_dataloaders`
# wraps the two splits in `DataLoader`s. The training loader shuffles with a seeded generator, so a
# run is reproducible.

# %%
#| hide
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
    if root.exists() and not root.is_dir():
        raise ValueError(f"root {root} is a file: it must be the folder that holds {name!r}, or will once downloaded "
                         f"(default: $MINDDPM_DATA, else ./data)")
    try: ds = cls(root, train=train, download=download)
    except (OSError, RuntimeError) as e:
        raise RuntimeError(f"Could not load {name!r} from {root}/ ({type(e).__name__}: {e}). "
                           f"Without internet, use the bundled dataset: get_dataloaders('digits') (--dataset digits on the "
                           f"command line); or put the files in {root}/ (in Python, with download=False).") from e
    data = torch.as_tensor(ds.data)  # CIFAR: (N, H, W, 3) numpy; MNIST: (N, H, W) tensor
    images = data.permute(0, 3, 1, 2) if data.ndim == 4 else data[:, None]
    return images.contiguous(), torch.as_tensor(ds.targets), list(ds.classes)

def _not_a_dataset(name) -> Exception:
    "The error for a `name` that is neither a dataset's name nor a folder: what it is instead, and what would work."
    if Path(name).exists(): return ValueError(f"{name} is a file; pass a folder with one sub-folder of images per class")
    if os.sep in str(name) or '/' in str(name): return FileNotFoundError(f"no folder at {name}: pass a folder with one sub-folder "
                                                                          f"of images per class, or one of {', '.join(DATASETS)}")
    return ValueError(f"Unknown dataset {name!r}. Known names: {', '.join(DATASETS)}; "
                      f"or pass the path of a folder with one sub-folder of images per class.")


# %%
show_doc(default_root)

# %%
#| exports
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
    raise _not_a_dataset(name)


# %%
#| exports
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
#| hide
test_eq(xb.shape, (32, 1, 16, 16))
test_eq(yb.shape, (32,))
assert xb.min() >= -1 and xb.max() <= 1 and xb.min() < -0.99 and xb.max() > 0.99
test_eq(len(train_dl.dataset) + len(val_dl.dataset), 1797)

# %% [markdown]
# Bad input stops early with a message that says what was wrong and what is allowed:

# %%
try: get_dataloaders('cifar100')
except ValueError as e: print(e)

# %%
#| hide
test_fail(lambda: get_dataloaders('cifar100'), contains="Known names: digits, cifar10, mnist, fashion_mnist")
test_fail(lambda: get_dataloaders(size=0), contains='size must be a positive integer')
test_fail(lambda: get_dataloaders(size=31.5), contains='size must be a positive integer')
test_fail(lambda: get_dataloaders(batch_size=-1), contains='batch_size must be a positive integer')
empty = Path(tempfile.mkdtemp())
test_fail(lambda: get_dataloaders(empty), contains='No images found')

# %% [markdown]
# On Colab (or anywhere with internet) this cell downloads CIFAR-10 (170 MB) and shows it; it is
# flagged `slow` because it needs the network, so the tests skip it.

# %%
#| slow
train, val = get_datasets('cifar10', size=32)
show_images(torch.stack([train[i][0] for i in range(16)]), [train[i][1] for i in range(16)], train.classes)

# %% [markdown]
# ## Your machine
#
# Every lesson runs on a laptop CPU and in CI in seconds, and on a Colab GPU at full size. `pick_device`
# chooses the device once (CUDA, then Apple's MPS, then the CPU) and `pick_preset` the setting that fits it:
# `tiny` off CUDA, `colab` on a CUDA GPU such as Colab's free T4; `MINDDPM_PRESET=colab` (or `full`, the
# originals' 64×64 setting) overrides it. They, and the precision of the forward pass, are on the page
# *Device and precision* (`minddpm.device`). Each preset names the data it trains on:

# %%
#| exports
DATA_PRESETS = {  # keyword arguments of `get_dataloaders` for each preset
    'tiny': dict(name='digits', size=16, batch_size=64),                # CPU and CI: seconds per epoch
    'colab': dict(name='cifar10', size=32, batch_size=128, hflip=True), # one T4: CIFAR-10 as in the DDPM paper
    'full': dict(name='cifar10', size=64, batch_size=64, hflip=True),   # the originals' 64×64 resolution
}

# %%
device, preset = pick_device(), pick_preset()
print(f"device: {device}; preset: {preset}, data: {DATA_PRESETS[preset]}")
train_dl, val_dl = get_dataloaders(**DATA_PRESETS[preset])
xb, yb = next(iter(train_dl))
show_images(xb[:16], yb[:16], train_dl.dataset.classes, title=f'{preset} preset')
