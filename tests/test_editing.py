"""Editing with a trained model (lesson 11): the noise level ↔ timestep map, the exact guarantees of each edit (strength 0 is
the identity, inpainting keeps the known pixels bit for bit, ILVR keeps the block means), denoising on the ideal denoiser,
RGB models, and `minddpm_edit` refusing bad input by name before any work."""
import math
from importlib import resources

import numpy as np

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from minddpm.cli import minddpm_edit, minddpm_train, read_image
from minddpm.conditioning import ConditionalUNet
from minddpm.data import load_bundled, resize_uint8, to_unit_range
from minddpm.editing import network_calls, denoise, img2img, inpaint, noise_level, noise_level_step, repaint_walk, upsample, walk
from minddpm.forward import Diffusion
from minddpm.sampling import IdealDenoiser
from minddpm.unet import unet_preset
from test_commands import run

SHIPPED = str(resources.files('minddpm.assets')/'digits_tiny.pt')

@pytest.fixture(scope='module')
def digits():
    d = load_bundled()
    return to_unit_range(resize_uint8(d['images'][:200], 16)), d['labels'][:200]

def net(channels=1):
    torch.manual_seed(0)
    return ConditionalUNet(10, **unet_preset('tiny', in_channels=channels, base=8, time_dim=32)).eval()

def psnr(a, b): return (10 * torch.log10(4 / ((a - b) ** 2).flatten(1).mean(1))).mean().item()

@pytest.mark.parametrize('kind', ['linear', 'cosine'])
def test_every_timestep_round_trips_through_its_noise_level(kind):
    d = Diffusion(kind)
    assert [noise_level_step(d, noise_level(d, t).item()) for t in range(d.T)] == list(range(d.T))
    for bad in (0, -0.5, math.nan, math.inf, True, noise_level(d, d.T - 1).item() * 1.01):
        with pytest.raises(ValueError, match='sigma'): noise_level_step(d, bad)

def test_strength_0_returns_the_input_and_other_strengths_are_checked(digits):
    x, y = digits[0][:4], digits[1][:4]
    for s in (0, 0.0004):                                 # below half a step: t0 = round(s·T) − 1 < 0
        assert torch.equal(img2img(net(), Diffusion(), x, y, strength=s), x)
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match=r'strength must be a number in \[0, 1\]'): img2img(net(), Diffusion(), x, y, strength=bad)

def test_strength_sets_how_many_calls_the_walk_back_takes(digits):
    seen = []
    def counting(x, t, y=None): seen.append(int(t[0])); return net()(x, t, y)
    img2img(counting, Diffusion(), digits[0][:2], digits[1][:2], strength=0.3, w=1.0, steps=50)
    assert seen[0] == 299 and len(seen) == 15                                 # 30 % of the way, 30 % of the 50 calls

