"""`NoiseSchedule` against an independent reference implementation: lucidrains' denoising-diffusion-pytorch,
which computes the same coefficients in float64 from its own code (pinned in the dev extra)."""
import pytest
import torch
from denoising_diffusion_pytorch import GaussianDiffusion, Unet

from minddpm.schedule import NoiseSchedule

OURS_VS_THEIRS = {  # our buffer → theirs
    'betas': 'betas', 'alpha_bars': 'alphas_cumprod', 'alpha_bars_prev': 'alphas_cumprod_prev',
    'sqrt_alpha_bars': 'sqrt_alphas_cumprod', 'sqrt_one_minus_alpha_bars': 'sqrt_one_minus_alphas_cumprod',
    'posterior_variance': 'posterior_variance', 'posterior_mean_coef1': 'posterior_mean_coef1',
    'posterior_mean_coef2': 'posterior_mean_coef2'}

@pytest.mark.parametrize('kind', ['linear', 'cosine'])
def test_matches_reference_implementation(kind):
    ref = GaussianDiffusion(Unet(dim=8, dim_mults=(1, 2)), image_size=8, timesteps=1000, beta_schedule=kind)
    ours = NoiseSchedule(kind, T=1000)
    for mine, theirs in OURS_VS_THEIRS.items():
        a, b = getattr(ours, mine).double(), getattr(ref, theirs).double()
        assert a.shape == b.shape == (1000,)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12, msg=lambda m: f'{kind} {mine}: {m}')
