"""Image folders as users really have them: files the system wrote, half-written downloads, GIFs, every image mode
Pillow opens, and too few images. One rule decides what an image, a class and a hidden file are, for every check
and for the loader; unreadable files are named and left out before any training; brightness is kept."""
import io, subprocess, sys, warnings

import numpy as np
import pytest
import torch
from PIL import Image

from minddpm.data import get_datasets, load_rgb, scan_folder
from minddpm.training import load_checkpoint

def digit_folder(root, per_class=20, classes=('a', 'b'), size=12):
    "`per_class` distinct greyscale PNGs in each class folder."
    for k, c in enumerate(classes):
        (root/c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((size, size), 10 * i + 5 * k, np.uint8)).save(root/c/f'{i:04d}.png')
    return root

def load(root, **kw):
    "The two splits of `root` at 8 px, and the messages of the warnings raised."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        train, val = get_datasets(root, size=8, **kw)
    return train, val, [str(w.message) for w in caught]

def cli(name, *args, cwd):
    code = f'from minddpm.cli import {name}; {name}()'
    return subprocess.run([sys.executable, '-c', code, *args], cwd=cwd, capture_output=True, text=True, timeout=600)

# --- what counts: one rule for the checks and the loader ----------------------------------------

def test_files_the_system_wrote_are_not_there(tmp_path):
    root = digit_folder(tmp_path/'set')
    (root/'a'/'._0000.png').write_bytes(b'\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ')   # AppleDouble
    (root/'.DS_Store').write_bytes(b'\x00\x00\x00\x01Bud1')
    (root/'.ipynb_checkpoints').mkdir()                                                    # empty: no class
    (root/'b'/'.ipynb_checkpoints').mkdir()
    Image.new('L', (12, 12)).save(root/'b'/'.ipynb_checkpoints'/'0000-checkpoint.png')    # not an image of b
    (root/'__MACOSX'/'a').mkdir(parents=True)
    (root/'__MACOSX'/'a'/'._0001.png').write_bytes(b'\x00\x05\x16\x07')
    (root/'a'/'Thumbs.db').write_bytes(b'\xd0\xcf\x11\xe0')
    scan = scan_folder(root)
    assert scan.classes == ['a', 'b'] and len(scan.files) == 40 and not scan.others and not scan.loose
    train, val, said = load(root)
    assert len(train) + len(val) == 40 and train.classes == ['a', 'b'] and said == []

def test_only_hidden_or_system_files_in_the_root_still_make_a_dataset(tmp_path):
    "An empty .ipynb_checkpoints/ in the root once made minddpm_data crash and minddpm_train refuse the folder."
    root = digit_folder(tmp_path/'set', per_class=5)
    (root/'.ipynb_checkpoints').mkdir()
    r = cli('minddpm_data', '--dataset', str(root), '--size', '8', '--out', 'grid.png', cwd=tmp_path)
    assert r.returncode == 0 and '9 train / 1 validation images, 2 classes' in r.stdout, r.stderr
    r = cli('minddpm_train', '--dataset', str(root), '--img-size', '8', '--steps', '2', '--batch-size', '4', '--out', 'run',
            cwd=tmp_path)
    assert r.returncode == 0 and load_checkpoint(tmp_path/'run'/'checkpoint.pt')['step'] == 2, r.stderr[-2000:]

def test_gifs_are_images_for_the_check_and_the_loader(tmp_path):
    root = tmp_path/'set'
    for c in ('only_gifs', 'mixed'):
        (root/c).mkdir(parents=True)
        for i in range(3): Image.new('P', (10, 10), i).save(root/c/f'{i}.gif')
    Image.new('RGB', (10, 10), 'red').save(root/'mixed'/'red.png')
    train, val, said = load(root)
    assert len(train) + len(val) == 7 and said == []           # every GIF, the PNG beside them too
    assert sorted(p.name for p in train.files + val.files) == ['0.gif'] * 2 + ['1.gif'] * 2 + ['2.gif'] * 2 + ['red.png']

