"""The DiT of lesson 15: shapes at any size divisible by the patch, other sizes refused by name, adaLN-Zero's identity at
initialisation, and a `dit-tiny` run through every command and path a UNet run takes: sampling, editing, distilling,
serving, both graph exports, bf16 autocast, `torch.compile` and two processes under torchrun."""
import dataclasses, re

import pytest
import torch

from minddpm.cli import minddpm_distill, minddpm_edit, minddpm_sample, minddpm_train
from minddpm.conditioning import NULL_LABEL, guided_eps
from minddpm.dit import (DIT_PRESETS, NETWORKS, ConditionalDiT, DiT, DiTBlock, denoiser, patchify, position_embedding_2d,
                         unpatchify)
from minddpm.run import DIT_DEFAULTS, TrainConfig
from minddpm.sampling import sample
from minddpm.training import TRAIN_PRESETS, Run, export_model, load_model, train_step
from test_commands import run as run_command
from test_distributed import assert_same_run, ranks, single, torchrun

def n_params(m): return sum(p.numel() for p in m.parameters())

@pytest.mark.parametrize('c,h,w', [(1, 16, 16), (3, 32, 32), (1, 12, 20), (3, 2, 6)])
def test_any_size_divisible_by_the_patch_gives_back_its_shape(c, h, w):
    net = ConditionalDiT(10, in_channels=c, dim=32, depth=2, heads=2)
    assert net(torch.randn(2, c, h, w), torch.tensor([0, 999]), torch.tensor([3, NULL_LABEL])).shape == (2, c, h, w)

@pytest.mark.parametrize('shape,message', [
    ((1, 1, 15, 16), 'image size 15×16 does not fit: height and width must be multiples of 2 (this DiT cuts 2×2 patches)'),
    ((1, 1, 16, 17), 'valid sizes: 2, 4, 6, 8, 10, 12, 14, 16, …'),
    ((1, 3, 16, 16), 'this DiT takes 1-channel images, got 3 channels'),
    ((1, 16, 16), 'expected images (B, C, H, W), got a tensor of shape (1, 16, 16)')])
def test_other_sizes_and_channels_are_refused_naming_what_works(shape, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DiT(in_channels=1, dim=32, depth=1, heads=2)(torch.randn(shape), torch.tensor([1]))

def test_a_width_or_heads_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match='dim must be a multiple of 4'): DiT(dim=30, heads=2)
    with pytest.raises(ValueError, match='cannot be split into 5 attention heads'): DiTBlock(96, 5, 96)
    with pytest.raises(ValueError, match="Unknown network preset 'dit'; use one of seed, tiny, dit-tiny, dit-colab"): denoiser('dit', 10, 1)
    with pytest.raises(ValueError, match="TrainConfig.unet must be 'seed' or 'tiny' or 'dit-tiny' or 'dit-colab', got 'DiT'"):
        TrainConfig(unet='DiT')

def test_patches_go_back_in_place_and_positions_are_one_row_per_patch():
    x = torch.randn(2, 3, 8, 12)
    tokens = patchify(x, 2)
    assert tokens.shape == (2, 24, 12) and torch.equal(unpatchify(tokens, 2, 4, 6), x)
    assert torch.equal(tokens[0, 7], x[0, :, 2:4, 2:4].flatten())            # token 7: row 1, column 1 of the 4×6 grid
    pos = position_embedding_2d(4, 6, 32)
    assert pos.shape == (24, 32) and len({tuple(p.tolist()) for p in pos}) == 24   # every patch its own vector
    assert torch.equal(pos[7, :16], pos[6, :16]) and not torch.equal(pos[7, 16:], pos[6, 16:])   # same row, other column

def test_at_initialisation_every_block_is_the_identity_and_the_output_is_zero_whatever_the_input():
    torch.manual_seed(0)
    net = denoiser('dit-tiny', 10, 1)
    h, c = torch.randn(4, 64, 96), torch.randn(4, 96)
    for block in net.blocks: assert torch.equal(block(h, c), h)
    outs = [net(torch.randn(3, 1, 16, 16) * s, torch.randint(0, 1000, (3,)), y)
            for s, y in ((1, torch.tensor([0, 5, 9])), (10, torch.tensor([NULL_LABEL] * 3)), (0, None))]
    for o in outs: assert torch.equal(o, torch.zeros(3, 1, 16, 16))
    # trained a step, the output depends on the input: the zeros above were not a network that ignores it
    cfg = dataclasses.replace(TRAIN_PRESETS['tiny'], unet='dit-tiny', batch_size=8, steps=50, out='unused')
    r = Run(cfg)
    x, y = next(iter(r.train_dl))
    for _ in range(3): train_step(r, x, y)
    with torch.no_grad(): a, b = (r.model(torch.randn(2, 1, 16, 16), torch.tensor([10, 10]), torch.tensor([1, 1])) for _ in range(2))
    assert not torch.equal(a, b)

