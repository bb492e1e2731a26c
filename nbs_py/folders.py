# %%
#| default_exp folders

# %% [markdown]
# # Image folders
# > Any folder of class sub-folders as it arrives from the wild: one rule for what counts, every image decoded once before training with its true brightness, and every file left out named

# %%
#| export
from __future__ import annotations
import os, warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

# %%
#| hide
from fastcore.test import *
import shutil, tempfile
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image as PILImage
from torchvision.utils import save_image
from minddpm.data import load_bundled, resize_uint8, show_images

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it

# %% [markdown]
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
# written by an operating system is not there at all. `scan_folder` applies it:

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

# %%
[is_hidden(p) for p in ('cats/0001.png', 'cats/._0001.png', '.ipynb_checkpoints/0001.png', '__MACOSX/cats/0001.png')]

# %% [markdown]
# ## Decoding with the true brightness
#
# Pillow's `convert('RGB')` clips 16-bit greyscale (0…65535) at 255, and drops transparency; `load_rgb`
# scales the first and composites the second on white, as a browser shows it. Every other mode (palette,
# 1-bit, CMYK, YCbCr, LAB, …) goes through Pillow's own conversion, which is right for them.

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

# %% [markdown]
# Four sevens stored in modes that a plain `convert('RGB')` gets wrong (written in a hidden cell): a GIF,
# a 1-bit PNG, a 16-bit greyscale PNG, and black ink on a transparent PNG. Above, what Pillow's plain
# `convert('RGB')` makes of them (as torchvision's loader does); below, what `load_rgb` makes of them.

# %%
#| hide
digits = load_bundled()
seven = resize_uint8(digits['images'][digits['labels'] == 7][:4], 32)[:, 0].numpy()
odd_dir = Path(tempfile.mkdtemp())/'class_7b'
odd_dir.mkdir()
PILImage.fromarray(seven[0].astype('uint16') * 257).save(odd_dir/'deep.png')              # 16-bit greyscale
PILImage.fromarray(seven[1]).convert('P').save(odd_dir/'anim.gif')                        # a GIF
rgba = PILImage.new('RGBA', (32, 32), 'black')
rgba.putalpha(PILImage.fromarray(seven[2]))                                                # black ink on transparent paper
rgba.save(odd_dir/'ink.png')
PILImage.fromarray(seven[3]).convert('1').save(odd_dir/'bilevel.png')                      # 1-bit

# %%
odd = sorted(odd_dir.iterdir())
fig, axs = plt.subplots(2, len(odd), figsize=(1.3 * len(odd), 3))
for j, f in enumerate(odd):
    with PILImage.open(f) as im: naive, mode = im.convert('RGB'), im.mode
    for i, (img, how) in enumerate(((naive, "convert('RGB')"), (load_rgb(f), 'load_rgb'))):
        axs[i, j].imshow(img, interpolation='nearest'); axs[i, j].set_xticks([]); axs[i, j].set_yticks([])
        if j == 0: axs[i, j].set_ylabel(how, fontsize=8)
    axs[0, j].set_title(f"{f.name}\n{mode}", fontsize=8)
fig.tight_layout()

# %%
#| hide
with PILImage.open(odd_dir/'deep.png') as im: test_eq(im.mode, 'I;16')
test_eq(torch.tensor(np.array(load_rgb(odd_dir/'deep.png')))[..., 0], torch.tensor(seven[0]))  # 16-bit: same brightness
with PILImage.open(odd_dir/'ink.png') as im: test_eq(np.asarray(im.convert('RGB')).max(), 0)  # alpha dropped: black on black
assert np.asarray(load_rgb(odd_dir/'ink.png')).min(-1).max() == 255     # composited on white paper

