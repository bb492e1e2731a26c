"""Samplers at full length: DDIM with every one of the T = 1000 steps and η = 1 is DDPM with σ² = β̃,
given the same noise; DDIM with η = 0 is deterministic; a given x_T is the noise the generator would draw."""
import pytest
import torch

from minddpm.conditioning import ConditionalUNet
from minddpm.forward import Diffusion
from minddpm.sampling import ddim_timesteps, sample
from minddpm.unet import unet_preset

def test_full_length_ddim_eta_1_is_ddpm_beta_tilde():
    torch.manual_seed(0)
    net = ConditionalUNet(10, **unet_preset('tiny', in_channels=1, base=8, time_dim=32))
    diffusion, labels = Diffusion('linear', T=1000), torch.tensor([1, 7])
    g = lambda: torch.Generator().manual_seed(3)
    ddpm = sample(net, diffusion, labels, sampler='ddpm', variance='beta_tilde', generator=g())
    ddim = sample(net, diffusion, labels, sampler='ddim', steps=1000, eta=1.0, generator=g())
    # two algebraically equal updates, rounded differently in float32 over 1,000 steps; a wrong formula is off by ~0.1
    torch.testing.assert_close(ddim, ddpm, rtol=0, atol=5e-4)
    assert (ddim - ddpm).abs().mean() < 5e-5

def test_ddim_eta_0_is_deterministic_and_spacing_is_documented():
    net = ConditionalUNet(10, **unet_preset('tiny', in_channels=1, base=8, time_dim=32))
    diffusion, labels = Diffusion('cosine'), torch.arange(3)
    x = sample(net, diffusion, labels, steps=25, eta=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, sample(net, diffusion, labels, steps=25, eta=0.0, generator=torch.Generator().manual_seed(0)))
    ts = ddim_timesteps(1000, 50)
    assert ts[0] == 999 and ts[-1] == 0 and len(ts) == 50 and ts == sorted(ts, reverse=True)

def test_bf16_sampling_stays_close_to_fp32_and_leaves_the_model_alone():
    "bf16 weights are a copy: the model keeps its fp32 weights; images differ by bf16's rounding, not by a wrong cast."
    from minddpm.training import load_model
    import pytest
    m = load_model()
    before = {k: v.clone() for k, v in m.model.state_dict().items()}
    g = lambda: torch.Generator().manual_seed(0)
    y = torch.arange(10)
    x32 = sample(m.model, m.diffusion, y, shape=m.shape, steps=10, generator=g())
    x16 = sample(m.model, m.diffusion, y, shape=m.shape, steps=10, generator=g(), precision='bf16')
    assert (x16 - x32).abs().mean() < 0.02 and not torch.equal(x16, x32)   # bf16 really ran, and stayed near fp32
    assert all(torch.equal(v, m.model.state_dict()[k]) for k, v in before.items())
    assert next(m.model.parameters()).dtype == torch.float32
    for name in ('tiny', 'seed'):   # with and without the time MLP, the label embedding follows the weights' dtype
        net = ConditionalUNet(10, **unet_preset(name, in_channels=3)).to(torch.bfloat16)
        assert net(torch.randn(2, 3, 16, 16).bfloat16(), torch.tensor([3, 900]), torch.tensor([1, 2])).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="Unknown precision 'fp16'; use 'fp32', 'bf16', 'auto'"):
        sample(m.model, m.diffusion, y, shape=m.shape, steps=2, precision='fp16')

def test_auto_precision_is_bf16_exactly_where_the_cpu_has_bf16(monkeypatch):
    "'auto' (minddpm_sample's default) gives bf16's images on a CPU with bf16 instructions and fp32's elsewhere."
    import minddpm.sampling
    from minddpm.training import load_model
    m, y = load_model(), torch.arange(4)
    draw = lambda precision: sample(m.model, m.diffusion, y, shape=m.shape, steps=3, generator=torch.Generator().manual_seed(1),
                                    precision=precision)
    x32, x16 = draw('fp32'), draw('bf16')
    assert not torch.equal(x32, x16)
    for has, want in ((True, x16), (False, x32)):
        monkeypatch.setattr(minddpm.sampling, 'cpu_has_bf16', lambda: has)
        assert torch.equal(draw('auto'), want)

def test_dpm_solver_defaults_to_trailing_steps_and_ddim_to_linspace():
    "Lesson 08: DPM-Solver++ with linspace steps draws blobs at 5 calls; its default is trailing, DDIM's stays linspace."
    torch.manual_seed(0)
    model = ConditionalUNet(10, **unet_preset('tiny', in_channels=1, base=8, time_dim=32)).eval()
    diffusion, y = Diffusion(objective='v'), torch.arange(3)
    draw = lambda **kw: sample(model, diffusion, y, steps=5, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(draw(sampler='dpm++'), draw(sampler='dpm++', spacing='trailing'))
    assert not torch.equal(draw(sampler='dpm++'), draw(sampler='dpm++', spacing='linspace'))
    assert torch.equal(draw(sampler='ddim'), draw(sampler='ddim', spacing='linspace'))
    assert not torch.equal(draw(sampler='ddim'), draw(sampler='ddim', spacing='trailing'))

def test_a_given_x_T_is_the_noise_the_generator_would_have_drawn():
    torch.manual_seed(0)
    d, net = Diffusion(T=100), ConditionalUNet(3, **unet_preset('tiny', in_channels=1)).eval()
    y = torch.tensor([0, 2, 1])
    for kw in (dict(sampler='dpm++', steps=5), dict(sampler='ddim', steps=5, eta=0.0)):
        drawn = sample(net, d, y, shape=(1, 8, 8), generator=torch.Generator().manual_seed(4), **kw)
        given = sample(net, d, y, shape=(1, 8, 8), x_T=torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(4)), **kw)
        assert torch.equal(drawn, given)
    with pytest.raises(ValueError, match=r"x_T has shape \(2, 1, 8, 8\); this call samples \(3, 1, 8, 8\)"):
        sample(net, d, y, shape=(1, 8, 8), x_T=torch.randn(2, 1, 8, 8))
