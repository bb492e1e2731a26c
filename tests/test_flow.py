"""Flow matching (lesson 14) checked against an independent implementation: diffusers' FlowMatchEulerDiscreteScheduler,
the scheduler of Stable Diffusion 3 and FLUX, fed the same data, noise and velocities."""
import pytest
import torch

from minddpm.flow import euler_sample, flow_target, linear_path

diffusers = pytest.importorskip('diffusers')

def scheduler(steps):
    s = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    s.set_timesteps(sigmas=torch.linspace(1, 0, steps + 1)[:-1].tolist())   # σ = t, from 1 down; diffusers appends the 0
    return s

def test_the_path_is_the_one_diffusers_noises_along():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    s = scheduler(10)
    for i in (0, 3, 9):
        sigma = s.sigmas[i]
        ours = linear_path(x0, eps, torch.full((4,), float(sigma)))
        theirs = s.scale_noise(x0, s.timesteps[i:i + 1].expand(4), eps)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flow_target(x0, eps), eps - x0)   # d x_t / dt along that path

@pytest.mark.parametrize('steps', [1, 4, 25])
def test_euler_steps_are_diffusers_steps_for_the_same_velocities(steps):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, 2, generator=g) * 0.5
    velocity = lambda x, t: x @ w + t[:, None]   # any smooth field of x and t
    x1 = torch.randn(16, 2, generator=g)
    ours = euler_sample(velocity, x1, steps)
    s, x = scheduler(steps), x1.clone()
    for sigma, t in zip(s.sigmas[:-1], s.timesteps):
        x = s.step(velocity(x, torch.full((len(x),), float(sigma))), t, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)

def test_euler_refuses_no_steps():
    with pytest.raises(ValueError, match='steps must be at least 1, got 0'): euler_sample(lambda x, t: x, torch.zeros(1, 2), 0)
