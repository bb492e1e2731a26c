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

def test_buffers_move_with_the_module_and_stay_out_of_checkpoints():
    assert NoiseSchedule().to('meta').alpha_bars.device.type == 'meta'
    assert torch.nn.Sequential(NoiseSchedule()).to('meta')[0].betas.device.type == 'meta'   # inside another module too
    assert len(NoiseSchedule().state_dict()) == 0

@pytest.mark.parametrize('kwargs, message', [
    (dict(kind='sigmoid'), 'use one of linear, cosine'),
    (dict(beta_start=0.02, beta_end=1e-4), '0 < beta_start < beta_end < 1'),
    (dict(beta_start=0.01, beta_end=0.01), '0 < beta_start < beta_end < 1'),
    (dict(T=1.5), 'T must be an integer'), (dict(T=1), 'T must be an integer'), (dict(T=True), 'T must be an integer')])
def test_bad_settings_say_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError) as e: NoiseSchedule(**kwargs)
    assert message in str(e.value)

def test_cosine_wastes_fewer_steps_on_pure_noise():
    "Steps whose input is practically pure noise (SNR below 0.001): linear has more than twice cosine's."
    wasted = {kind: int((NoiseSchedule(kind).snr < 1e-3).sum()) for kind in ('linear', 'cosine')}
    assert wasted['linear'] > 2 * wasted['cosine'], wasted
