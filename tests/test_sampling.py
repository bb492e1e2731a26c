"""Samplers at full length: DDIM with every one of the T = 1000 steps and η = 1 is DDPM with σ² = β̃,
given the same noise; DDIM with η = 0 is deterministic."""
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
