"""Training on a CUDA GPU: the precision really used, channels_last, the fp16 scaler and torch.compile. Runs only
where CUDA is available; the CPU paths of the same code are tested in lesson 07 and tests/test_training.py.
The presets' speed on a GPU is a benchmark, not a test: tests/bench_gpu_presets.py."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from minddpm.training import TRAIN_PRESETS, Run, TrainConfig, autocast, train, train_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
cuda = torch.device('cuda')

def tiny(tmp_path, **changes):
    return dataclasses.replace(TRAIN_PRESETS['tiny'], device='cuda', out=str(tmp_path), sample_every=0, **changes)

def test_bf16_autocast_is_on_and_weights_are_channels_last(tmp_path):
    run = Run(tiny(tmp_path, steps=10))
    want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert run.dtype == want and run.scaler.is_enabled() == (want == torch.float16)
    conv = run.model.inc.net[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    x, y = next(iter(run.train_dl))
    x, y = x.to(cuda), y.to(cuda)
    t = run.diffusion.sample_timesteps(len(x))
    with autocast(run.device, run.dtype):
        assert torch.is_autocast_enabled('cuda')
        assert run.model(x, t, y).dtype == want        # the network really runs in reduced precision
    assert torch.isfinite(torch.tensor(train_step(run, x, y)))

@pytest.mark.parametrize('precision,unet', [('bf16', 'tiny'), ('fp16', 'tiny'), ('fp16', 'dit-tiny')])   # lesson 15's DiT too
def test_the_loss_falls_in_mixed_precision(tmp_path, precision, unet):
    if precision == 'bf16' and not torch.cuda.is_bf16_supported(): pytest.skip('no bf16 on this GPU')
    run = train(dataclasses.replace(tiny(tmp_path, steps=300, precision=precision, val_every=300, ckpt_every=300, unet=unet),
                                    sample_every=5), progress=False)   # a sample grid at the end, drawn on the GPU
    losses = [h[1] for h in run.history]
    assert run.scaler.is_enabled() == (precision == 'fp16')
    if precision == 'fp16': assert run.scaler.get_scale() > 1   # the scaler is scaling
    assert sum(losses[-50:]) / 50 < 0.3 * sum(losses[:10]) / 10, losses[::30]
    assert len(list((tmp_path/'samples').glob('step_*.png'))) == 300 // (5 * len(run.train_dl)) + 1

def test_sampling_on_the_gpu_is_seeded(tmp_path):
    from minddpm.sampling import sample
    run = Run(tiny(tmp_path, steps=1))
    draw = lambda: sample(run.ema.model, run.diffusion, torch.arange(4, device=cuda), shape=run.shape, steps=10,
                          generator=torch.Generator('cuda').manual_seed(3))
    a, b = draw(), draw()
    assert a.device.type == 'cuda' and torch.equal(a, b)

@pytest.mark.parametrize('unet', ['tiny', 'dit-tiny'])
def test_compiled_training_matches_eager(tmp_path, unet):
    cfg = tiny(tmp_path, steps=5, batch_size=32, precision='fp32', val_every=100, ckpt_every=100, unet=unet)
    eager = train(cfg, progress=False)
    compiled = train(dataclasses.replace(cfg, compile=True, out=str(tmp_path/'c')), progress=False)
    a, b = [h[1] for h in eager.history], [h[1] for h in compiled.history]
    assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=2e-3), (a, b)
