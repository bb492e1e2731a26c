"""Every loader of `minddpm.data`, and every bad input, each with the message a user reads.

Nothing here downloads: the torchvision sets are written as small files in their real on-disk
formats, and a download is made to fail the way it fails offline."""
import pickle, re, struct, subprocess, sys, urllib.error, urllib.request

import pytest
import torch
from PIL import Image

from minddpm.data import DATASETS, get_dataloaders, get_datasets, load_bundled, show_images

# --- small torchvision sets in their real formats -------------------------------------------------

def write_idx(path, tensor):
    "Write a uint8 tensor in the IDX format MNIST and FashionMNIST ship in."
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack('>BBBB', 0, 0, 0x08, tensor.ndim) + struct.pack(f'>{tensor.ndim}I', *tensor.shape)
    path.write_bytes(header + tensor.numpy().tobytes())

def fake_mnist(root, folder, n_train=30, n_test=12):
    g = torch.Generator().manual_seed(0)
    for split, n in (('train', n_train), ('t10k', n_test)):
        write_idx(root/folder/'raw'/f'{split}-images-idx3-ubyte', torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g))
        write_idx(root/folder/'raw'/f'{split}-labels-idx1-ubyte', torch.arange(n, dtype=torch.uint8) % 10)

CIFAR_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']

def fake_cifar10(root, monkeypatch, n_per_batch=4, n_test=6):
    "CIFAR-10's pickled batches; md5 checks are switched off because the bytes are ours."
    d = root/'cifar-10-batches-py'
    d.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    def batch(n): return {'data': torch.randint(0, 256, (n, 3072), dtype=torch.uint8, generator=g).numpy(),
                          'labels': [i % 10 for i in range(n)]}
    for i in range(1, 6): (d/f'data_batch_{i}').write_bytes(pickle.dumps(batch(n_per_batch)))
    (d/'test_batch').write_bytes(pickle.dumps(batch(n_test)))
    (d/'batches.meta').write_bytes(pickle.dumps({'label_names': CIFAR_CLASSES}))
    import torchvision.datasets.cifar as cifar
    monkeypatch.setattr(cifar, 'check_integrity', lambda *a, **k: True)

@pytest.fixture
def offline(monkeypatch):
    "Make every download fail the way it does without a network."
    def refuse(*a, **k): raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(urllib.request, 'urlopen', refuse)

# --- the bundled digits -------------------------------------------------------------------------

def test_bundled_file():
    d = load_bundled()
    assert d['images'].shape == (1797, 1, 8, 8) and d['images'].dtype == torch.uint8
    assert d['labels'].bincount().tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert d['classes'] == [str(i) for i in range(10)]

@pytest.mark.parametrize('size', [8, 16, 32])
def test_digits_loaders(size):
    train_dl, val_dl = get_dataloaders('digits', size=size, batch_size=100)
    xb, yb = next(iter(train_dl))
    assert xb.shape == (100, 1, size, size) and xb.dtype == torch.float32
    assert yb.shape == (100,) and yb.dtype == torch.int64
    assert -1 <= xb.min() < -0.99 and 0.99 < xb.max() <= 1
    assert len(train_dl.dataset) == 1617 and len(val_dl.dataset) == 180
    assert sum(len(y) for _, y in val_dl) == 180  # every held-out image once per pass

def test_digits_split_is_held_out_and_seeded():
    d = load_bundled()
    train, val = get_datasets('digits', size=8)
    # the two splits together are exactly the bundled set, with no image in both
    key = lambda ds: sorted(map(tuple, ds.images.flatten(1).tolist()))
    assert sorted(key(train) + key(val)) == sorted(map(tuple, d['images'].flatten(1).tolist()))
    val_keys = {(tuple(x), int(y)) for x, y in zip(val.images.flatten(1).tolist(), val.labels)}
    train_keys = {(tuple(x), int(y)) for x, y in zip(train.images.flatten(1).tolist(), train.labels)}
    assert not val_keys & train_keys
    assert torch.equal(get_datasets('digits', size=8)[1].images, val.images)              # same seed, same split
    assert not torch.equal(get_datasets('digits', size=8, seed=1)[1].images, val.images)  # another seed, another
    assert len(get_datasets('digits', size=8, val_frac=0.25)[1]) == round(1797 * 0.25)

