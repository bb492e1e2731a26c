"""The forward process as users call it: shapes, the timesteps drawn, what bad timesteps and noises are told, the three
targets read back, the loss weights, the scrubber's widget driven from code, and where the methods are defined."""
import inspect

import pytest
import torch

import minddpm.conditioning, minddpm.ema, minddpm.forward, minddpm.scrubber, minddpm.unet
from minddpm.forward import OBJECTIVES, Diffusion, ForwardProcess, forward_scrubber

X0 = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1

def test_add_noise_shapes_and_the_noiseless_step():
    q = ForwardProcess()
    xt, eps = q.add_noise(X0, torch.arange(8) * 100)
    assert xt.shape == eps.shape == X0.shape
    xt0, _ = q.add_noise(X0, 0, noise=torch.zeros_like(X0))          # no noise: only the scaling
    torch.testing.assert_close(xt0, X0 * q.alpha_bars[0].sqrt())

def test_every_timestep_is_drawn_t0_included():
    t = ForwardProcess().sample_timesteps(100_000, generator=torch.Generator().manual_seed(0))
    assert (t.min().item(), t.max().item()) == (0, 999)
    assert (t.bincount(minlength=1000) > 0).all()

@pytest.mark.parametrize('t, message', [
    (1000, 'integer timesteps in [0, 999]'), (-1, 'got values from -1 to -1'),
    (torch.tensor([0.5] * 8), 'got a torch.float32 tensor'), (2.0, 'integer timesteps'), (True, 'integer timesteps'),
    (torch.zeros(5, dtype=torch.long), 'pass one timestep per image, shape (8,)')])
def test_bad_timesteps_say_what_is_allowed(t, message):
    with pytest.raises(ValueError) as e: Diffusion().add_noise(X0, t)
    assert message in str(e.value)

def test_noise_of_another_shape_is_refused():
    with pytest.raises(ValueError, match="must match x0's"): Diffusion().add_noise(X0, 3, noise=torch.randn(8, 1, 8, 8))

@pytest.mark.parametrize('objective', OBJECTIVES)
def test_each_target_reads_back_as_eps_and_x0(objective):
    "The target made from (x0, ε), read back by `predictions`, gives (ε, x0) again at every tenth step."
    g = torch.Generator().manual_seed(0)
    x0, eps, t = torch.randn(100, 1, 16, 16, generator=g).clamp(-1, 1), torch.randn(100, 1, 16, 16, generator=g), torch.arange(0, 1000, 10)
    d = Diffusion('linear', objective=objective)
    xt, _ = d.add_noise(x0, t, eps)
    e_back, x_back = d.predictions(xt, t, d.target(x0, eps, t))
    # only the ε- and x0-readings divide: by s ≥ 0.01 (x0-target) and by a ≥ 0.0063 (ε-target)
    torch.testing.assert_close(e_back, eps, rtol=0, atol=1e-5 * (100 if objective == 'x0' else 1))
    torch.testing.assert_close(x_back, x0, rtol=0, atol=1e-5 * (160 if objective == 'eps' else 1))

def test_v_is_eps_at_the_clean_end_and_minus_x0_at_the_noisy_end():
    d, eps = Diffusion(objective='v'), torch.randn_like(X0)
    torch.testing.assert_close(d.target(X0, eps, 0), eps, rtol=0, atol=0.02)
    torch.testing.assert_close(d.target(X0, eps, 999), -X0, rtol=0, atol=0.03)

def test_unknown_objective_and_weighting_are_refused():
    with pytest.raises(ValueError, match='use one of eps, v, x0'): Diffusion(objective='score')
    with pytest.raises(ValueError, match='use one of uniform, min_snr'): Diffusion().loss_weights(torch.arange(3), 'snr')

@pytest.mark.parametrize('objective', OBJECTIVES)
def test_min_snr_is_one_weighting_whatever_the_target(objective):
    d, t = Diffusion(objective=objective), torch.arange(1000)
    scale = {'eps': d.snr, 'v': d.snr + 1, 'x0': torch.ones_like(d.snr)}[objective]   # each target's weight on the x0 error
    torch.testing.assert_close(d.loss_weights(t, 'min_snr') * scale, d.snr.clamp(max=5), rtol=1e-4, atol=1e-4)
    assert torch.equal(d.loss_weights(t), torch.ones(1000))

@pytest.mark.parametrize('gamma', [0, -5, float('nan'), float('inf'), True])
def test_min_snr_gamma_must_be_finite_and_positive(gamma):
    with pytest.raises(ValueError, match='a finite number greater than 0'): Diffusion().loss_weights(torch.arange(3), 'min_snr', gamma)

def test_forward_scrubber_widget_driven_from_code():
    s = forward_scrubber(steps=5, kinds=('linear',))
    s.widget()
    first = s.image.value
    s.slider.value = 3
    assert s.image.value != first and s.image.value == s.frames['linear'][3]
    s.play.value = 1                                   # what pressing play does, one tick
    assert s.slider.value == 1 and s.label.value == s.labels[1]
    assert s.html().count('data:image/png;base64,') == 5 + 1   # one frame per step, plus the first one shown

def test_methods_are_defined_in_class_bodies():
    "`grep 'def name'` finds every method where it is defined: none is attached to its class by assignment afterwards."
    for module in (minddpm.forward, minddpm.unet, minddpm.conditioning, minddpm.ema, minddpm.scrubber):
        for cls in (v for v in vars(module).values() if inspect.isclass(v) and v.__module__ == module.__name__):
            for name, f in vars(cls).items():
                f = getattr(f, '__func__', f)
                if inspect.isfunction(f): assert f.__qualname__ == f'{cls.__qualname__}.{name}', (cls, name, f.__qualname__)
