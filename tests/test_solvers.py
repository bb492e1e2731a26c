"""DDIM with trailing spacing and DPM-Solver++(2M) against an independent implementation: diffusers' schedulers, fed the
same network outputs from the same starting noise. The network is lesson 05's ideal denoiser of a few digits, so every
step's prediction is exact and cheap; it predicts ε or v, as diffusers' `prediction_type` says."""
import pytest
import torch

diffusers = pytest.importorskip('diffusers')   # a dev dependency
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from minddpm.data import load_bundled, to_unit_range
from minddpm.forward import Diffusion
from minddpm.sampling import IdealDenoiser, ddim_timesteps, dpm_solver_step, sample

SHAPE = (1, 8, 8)

PREDICTION_TYPE = {'eps': 'epsilon', 'v': 'v_prediction'}   # our objective: diffusers' name for it

@pytest.fixture(scope='module', params=[('linear', 'eps'), ('cosine', 'eps'), ('linear', 'v')], ids='-'.join)
def setup(request):
    d = load_bundled()
    diffusion = Diffusion(request.param[0], T=1000, objective=request.param[1])
    return IdealDenoiser(to_unit_range(d['images'][:40]), d['labels'][:40], diffusion), diffusion

def reference(scheduler, model, steps, timesteps=None, **step_kwargs):
    "diffusers' sampling loop from the noise `sample` starts with (seed 0, 4 images)."
    x = torch.randn((4, *SHAPE), generator=torch.Generator().manual_seed(0))
    scheduler.set_timesteps(steps) if timesteps is None else scheduler.set_timesteps(timesteps=timesteps)
    for t in scheduler.timesteps:
        out = model(x, torch.full((4,), int(t)))
        x = scheduler.step(out, t, x, **step_kwargs).prev_sample
    return x, [int(t) for t in scheduler.timesteps]

def ours(model, diffusion, sampler, steps, spacing, clip=False):
    return sample(model, diffusion, n=4, shape=SHAPE, sampler=sampler, steps=steps, spacing=spacing, eta=0.0, clip=clip,
                  generator=torch.Generator().manual_seed(0))

@pytest.mark.parametrize('steps', [5, 10, 20, 50])
def test_dpm_solver_pp_2m_matches_diffusers(setup, steps):
    model, diffusion = setup
    for spacing in ('trailing', 'linspace'):
        s = DPMSolverMultistepScheduler(num_train_timesteps=1000, trained_betas=diffusion.betas.numpy(), solver_order=2,
                                        algorithm_type='dpmsolver++', prediction_type=PREDICTION_TYPE[diffusion.objective],
                                        thresholding=False,
                                        lower_order_final=True, final_sigmas_type='zero', timestep_spacing='trailing')
        custom = None if spacing == 'trailing' else ddim_timesteps(1000, steps, spacing)   # diffusers' linspace skips t = 0
        want, ts = reference(s, model, steps, custom)
        assert ts == ddim_timesteps(1000, steps, spacing)
        got = ours(model, diffusion, 'dpm++', steps, spacing)
        torch.testing.assert_close(got, want.clamp(-1, 1), rtol=0, atol=5e-4)   # float32 rounding; a wrong step is off by 0.05

@pytest.mark.parametrize('steps', [10, 20, 50])
@pytest.mark.parametrize('clip', [False, True])
def test_ddim_with_trailing_spacing_matches_diffusers(setup, steps, clip):
    model, diffusion = setup
    s = DDIMScheduler(num_train_timesteps=1000, trained_betas=diffusion.betas.numpy(), clip_sample=clip, clip_sample_range=1.0,
                      set_alpha_to_one=True, prediction_type=PREDICTION_TYPE[diffusion.objective], timestep_spacing='trailing')
    want, ts = reference(s, model, steps, eta=0.0, use_clipped_model_output=clip)
    assert ts == ddim_timesteps(1000, steps, 'trailing')
    torch.testing.assert_close(ours(model, diffusion, 'ddim', steps, 'trailing', clip), want.clamp(-1, 1), rtol=0, atol=2e-4)

def test_the_first_dpm_solver_step_is_ddim_eta_0():
    "Without a previous data prediction the step is first order: DDIM with η = 0, to float rounding."
    diffusion, x, x0 = Diffusion('linear'), torch.randn(2, *SHAPE), torch.rand(2, *SHAPE) * 2 - 1
    eps = (x - diffusion.sqrt_alpha_bars[700] * x0) / diffusion.sqrt_one_minus_alpha_bars[700]
    from minddpm.sampling import ddim_step
    torch.testing.assert_close(dpm_solver_step(diffusion, x, 700, 500, x0)[0], ddim_step(diffusion, x, 700, 500, eps, clip=False)[0],
                               rtol=0, atol=1e-5)

def test_spacings_and_their_refusals():
    assert ddim_timesteps(1000, 50, 'trailing')[:2] == [999, 979] and ddim_timesteps(1000, 50, 'trailing')[-1] == 19
    assert ddim_timesteps(1000, 10)[-1] == 0 and len(ddim_timesteps(1000, 7, 'trailing')) == 7
    with pytest.raises(ValueError, match="Unknown spacing 'leading'; use 'linspace' or 'trailing'"): ddim_timesteps(1000, 10, 'leading')
    with pytest.raises(ValueError, match="Unknown sampler 'lms'; use 'ddim', 'dpm\\+\\+', 'ddpm'"):
        sample(lambda x, t: x, Diffusion(), n=1, sampler='lms')

def test_steps_and_spacing_are_checked_for_every_sampler():
    "A fractional step count once reached torch.linspace as a raw TypeError; a bad spacing passed silently with DDPM."
    with pytest.raises(ValueError, match='steps must be a whole number between 1 and T=1000, got 2.5'): ddim_timesteps(1000, 2.5)
    with pytest.raises(ValueError, match="Unknown spacing 'bad'"): sample(lambda x, t: x, Diffusion(), n=1, sampler='ddpm', spacing='bad')