def test_training_shuffle_is_reproducible():
    first = [next(iter(get_dataloaders(size=8, seed=3)[0]))[1] for _ in range(2)]
    assert torch.equal(*first)

def test_hflip_only_in_training():
    train, val = get_datasets('digits', size=8, hflip=True)
    assert train.hflip and not val.hflip
    torch.manual_seed(0)
    flips = [torch.equal(train[0][0], train.images[0].float().div(127.5).sub(1).flip(-1)) for _ in range(200)]
    assert 60 < sum(flips) < 140  # about half the draws are mirrored
    assert all(torch.equal(val[0][0], val.images[0].float() / 127.5 - 1) for _ in range(20))

# --- torchvision sets, from files on disk --------------------------------------------------------

@pytest.mark.parametrize('name,folder', [('mnist', 'MNIST'), ('fashion_mnist', 'FashionMNIST')])
def test_mnist_like(tmp_path, name, folder):
    fake_mnist(tmp_path, folder)
    train_dl, val_dl = get_dataloaders(name, size=16, batch_size=8, root=tmp_path, download=False)
    xb, yb = next(iter(train_dl))
    assert xb.shape == (8, 1, 16, 16) and -1 <= xb.min() and xb.max() <= 1
    assert len(train_dl.dataset) == 30 and len(val_dl.dataset) == 12  # the official test split is held out
    assert len(train_dl.dataset.classes) == 10

def test_cifar10(tmp_path, monkeypatch):
    fake_cifar10(tmp_path, monkeypatch)
    train, val = get_datasets('cifar10', size=32, root=tmp_path, download=False)
    assert len(train) == 20 and len(val) == 6
    assert train.classes == CIFAR_CLASSES
    x, y = train[0]
    assert x.shape == (3, 32, 32) and y == 0
    # channels survive the HWC → CHW move: pixel (0, 0) of image 0 is bytes 0, 1024 and 2048 of its row
    raw = pickle.loads((tmp_path/'cifar-10-batches-py'/'data_batch_1').read_bytes())['data'][0]
    assert train.images[0, :, 0, 0].tolist() == [raw[0], raw[1024], raw[2048]]
    assert get_datasets('cifar10', size=16, root=tmp_path, download=False)[0][0][0].shape == (3, 16, 16)

def test_dataset_names_are_forgiving(tmp_path):
    fake_mnist(tmp_path, 'FashionMNIST')
    assert len(get_datasets('Fashion-MNIST', size=8, root=tmp_path, download=False)[1]) == 12

def test_root_defaults_to_env(tmp_path, monkeypatch):
    fake_mnist(tmp_path, 'MNIST')
    monkeypatch.setenv('MINDDPM_DATA', str(tmp_path))
    assert len(get_datasets('mnist', size=8, download=False)[0]) == 30

# --- any folder of class sub-folders ------------------------------------------------------------

def image_folder(root, sizes=((40, 30), (30, 50)), per_class=5, classes=('forest', 'sea')):
    for c in classes:
        (root/c).mkdir(parents=True)
        for i in range(per_class):
            Image.new('RGB', sizes[i % len(sizes)], (40 * i, 100, 200)).save(root/c/f'{i}.png')
    return root

def test_folder(tmp_path):
    folder = image_folder(tmp_path/'landscapes')
    (folder/'sea'/'notes.txt').write_text('not an image')
    train_dl, val_dl = get_dataloaders(str(folder), size=24, batch_size=4, val_frac=0.2)
    xb, yb = next(iter(train_dl))
    assert xb.shape == (4, 3, 24, 24) and -1 <= xb.min() and xb.max() <= 1
    assert train_dl.dataset.classes == ['forest', 'sea']
    assert len(train_dl.dataset) == 8 and len(val_dl.dataset) == 2
    assert not set(train_dl.dataset.files) & set(val_dl.dataset.files)
    assert len(set(train_dl.dataset.files) | set(val_dl.dataset.files)) == 10

def test_folder_grayscale_becomes_rgb(tmp_path):
    (tmp_path/'a').mkdir()
    for i in range(4): Image.new('L', (10, 10), 50 * i).save(tmp_path/'a'/f'{i}.png')
    x, _ = get_datasets(tmp_path, size=8, val_frac=0.25)[0][0]
    assert x.shape == (3, 8, 8)