@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('shape', ['hw', 'chw', 'bchw', 'bool'])
def test_inpainting_keeps_the_known_pixels_bit_for_bit(digits, channels, shape):
    x = digits[0][:3].repeat(1, channels, 1, 1)
    m = (torch.rand(16, 16, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    mask = {'hw': m, 'chw': m[None], 'bchw': m[None, None].expand(3, 1, 16, 16), 'bool': m.bool()}[shape]
    for resample in (1, 3):
        out = inpaint(net(channels), Diffusion(), x, mask, digits[1][:3], steps=10, jump=2, resample=resample,
                      generator=torch.Generator().manual_seed(0))
        keep = m.bool().expand_as(x)
        assert out.shape == x.shape and torch.equal(out[keep], x[keep])
        assert not torch.equal(out[~keep], x[~keep])       # the rest was filled, not copied

@pytest.mark.parametrize('mask,message', [(torch.ones(8, 16), r'mask has shape \(8, 16\)'), (torch.ones(16), 'mask has shape'),
                                          (torch.full((16, 16), 0.5), 'mask must be binary'), (torch.ones(2, 1, 16, 16), 'mask has shape')])
def test_inpainting_refuses_a_mask_of_another_shape_or_not_binary(digits, mask, message):
    with pytest.raises(ValueError, match=message): inpaint(net(), Diffusion(), digits[0][:3], mask, steps=2)

def test_repaint_walks_back_and_costs_resample_times_the_calls():
    assert repaint_walk(50, 5, 1) == walk(999, 50)
    for steps, jump, resample in ((50, 5, 5), (20, 4, 3), (10, 3, 2)):
        p = repaint_walk(steps, jump, resample)
        assert p[0] == 999 and p[-1] == -1 and network_calls(p) == steps + ((steps - 1) // jump) * jump * (resample - 1)
        ups = [(t, s) for t, s in zip(p, p[1:]) if s > t]
        assert len(ups) == ((steps - 1) // jump) * (resample - 1)
    with pytest.raises(ValueError, match='jump must be a whole number'): repaint_walk(10, 0, 2)

def test_the_ideal_denoiser_gives_back_a_training_image_at_small_noise(digits):
    x, y = digits
    d = Diffusion()
    ideal = IdealDenoiser(x, y, d)
    noisy = x[:16] + 0.1 * torch.randn(x[:16].shape, generator=torch.Generator().manual_seed(0))
    assert psnr(noisy, x[:16]) < 27                       # the noise costs about 26 dB
    assert psnr(denoise(ideal, d, noisy, 0.1), x[:16]) >= 30
    assert psnr(denoise(ideal, d, noisy, 0.1, labels=y[:16], steps=1), x[:16]) >= 30

@pytest.mark.parametrize('channels', [1, 3])
def test_ilvr_keeps_the_block_means_of_the_low_resolution_input(digits, channels):
    x, y = digits
    x = x.repeat(1, channels, 1, 1)
    low = F.avg_pool2d(x[:8], 4)
    ideal = IdealDenoiser(x, y, Diffusion())
    out = upsample(ideal, Diffusion(), low, 4, steps=20, generator=torch.Generator().manual_seed(0))
    assert out.shape == (8, channels, 16, 16)
    assert (F.avg_pool2d(out, 4) - low).abs().mean() < 0.01

# --- the command ------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp('images')
    images = resize_uint8(load_bundled()['images'][:3], 16)[:, 0].numpy()   # as the model draws them: 16×16 greyscale
    (root/'digits').mkdir()
    for i in range(3): Image.fromarray(images[i]).save(root/'digits'/f'{i}.png')
    (root/'digits'/'.DS_Store').write_bytes(b'\0\1junk')                      # hidden: skipped, not an error
    (root/'digits'/'._0.png').write_bytes(b'AppleDouble')
    Image.fromarray(images[0]).resize((4, 4), Image.BOX).save(root/'low.png')
    Image.fromarray(images[0]).resize((8, 8)).save(root/'small.png')
    Image.new('RGB', (16, 16), (200, 30, 30)).save(root/'red.png')
    Image.new('L', (16, 16), 128).save(root/'grey_mask.png')
    m = Image.new('L', (16, 16), 255); m.paste(0, (0, 0, 16, 8)); m.save(root/'mask.png')
    (root/'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    (root/'classes'/'3').mkdir(parents=True)                                     # a training folder: images in class folders
    Image.fromarray(images[0]).save(root/'classes'/'3'/'a.png')
    Image.fromarray(np.full((16, 16), 30000, np.uint16)).save(root/'mask16.png')   # 16-bit, mid-grey: Pillow's 'L' would clip it to white
    return root

@pytest.mark.parametrize('args', [['digits', '--task', 'img2img', '--label', '8', '--strength', '0.5'],
                                  ['digits', '--task', 'inpaint', '--mask', 'mask.png', '--label', '3', '--resample', '2'],
                                  ['digits', '--task', 'denoise', '--sigma', '0.3', '--add-noise'],
                                  ['low.png', '--task', 'upsample']])
def test_each_task_writes_a_grid_and_the_images(images, tmp_path, capsys, monkeypatch, args):
    monkeypatch.chdir(images)
    code, out, err = run(minddpm_edit, SHIPPED, *args, '--steps', '10', '--out', tmp_path/'grid.png', '--each', tmp_path/'each',
                         capsys=capsys)
    assert code == 0, err
    n = 1 if args[0] == 'low.png' else 3
    assert (tmp_path/'grid.png').is_file() and len(list((tmp_path/'each').glob('*.png'))) == n and f"edited {n} image" in out
    for f in (tmp_path/'each').glob('*.png'): assert Image.open(f).size == (16, 16)

@pytest.mark.parametrize('args,message', [
    (['small.png', '--task', 'denoise', '--sigma', '0.2'], "small.png is 8×8 pixels; this needs 16×16"),
    (['red.png', '--task', 'denoise', '--sigma', '0.2'], "red.png is in colour; this model draws greyscale"),
    (['broken.png', '--task', 'denoise', '--sigma', '0.2'], "broken.png cannot be read as an image"),
    (['digits', '--task', 'inpaint', '--mask', 'small.png'], "--mask small.png is 8×8 pixels; the images are 16×16"),
    (['digits', '--task', 'inpaint', '--mask', 'grey_mask.png'], "must be black (fill) and white (keep) only; 256 of its pixels"),
    (['digits', '--task', 'inpaint', '--mask', 'diagonal'], "--mask diagonal: neither a file nor one of left, right"),
    (['digits', '--task', 'inpaint'], "--task inpaint needs --mask"),
    (['digits', '--task', 'img2img', '--strength', '0'], "argument --strength: must be in (0, 1], got 0"),
    (['digits', '--task', 'img2img', '--strength', '1.5'], "argument --strength: must be in (0, 1], got 1.5"),
    (['digits', '--task', 'img2img', '--strength', 'nan'], "argument --strength: must be a finite number"),
    (['digits', '--task', 'img2img', '--label', '10'], "--label 10 is unknown to this model; it knows 0, 1"),
    (['digits', '--task', 'img2img', '--label', 'cat'], "--label cat is unknown to this model"),
    (['digits', '--task', 'denoise'], "--task denoise needs --sigma"),
    (['digits', '--task', 'denoise', '--sigma', '-1'], "argument --sigma: must be"),
    (['digits', '--task', 'denoise', '--sigma', '1e6'], "sigma=1e+06 is above the schedule's largest noise level"),
    (['digits', '--task', 'upsample', '--strength', '0.5'], "--strength does nothing with --task upsample"),
    (['digits', '--task', 'upsample'], "0.png is 16×16 pixels; upsample needs a whole fraction of 16×16"),
    (['digits', '--task', 'img2img', '--guidance', '2'], "--guidance needs --label"),
    (['missing.png', '--task', 'img2img'], "no such image file or folder: missing.png"),
    (['classes', '--task', 'denoise', '--sigma', '0.2'], "its images are in sub-folders (3): name one of them, e.g. classes/3"),
    (['digits', '--task', 'img2img', '--label', '3', '--guidance', '-1'], "argument --guidance: must be at least 0, got -1"),
    (['--task', 'warp', 'digits'], "argument --task: invalid choice: 'warp'"),
    (['digits', '--task', 'inpaint', '--mask', 'left', '--resample', '1000'], "argument --resample: must be at most 100, got 1000"),
    (['digits', '--task', 'inpaint', '--mask', 'mask16.png'], "--mask mask16.png must be black (fill) and white (keep) only"),
    (['digits', '--task', 'img2img', '--strength', '0.0004'], "--strength 0.0004 is less than one step of this model's T=1000"),
    (['digits', '--task', 'img2img', '--seed', str(2**64)], "argument --seed: must be at most 2147483647"),
    (['low.png', 'broken.png', '--task', 'upsample'], "broken.png cannot be read as an image"),
    (['low.png', 'digits', '--task', 'upsample'], "0.png is 16×16 pixels; this needs 4×4 (the size of low.png, the first image"),
])
def test_bad_input_is_refused_by_name_and_writes_nothing(images, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(images)
    code, out, err = run(minddpm_edit, SHIPPED, *args, '--out', tmp_path/'grid.png', capsys=capsys)
    assert code == 2 and message in err and 'Traceback' not in err, err
    assert not (tmp_path/'grid.png').exists()

def test_an_rgb_model_trained_on_a_folder_edits_images_of_it(tmp_path, capsys, monkeypatch):
    "A folder model is RGB whatever its files' modes (training reads them as RGB): editing reads them the same way."
    monkeypatch.chdir(tmp_path)
    for c in ('a', 'b'):
        (tmp_path/'data'/c).mkdir(parents=True)
        for i in range(6):
            Image.new('RGB' if i % 2 else 'L', (8, 8), (40 * i, 100, 30 * i) if i % 2 else 20 * i).save(tmp_path/'data'/c/f'{i}.png')
    code, out, err = run(minddpm_train, '--dataset', 'data', '--img-size', '8', '--steps', '2', '--batch-size', '4', '--out', 'run',
                         '--export', 'rgb.pt', capsys=capsys)
    assert code == 0, err[-2000:]
    x = read_image(tmp_path/'data'/'a'/'1.png', 3, (8, 8))
    assert x.shape == (3, 8, 8) and x[0].min() < x[1].min()                          # its colours, not a grey copy
    assert torch.equal(read_image(tmp_path/'data'/'a'/'2.png', 3, (8, 8)), read_image(tmp_path/'data'/'a'/'2.png', 3, (8, 8))[:1].expand(3, 8, 8))
    Image.new('RGB', (4, 4), (200, 30, 30)).save(tmp_path/'low.png')
    for args in (['data/a', '--task', 'inpaint', '--mask', 'centre', '--label', 'b', '--resample', '2', '--jump', '2'],
                 ['low.png', '--task', 'upsample', '--label', 'a'], ['data/b', '--task', 'img2img', '--strength', '0.3']):
        code, out, err = run(minddpm_edit, 'rgb.pt', *args, '--steps', '4', '--out', 'grid.png', '--each', 'out', capsys=capsys)
        assert code == 0 and (tmp_path/'grid.png').is_file(), err[-2000:]
    assert {Image.open(f).mode for f in (tmp_path/'out').glob('*.png')} == {'RGB'}
    code, out, err = run(minddpm_edit, 'rgb.pt', 'data/a', '--task', 'img2img', '--label', '2', '--out', 'grid.png', capsys=capsys)
    assert code == 2 and '--label 2 is unknown to this model; it knows a, b (or 0 … 1)' in err, err

def test_a_refused_command_leaves_no_folder_behind_and_a_swapped_model_file_is_named(images, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(images)
    code, out, err = run(minddpm_edit, SHIPPED, 'digits', '--task', 'img2img', '--label', '40', '--out', tmp_path/'new'/'sub'/'g.png',
                         '--each', tmp_path/'each'/'deep', capsys=capsys)
    assert code == 2 and '--label 40 is unknown' in err and not (tmp_path/'new').exists() and not (tmp_path/'each').exists(), err
    code, out, err = run(minddpm_edit, 'low.png', 'digits', '--task', 'denoise', '--sigma', '0.1', '--out', tmp_path/'g.png', capsys=capsys)
    assert code == 2 and "low.png is not a readable minddpm checkpoint or model file: torch.save did not write it (it starts with b'\\x89PNG')" in err, err

def test_the_api_refuses_what_it_cannot_edit_by_name(digits):
    x, y = digits[0][:2], digits[1][:2]
    with pytest.raises(ValueError, match='images must be a float tensor .* convert them with to_unit_range'):
        img2img(net(), Diffusion(), (x * 127.5 + 127.5).to(torch.uint8), y)
    with pytest.raises(ValueError, match="Unknown precision 'fp16'"): denoise(net(), Diffusion(), x, 0.2, precision='fp16')
    with pytest.raises(ValueError, match=r'labels must be one class, or one per image \(2 whole numbers\); got torch.int64 of shape \(3,\)'):
        inpaint(net(), Diffusion(), x, torch.ones(16, 16), torch.arange(3), steps=2)
    with pytest.raises(ValueError, match='steps must be a whole number of at least 1'): denoise(net(), Diffusion(), x, 0.2, steps=0)
    with pytest.raises(ValueError, match=r'eta must be in \[0, 1\]'): img2img(net(), Diffusion(), x, y, eta=5)
    with pytest.raises(ValueError, match='resample must be a whole number from 1 to 100'): inpaint(net(), Diffusion(), x, torch.ones(16, 16), resample=10**9)
    bad = x.clone(); bad[0, 0, 3, 4] = float('nan')
    with pytest.raises(ValueError, match='images hold 1 non-finite values'): denoise(net(), Diffusion(), bad, 0.2)
    assert img2img(net(), Diffusion(), x, 3, strength=0.1, steps=5).shape == x.shape       # one class for every image

def test_walks_renoising_and_the_reverse_loop_refuse_what_they_cannot_walk():
    assert walk(99, 50) == [99, 74, 50, 25, 0, -1]                      # a tenth of the way: a tenth of the calls
    assert network_calls(walk(0, 50)) == 1 and network_calls(repaint_walk(10, jump=2, resample=3)) == 10 + 4 * 2 * 2
    from minddpm.editing import renoise, reverse
    d = Diffusion()
    r = d.alpha_bars[400] / d.alpha_bars[100]                           # x_100 → x_400 is x_0 → x_400: the same mean and variance
    torch.testing.assert_close(renoise(d, torch.ones(1), 100, 400, torch.zeros(1)), r.sqrt().view(1))
    torch.testing.assert_close(r * (1 - d.alpha_bars[100]) + (1 - r), 1 - d.alpha_bars[400], rtol=0, atol=1e-6)
    x = torch.zeros(2, 1, 16, 16)
    with pytest.raises(ValueError, match='a path ends at −1'): reverse(net(), d, x, [999, 500])
    with pytest.raises(ValueError, match='w must be a finite number'): reverse(net(), d, x, walk(99, 5), w=math.inf)
    nan = lambda x, t, y=None: torch.full_like(x, math.nan)
    with pytest.raises(FloatingPointError, match=r'editing produced non-finite values \(512 of 512\)'): reverse(nan, d, x, walk(99, 5))
    model = net().train()
    reverse(model, d, x, walk(99, 5))
    assert model.training                                               # back in the mode it was given in