def test_the_presets_have_about_the_parameters_of_the_unet_presets():
    assert NETWORKS == ('seed', 'tiny', 'dit-tiny', 'dit-colab')
    for dit, unet, c in (('dit-tiny', 'tiny', 1), ('dit-colab', 'seed', 3)):
        assert 0.85 < n_params(denoiser(dit, 10, c)) / n_params(denoiser(unet, 10, c)) < 1.15
    assert all(p['patch'] == 2 for p in DIT_PRESETS.values())

def test_guidance_mixes_the_two_branches_of_one_batched_pass():
    torch.manual_seed(0)
    net = ConditionalDiT(10, in_channels=1, dim=32, depth=2, heads=2)
    for p in net.parameters(): torch.nn.init.normal_(p, std=0.05)   # no zero layers: the branches differ
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([5, 500, 900]), torch.tensor([1, 2, 3])
    with torch.no_grad():
        cond, uncond = net(x, t, y), net(x, t, torch.full_like(y, NULL_LABEL))
        torch.testing.assert_close(guided_eps(net, x, t, y, 2.5), uncond + 2.5 * (cond - uncond), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(cond, uncond)

@pytest.mark.parametrize('objective,samplers', [('eps', ('ddpm', 'ddim', 'dpm++')), ('x0', ('ddim', 'dpm++')),
                                                ('v', ('ddim', 'dpm++')), ('flow', ('euler', 'heun'))])
def test_every_objective_trains_a_dit_and_its_samplers_draw_from_it(objective, samplers):
    cfg = dataclasses.replace(TRAIN_PRESETS['flow' if objective == 'flow' else 'tiny'], objective=objective, unet='dit-tiny',
                              batch_size=8, steps=50, out='unused', T=20)   # ddpm walks all T steps
    r = Run(cfg)
    x, y = next(iter(r.train_dl))
    for _ in range(2): assert torch.isfinite(torch.tensor(train_step(r, x, y)))
    for sampler in samplers:
        out = sample(r.ema.model, r.diffusion, [0, 9], shape=r.shape, sampler=sampler, steps=3,
                     generator=torch.Generator().manual_seed(0))
        assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all(), sampler

def test_a_size_the_network_cannot_take_is_refused_before_any_data_and_leaves_no_folder(tmp_path, capsys):
    code, out, err = run_command(minddpm_train, '--unet', 'dit-tiny', '--img-size', '15', '--dataset', 'cifar10', '--out',
                                 tmp_path/'run', '--export', tmp_path/'exports'/'sub'/'dit.pt2', capsys=capsys)   # cifar10: no download tried
    assert code == 2 and "image size 15×15 does not fit the network 'dit-tiny': height and width must be multiples of 2" in err
    assert 'Traceback' not in err and list(tmp_path.iterdir()) == []

# --- one trained DiT through every command ------------------------------------------------------------------

@pytest.fixture(scope='module')
def dit(tmp_path_factory):
    "A `dit-tiny` checkpoint from `minddpm_train --unet dit-tiny`, 12 steps, with its .pt2 export."
    out = tmp_path_factory.mktemp('dit')
    minddpm_train(['--unet', 'dit-tiny', '--steps', '12', '--batch-size', '16', '--device', 'cpu', '--out', str(out/'run'),
                   '--export', str(out/'dit.pt2')])
    return out

def test_the_checkpoint_records_the_network_and_every_command_takes_it(dit, tmp_path, capsys):
    m = load_model(dit/'run'/'checkpoint.pt')
    assert m.config.unet == 'dit-tiny' and isinstance(m.model, ConditionalDiT) and m.shape == (1, 16, 16)
    assert m.config.lr == DIT_DEFAULTS['lr'] == TRAIN_PRESETS['dit'].lr   # the DiT's measured rate, --lr left out
    ckpt = dit/'run'/'checkpoint.pt'
    code, out, err = run_command(minddpm_sample, ckpt, '--n', '2', '--steps', '5', '--out', tmp_path/'s.png', capsys=capsys)
    assert code == 0 and (tmp_path/'s.png').is_file(), err
    code, out, err = run_command(minddpm_sample, dit/'dit.pt2', '--n', '1', '--steps', '5', '--out', tmp_path/'g.png', capsys=capsys)
    assert code == 0 and (tmp_path/'g.png').is_file(), err
    code, out, err = run_command(minddpm_train, '--resume', ckpt, '--unet', 'tiny', capsys=capsys)
    assert code == 2 and "cannot change unet ('dit-tiny' → 'tiny')" in err

def test_minddpm_edit_takes_a_dit(dit, tmp_path, capsys, monkeypatch):
    from PIL import Image
    from minddpm.data import load_bundled, resize_uint8
    Image.fromarray(resize_uint8(load_bundled()['images'][:1], 16)[0, 0].numpy()).save(tmp_path/'digit.png')
    code, out, err = run_command(minddpm_edit, dit/'run'/'checkpoint.pt', tmp_path/'digit.png', '--task', 'img2img',
                                 '--label', '3', '--strength', '0.5', '--steps', '6', '--out', tmp_path/'grid.png', capsys=capsys)
    assert code == 0 and (tmp_path/'grid.png').is_file(), err

def test_both_graph_exports_compute_the_eager_network(dit, tmp_path):
    m = load_model(dit/'run'/'checkpoint.pt')
    x, t, y = torch.randn(3, 1, 16, 16), torch.tensor([0, 400, 999]), torch.tensor([2, NULL_LABEL, 7])
    graphs = [load_model(dit/'dit.pt2')]
    try:
        import onnxruntime, onnxscript  # noqa: F401
        graphs.append(load_model(export_model(dit/'run'/'checkpoint.pt', tmp_path/'dit.onnx')))
    except ImportError: pass
    with torch.no_grad():
        for g in graphs: torch.testing.assert_close(g.model(x, t, y), m.model(x, t, y), rtol=0, atol=1e-4)

def test_a_dit_teaches_a_student_and_the_demo_serves_it(dit, tmp_path, capsys):
    code, out, err = run_command(minddpm_distill, dit/'run'/'checkpoint.pt', '--calls', '2', '--start', '4', '--steps', '3',
                                 '--batch-size', '8', '--out', tmp_path/'d', capsys=capsys)
    assert code == 0, err
    student = load_model(tmp_path/'d'/'calls_002'/'checkpoint.pt')
    assert isinstance(student.model, ConditionalDiT) and student.diffusion.calls == 2
    pytest.importorskip('gradio')
    import gradio as gr
    from minddpm.demo import Batcher, _checked
    b = Batcher(student, precision='fp32')
    try:
        images, _ = b(_checked(gr, student, '7', 2, 3.0, 'ddim', 2, 0))
        direct = sample(student.model, student.diffusion, [7, 7], shape=student.shape, uint8=True,
                        x_T=torch.randn((2, *student.shape), generator=torch.Generator().manual_seed(0)))
        assert images.shape == (2, 1, 16, 16) and (images.int() - direct.int()).abs().max() <= 1
    finally: b.close()

def test_bf16_autocast_and_compile_take_a_dit(dit):
    m = load_model(dit/'run'/'checkpoint.pt')
    x, t, y = torch.randn(4, 1, 16, 16), torch.tensor([3, 300, 600, 900]), torch.tensor([0, 1, 2, NULL_LABEL])
    with torch.no_grad():
        eager = m.model(x, t, y)
        with torch.autocast('cpu', torch.bfloat16): half = m.model(x, t, y)
        assert half.dtype == torch.bfloat16 and (half.float() - eager).abs().max() < 0.05 * eager.abs().max() + 1e-3
        torch.testing.assert_close(torch.compile(m.model)(x, t, y), eager, rtol=1e-4, atol=1e-5)
    bf16 = sample(m.model, m.diffusion, [1, 2], shape=m.shape, steps=4, precision='bf16', generator=torch.Generator().manual_seed(0))
    assert bf16.shape == (2, 1, 16, 16) and torch.isfinite(bf16).all()

def test_two_processes_train_a_dit_as_one_does(tmp_path):
    torchrun(tmp_path, 'two', {'cfg': {'batch_size': 16, 'val_every': 10, 'sample_every': 0, 'unet': 'dit-tiny',
                                       'out': str(tmp_path/'two')}, 'stops': [6]})
    one = single(tmp_path, 'one', until=6, unet='dit-tiny')
    for r in ranks(tmp_path/'two'): assert_same_run(r, one)