# --- bad input ----------------------------------------------------------------------------------

def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as e: get_dataloaders('cifar100')
    msg = str(e.value)
    assert "Unknown dataset 'cifar100'" in msg and all(n in msg for n in DATASETS) and 'folder' in msg

@pytest.mark.parametrize('name', ['cifar10', 'mnist', 'fashion_mnist'])
def test_failed_download_names_the_bundled_set(tmp_path, offline, name):
    with pytest.raises(RuntimeError) as e: get_dataloaders(name, root=tmp_path/'data')
    msg = str(e.value)
    assert f"Could not load {name!r}" in msg and "get_dataloaders('digits')" in msg and 'download=False' in msg
    assert '--dataset digits on the command line' in msg

def test_a_file_given_as_root_is_refused_before_any_download(tmp_path, offline):
    (tmp_path/'a_file').write_text('not a folder')
    with pytest.raises(ValueError, match=r"root .*a_file is a file: it must be the folder that holds 'mnist'"):
        get_dataloaders('mnist', root=tmp_path/'a_file')

def test_missing_files_without_download(tmp_path):
    with pytest.raises(RuntimeError, match=r"bundled dataset: get_dataloaders\('digits'\)"):
        get_dataloaders('mnist', root=tmp_path, download=False)

def test_folder_without_images(tmp_path):
    with pytest.raises(ValueError, match='No images found in .*one sub-folder per class'): get_dataloaders(tmp_path)
    (tmp_path/'cats').mkdir()
    (tmp_path/'cats'/'readme.txt').write_text('no pictures here')
    with pytest.raises(ValueError, match='No images found'): get_dataloaders(tmp_path)

def test_folder_with_an_empty_class(tmp_path):
    image_folder(tmp_path)
    (tmp_path/'desert').mkdir()
    with pytest.raises(ValueError, match='Class folders without images in .*: desert'): get_dataloaders(tmp_path)

def test_file_instead_of_folder(tmp_path):
    f = tmp_path/'photo.png'
    Image.new('RGB', (4, 4)).save(f)
    with pytest.raises(ValueError, match='is a file; pass a folder'): get_dataloaders(str(f))

@pytest.mark.parametrize('size', [0, -8, 2.5, 32.0, '32', True, None])
def test_size_must_be_a_positive_integer(size):
    with pytest.raises(ValueError, match=f'size must be a positive integer .*got {size!r}'.replace('(', r'\(').replace(')', r'\)')):
        get_dataloaders(size=size)

@pytest.mark.parametrize('batch_size', [0, -1, 1.5])
def test_batch_size_must_be_a_positive_integer(batch_size):
    with pytest.raises(ValueError, match='batch_size must be a positive integer'): get_dataloaders(batch_size=batch_size)

@pytest.mark.parametrize('val_frac', [0, 1, 1.5, -0.1, float('nan'), True, '0.1'])
def test_val_frac_must_be_a_share(val_frac):
    with pytest.raises(ValueError, match='val_frac must be a share strictly between 0 and 1'): get_dataloaders(val_frac=val_frac)

def test_every_split_holds_at_least_one_image():
    assert [len(d) for d in get_datasets('digits', size=8, val_frac=0.0001)] == [1796, 1]

# --- show_images and the command ----------------------------------------------------------------

def test_show_images_titles(monkeypatch):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    x = torch.rand(10, 3, 8, 8) * 2 - 1
    show_images(x, torch.arange(10) % 3, ['a', 'b', 'c'], ncols=4)
    fig = plt.gcf()
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ['a', 'b', 'c', 'a', 'b', 'c', 'a', 'b', 'c', 'a'] and len(fig.axes) == 12
    assert fig.axes[0].get_images()[0].get_array().dtype.name == 'uint8'
    plt.close('all')