# %% [markdown]
# ## A whole folder, read once
#
# `read_folder` **decodes every image once, before training**, at the training size, into one uint8 tensor
# like the other datasets of lesson 00. The checks that need no decoding come first, so a folder with no
# images or an empty class is refused in a moment. A file that cannot be decoded is named by its path and left
# out, with one warning that lists them all; a class left with no images is refused. Nothing can fail
# mid-run, and each step reads bytes from memory instead of decoding files (at 64 px, 10,000 colour images
# take 123 MB).

# %%
#| export
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

# %%
#| hide
#| export
def _listing(paths, limit: int = 10) -> str:
    "`paths` as one line, the first `limit` of them named."
    shown = ', '.join(map(str, paths[:limit]))
    return shown + (f", and {len(paths) - limit} more" if len(paths) > limit else '')

def _count(n: int, noun: str) -> str: return f"{n:,} {noun}{'s' * (n != 1)}"

# %%
#| export
def read_folder(path,      # a folder with one sub-folder of images per class
                size: int, # side of the square images, in pixels: the short side is resized to it, the centre cropped
                ) -> tuple[torch.Tensor, torch.Tensor, list, list]:
    """Every image of the folder at `path` decoded once: (uint8 images (N, 3, size, size), int64 labels (N,), class names,
    the N files). Raises `ValueError` for a folder without images, a class without images, or a class whose every image
    fails to decode; warns once for each kind of file it leaves out, naming them."""
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
    return images, labels, scan.classes, [scan.files[i] for i in kept]

# %% [markdown]
# Here is a folder the way it arrives from the wild: 200 of the bundled digits as PNG files, one folder per
# class, and, added by a hidden cell, Jupyter's `.ipynb_checkpoints/`, Finder's `.DS_Store`, an AppleDouble
# `._0000.png`, a PNG cut off half-way (`class_1/broken.png`), a `notes.txt`, and the four sevens above as
# `class_7b`. Reading it warns once for each kind of file it leaves out, naming them, and loses nothing else:

# %%
#| hide
wild = Path(tempfile.mkdtemp())/'wild'
for i in range(200):
    lbl = int(digits['labels'][i])
    (wild/f'class_{lbl}').mkdir(parents=True, exist_ok=True)
    save_image(digits['images'][i].float() / 255, wild/f'class_{lbl}'/f'{i:04d}.png')
(wild/'.ipynb_checkpoints').mkdir()                                   # Jupyter's, empty
(wild/'.DS_Store').write_bytes(b'\x00\x00\x00\x01Bud1')                # Finder's
(wild/'class_0'/'._0000.png').write_bytes(b'\x00\x05\x16\x07 AppleDouble')   # macOS's twin of 0000.png
good = (wild/'class_1'/'0001.png').read_bytes()
(wild/'class_1'/'broken.png').write_bytes(good[:len(good) // 2])       # a download that stopped half-way
(wild/'class_1'/'notes.txt').write_text('scanned on Tuesday')
shutil.copytree(odd_dir, wild/'class_7b')

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    images, labels, classes, files = read_folder(wild, 16)
for w in caught: print('warning:', str(w.message).replace(str(wild), '…/wild'))
test_eq(len(files), 200 + 4)            # every real image, and only those
first = [labels.tolist().index(k) for k in range(len(classes))]   # the first image of each class
show_images(images[first], labels[first], classes, ncols=6, title=f'{len(files)} images in {len(classes)} classes: the first of each')

# %%
#| hide
test_eq(len(caught), 2)                              # notes.txt; broken.png, named
assert 'broken.png' in str(caught[1].message) and 'notes.txt' in str(caught[0].message)
test_eq(images.shape, (204, 3, 16, 16)); test_eq(images.dtype, torch.uint8)
test_fail(lambda: load_rgb(wild/'class_1'/'broken.png'), contains='truncated')
test_eq(classes, sorted([f'class_{k}' for k in range(10)] + ['class_7b']))
assert not [f for f in scan_folder(wild).files if is_hidden(f.relative_to(wild))]
empty = Path(tempfile.mkdtemp())
test_fail(lambda: read_folder(empty, 16), contains='No images found')