def test_files_that_are_not_images_are_named_and_left_out(tmp_path):
    root = digit_folder(tmp_path/'set', per_class=4)
    (root/'a'/'notes.txt').write_text('not an image')
    (root/'b'/'photo.heic').write_bytes(b'\x00\x00\x00\x18ftypheic')
    Image.new('L', (12, 12)).save(root/'loose.png')
    train, val, said = load(root)
    assert len(train) + len(val) == 8
    assert any('loose.png' in m and 'outside any class folder' in m for m in said), said
    assert any('notes.txt' in m and 'photo.heic' in m for m in said), said

def test_a_class_without_images_is_refused_by_name(tmp_path):
    root = digit_folder(tmp_path/'set', per_class=3)
    (root/'c').mkdir()
    (root/'c'/'._0.png').write_bytes(b'\x00\x05\x16\x07')    # hidden: c holds no image
    with pytest.raises(ValueError, match=r'Class folders without images in .*: c; remove them or add images'):
        get_datasets(root, size=8)

# --- unreadable files: found before training, named, left out ------------------------------------

def test_a_half_written_png_is_named_and_left_out_before_training(tmp_path):
    root = digit_folder(tmp_path/'set', per_class=20)
    good = (root/'a'/'0003.png').read_bytes()
    big = io.BytesIO(); Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(big, 'PNG')
    (root/'a'/'0003.png').write_bytes(big.getvalue()[:len(big.getvalue()) // 2])     # one of 40, cut half-way
    train, val, said = load(root)
    assert len(train) + len(val) == 39 and len(good) > 0
    assert len(said) == 1 and str(root/'a'/'0003.png') in said[0] and 'truncated' in said[0], said

def test_training_on_a_folder_with_broken_files_warns_once_and_keeps_its_run(tmp_path):
    "An AppleDouble file and a half-written PNG once killed the run at step 1 and step 3, with no checkpoint."
    root = digit_folder(tmp_path/'set', per_class=20)
    (root/'a'/'._0000.png').write_bytes(b'\x00\x05\x16\x07')
    (root/'b'/'0007.png').write_bytes((root/'b'/'0007.png').read_bytes()[:40])
    (root/'b'/'0008.png').write_bytes(b'<html>404 Not Found</html>')                   # a failed download, named .png
    r = cli('minddpm_train', '--dataset', str(root), '--img-size', '8', '--steps', '6', '--batch-size', '8', '--out', 'run',
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [l for l in r.stderr.splitlines() if l.startswith('minddpm_train: warning:')]
    assert len(lines) == 1 and '0007.png' in lines[0] and '0008.png' in lines[0] and '._0000' not in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr and load_checkpoint(tmp_path/'run'/'checkpoint.pt')['step'] == 6

def test_a_class_whose_every_image_is_broken_is_refused(tmp_path):
    root = digit_folder(tmp_path/'set', per_class=3)
    for f in (root/'b').iterdir(): f.write_bytes(b'not a png')
    with pytest.raises(ValueError, match='Every image of class b .* failed to decode'):
        load(root)

# --- too few images -----------------------------------------------------------------------------

def test_four_images_train_on_three_and_hold_one_out(tmp_path):
    root = digit_folder(tmp_path/'set', per_class=2)
    train, val, _ = load(root)
    assert (len(train), len(val)) == (3, 1)
    r = cli('minddpm_train', '--dataset', str(root), '--img-size', '8', '--steps', '2', '--out', 'run', cwd=tmp_path)
    said = [l for l in r.stderr.splitlines() if 'fewer than a batch' in l]
    assert r.returncode == 0 and said == ['minddpm_train: warning: the training split holds 3 images, fewer than a batch of 64: '
                                          'each step takes 3, the whole split'], r.stderr[-2000:]
    assert torch.load(tmp_path/'run'/'checkpoint.pt', weights_only=True)['config']['batch_size'] == 3   # resumes as it ran
    r = cli('minddpm_train', '--dataset', str(root), '--img-size', '8', '--steps', '2', '--batch-size', '2', '--out', 'run2',
            cwd=tmp_path)
    assert r.returncode == 0 and 'fewer than a batch' not in r.stderr, r.stderr[-2000:]

def test_one_image_is_refused_with_the_real_minimum(tmp_path):
    root = digit_folder(tmp_path/'set', per_class=1, classes=('a',))
    with pytest.raises(ValueError, match='1 image cannot be split: .*at least 2 images'): load(root)
    r = cli('minddpm_train', '--dataset', str(root), '--steps', '2', '--out', 'run', cwd=tmp_path)
    assert r.returncode == 2 and 'at least 2 images' in r.stderr and 'val_frac' not in r.stderr, r.stderr

# --- every mode Pillow opens arrives with its true brightness -----------------------------------

GREY = np.array([[0, 64], [128, 255]], np.uint8)   # four brightness levels, 0…255

def write(path, img):
    # a YCbCr TIFF LZW-compressed: Pillow 12 (which Gradio's pin selects) cannot read back its own uncompressed ones
    img.save(path, **({'compression': 'tiff_lzw'} if img.mode == 'YCbCr' and path.suffix == '.tif' else {})); return path

@pytest.mark.parametrize('name,make', [
    ('l.png', lambda: Image.fromarray(GREY)),
    ('i16.png', lambda: Image.fromarray(GREY.astype(np.uint16) * 257)),                     # 16-bit PNG: mode I;16
    ('i16.tif', lambda: Image.fromarray(GREY.astype(np.uint16) * 257)),
    ('i32.tif', lambda: Image.fromarray(GREY.astype(np.int32) * 257)),                      # mode I
    ('f.tif', lambda: Image.fromarray(GREY.astype(np.float32) / 255)),                      # mode F in [0, 1]
    ('p.png', lambda: Image.fromarray(GREY).convert('P')),
    ('p.gif', lambda: Image.fromarray(GREY).convert('P')),
    ('rgb.jpg', lambda: Image.fromarray(GREY).convert('RGB')),
    ('cmyk.tif', lambda: Image.fromarray(GREY).convert('CMYK')),
    ('ycbcr.tif', lambda: Image.fromarray(GREY).convert('YCbCr')),
    ('opaque_rgba.png', lambda: Image.fromarray(GREY).convert('RGBA')),
    ('opaque_la.png', lambda: Image.fromarray(GREY).convert('LA')),
    ('rgb.webp', lambda: Image.fromarray(GREY).convert('RGB')),
    ('rgb.bmp', lambda: Image.fromarray(GREY).convert('RGB')),
])
def test_every_mode_keeps_its_brightness(tmp_path, name, make):
    big = make().resize((32, 32), Image.NEAREST)                 # 16×16 blocks, so lossy formats keep each level
    got = np.array(load_rgb(write(tmp_path/name, big))).astype(float)
    assert got.shape == (32, 32, 3)
    blocks = got.reshape(2, 16, 2, 16, 3)[:, 4:12, :, 4:12].mean((1, 3, 4))   # each block's centre
    assert np.abs(blocks - GREY).max() <= (3 if name.endswith(('.jpg', '.webp')) else 0.5), blocks

def test_bilevel_images_are_black_and_white(tmp_path):
    got = np.array(load_rgb(write(tmp_path/'one.png', Image.fromarray(GREY).convert('1'))))
    assert got[0, 0].tolist() == [0, 0, 0] and got[1, 1].tolist() == [255, 255, 255]

@pytest.mark.parametrize('mode', ['RGBA', 'LA', 'P'])
def test_transparent_pixels_show_the_white_paper(tmp_path, mode):
    "Black ink on transparent black paper: Pillow's convert('RGB') shows all black; the paper is white."
    if mode == 'P':                                             # palette: 0 opaque black, 1 transparent black
        img = Image.new('P', (4, 4), 1); img.putpalette([0, 0, 0] * 2); img.putpixel((0, 0), 0)
        img.save(tmp_path/'p.png', transparency=1)
    else:
        img = Image.new('RGBA', (4, 4), (0, 0, 0, 0)); img.putpixel((0, 0), (0, 0, 0, 255))
        img.convert(mode).save(tmp_path/'p.png')
    got = np.array(load_rgb(tmp_path/'p.png'))
    assert got[0, 0].tolist() == [0, 0, 0] and got[2, 2].tolist() == [255, 255, 255], got[..., 0]

def test_exif_rotation_is_applied(tmp_path):
    img = Image.new('RGB', (6, 3), 'black')
    img.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif(); exif[0x0112] = 6                        # orientation: rotate 90° clockwise to view
    img.save(tmp_path/'phone.jpg', exif=exif, quality=100)
    got = load_rgb(tmp_path/'phone.jpg')
    assert got.size == (3, 6) and np.array(got)[0, 2].min() > 200