def run_cli(*args, cwd):
    return subprocess.run([sys.executable, '-c', 'from minddpm.cli import minddpm_data; minddpm_data()', *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)

def test_cli_saves_a_grid(tmp_path):
    r = run_cli('--size', '16', '--n', '12', '--out', 'grid.png', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'digits: 1,617 train / 180 validation images, 10 classes, image (1, 16, 16)' in r.stdout
    assert Image.open(tmp_path/'grid.png').size[0] > 100

@pytest.mark.parametrize('args,msg', [(['--dataset', 'imagenet'], 'Known names: digits'),
                                      (['--size', '0'], 'argument --size: must be at least 1, got 0'),
                                      (['--size', '-4'], 'argument --size: must be at least 1, got -4'),
                                      (['--n', '0'], 'argument --n: must be at least 1, got 0'),
                                      (['--val-frac', 'nan'], "argument --val-frac: must be a finite number, got 'nan'"),
                                      (['--out', 'grid'], 'grid must end in one of .png'),
                                      (['--out', '.'], '. is a folder; give a file name in it')])
def test_cli_bad_input(tmp_path, args, msg):
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 2 and msg in r.stderr and 'Traceback' not in r.stderr
    assert not list(tmp_path.iterdir())  # nothing written

# --- device and preset --------------------------------------------------------------------------

def test_preset_follows_the_device(monkeypatch):
    monkeypatch.delenv('MINDDPM_PRESET', raising=False)
    from minddpm.data import pick_preset
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert pick_preset() == 'tiny'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert pick_preset() == 'colab'
    monkeypatch.setenv('MINDDPM_PRESET', 'full')
    assert pick_preset() == 'full'
    monkeypatch.setenv('MINDDPM_PRESET', 'Colab')
    with pytest.raises(ValueError, match="Unknown preset 'Colab' in \\$MINDDPM_PRESET; use one of tiny, colab, full"):
        pick_preset()

def test_tiny_preset_is_the_bundled_set():
    from minddpm.data import DATA_PRESETS
    train_dl, _ = get_dataloaders(**DATA_PRESETS['tiny'])
    assert next(iter(train_dl))[0].shape == (64, 1, 16, 16)

# --- the layers below training -------------------------------------------------------------------

def minddpm_imports(module: str) -> set:
    "The minddpm modules that `minddpm/<module>.py` imports, read from its source."
    import ast, minddpm
    from pathlib import Path
    tree = ast.parse((Path(minddpm.__file__).parent/f'{module}.py').read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or '').startswith('minddpm')):
            found.add((node.module or '').removeprefix('minddpm.').removeprefix('minddpm') or '.')
        elif isinstance(node, ast.Import): found |= {a.name.removeprefix('minddpm.') for a in node.names if a.name.startswith('minddpm')}
    return found

def test_device_is_the_bottom_layer_and_data_sits_on_it():
    assert minddpm_imports('device') == set()
    assert minddpm_imports('folders') == set()
    assert minddpm_imports('data') == {'device', 'folders'}
    assert minddpm_imports('args') <= {'data', 'folders'}   # the commands' helpers: no command, no training below them
    assert 'cli' not in minddpm_imports('parsers') and 'parsers' not in minddpm_imports('args')
    from minddpm.data import cpu_has_bf16, pick_device, pick_preset   # still importable from where they were
    from minddpm import device
    assert pick_device is device.pick_device and pick_preset is device.pick_preset and cpu_has_bf16 is device.cpu_has_bf16

def test_autocast_is_on_only_when_asked_for_on_the_cpu():
    from minddpm.device import autocast, resolve_precision
    cpu = torch.device('cpu')
    assert resolve_precision(cpu) is None
    with autocast(cpu, resolve_precision(cpu, 'bf16')): assert torch.is_autocast_enabled('cpu')
    with autocast(cpu, resolve_precision(cpu, 'fp32')): assert not torch.is_autocast_enabled('cpu')
    with pytest.raises(ValueError, match="Unknown precision 'fp8'; use auto, bf16, fp16 or fp32"): resolve_precision(cpu, 'fp8')

@pytest.mark.parametrize('device,msg', [('gpu', "Unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps"),
                                        ('cuda:99', "device 'cuda:99' is not available: torch sees")])
def test_a_device_torch_cannot_use_here_is_refused(device, msg):
    from minddpm.device import pick_device
    assert pick_device('cpu') == torch.device('cpu')
    with pytest.raises(ValueError, match=re.escape(msg)): pick_device(device)
