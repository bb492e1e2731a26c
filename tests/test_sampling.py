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

@pytest.mark.parametrize('T', [1000, 37])
def test_every_step_count_gives_that_many_distinct_valid_timesteps(T):
    "For 1 to T steps and both spacings: exactly `steps` timesteps, strictly falling from T − 1, none below 0 (a float arange once gave an extra −1)."
    for spacing in ('linspace', 'trailing'):
        for steps in range(1, T + 1):
            ts = ddim_timesteps(T, steps, spacing)
            assert len(ts) == steps and ts[0] == T - 1 and ts[-1] >= 0, (spacing, steps, ts[-3:])
            assert all(a > b for a, b in zip(ts, ts[1:])), (spacing, steps)
    assert ddim_timesteps(1000, 50, 'trailing')[:3] == [999, 979, 959] and ddim_timesteps(1000, 50, 'trailing')[-1] == 19

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

# ---- what lesson 05 once checked in its prose ------------------------------------------------------------------------

class Recorder(torch.nn.Module):
    "A model that notes each call: (its name, rows, rows with the null label)."
    def __init__(self, m, name, calls): super().__init__(); self.m, self.name, self.calls = m, name, calls
    def forward(self, x, t, y=None):
        from minddpm.conditioning import NULL_LABEL
        self.calls.append((self.name, len(x), None if y is None else (y == NULL_LABEL).sum().item()))
        return self.m(x, t, y)

def test_guidance_at_w_1_is_one_conditional_branch_and_an_ema_serves_both_branches():
    import copy
    torch.manual_seed(0)
    net, short, labels = ConditionalUNet(10, **unet_preset('tiny', in_channels=1)), Diffusion('linear', T=40), torch.arange(4)
    g = lambda: torch.Generator().manual_seed(0)
    calls = []
    cond_only = sample(Recorder(net, 'raw', calls), short, labels, steps=10, w=1.0, generator=g())
    assert calls and all(n == 4 and nulls == 0 for _, n, nulls in calls)        # 4 images, never an unconditional row
    plain = lambda x, t, y=None: net(x, t, labels)                              # the conditional model, no guidance code
    torch.testing.assert_close(sample(plain, short, None, n=4, steps=10, generator=g()), cond_only, rtol=0, atol=1e-6)
    raw, ema = Recorder(net, 'raw', calls), Recorder(copy.deepcopy(net), 'ema', calls)
    with torch.no_grad(): next(ema.m.parameters()).add_(0.1)                    # an "EMA" whose weights differ
    calls.clear()
    guided = sample(ema, short, labels, steps=10, w=3.0, generator=g())
    assert {name for name, *_ in calls} == {'ema'}                              # both branches from the EMA weights
    assert all(n == 8 and nulls == 4 for _, n, nulls in calls)                  # one batched pass: 4 conditional + 4 null rows
    assert not torch.allclose(guided, sample(raw, short, labels, steps=10, w=3.0, generator=g()))

def test_ddim_with_every_step_and_eta_1_is_ddpm_beta_tilde_with_and_without_clipping():
    torch.manual_seed(0)
    net, short, labels = ConditionalUNet(10, **unet_preset('tiny', in_channels=1)), Diffusion('linear', T=40), torch.arange(4)
    g = lambda: torch.Generator().manual_seed(0)
    for clip in (False, True):
        ddpm = sample(net, short, labels, sampler='ddpm', variance='beta_tilde', generator=g(), clip=clip)
        ddim = sample(net, short, labels, sampler='ddim', steps=40, eta=1.0, generator=g(), clip=clip)
        torch.testing.assert_close(ddim, ddpm, rtol=0, atol=1e-4)

def test_uint8_is_the_rounded_float_sample_and_bad_arguments_are_refused_by_name():
    from minddpm.data import to_uint8
    from minddpm.sampling import IdealDenoiser
    from minddpm.data import load_bundled, to_unit_range
    d, diffusion = load_bundled(), Diffusion('linear')
    ideal, labels = IdealDenoiser(to_unit_range(d['images'][:40]), d['labels'][:40], diffusion), d['labels'][:2]
    g = lambda: torch.Generator().manual_seed(0)
    u8 = sample(ideal, diffusion, labels, shape=tuple(d['images'].shape[1:]), steps=10, generator=g(), uint8=True)
    assert u8.dtype == torch.uint8
    assert torch.equal(u8, to_uint8(sample(ideal, diffusion, labels, shape=tuple(d['images'].shape[1:]), steps=10, generator=g())))
    for kw, says in [(dict(sampler='euler'), "use 'ddim', 'dpm++', 'ddpm'"), (dict(spacing='leading'), "use 'linspace' or 'trailing'"),
                     (dict(steps=0), 'steps must be a whole number between 1 and T=1000'), (dict(labels=None), 'pass labels, or n'),
                     (dict(variance='sigma'), "Unknown variance 'sigma'"), (dict(w=float('nan')), 'w must be a finite number'),
                     (dict(eta=1.5), r'eta must be in \[0, 1\]'), (dict(labels=3), r'labels must be a 1-D sequence of class indices'),
                     (dict(labels=None, n=0), 'n must be a whole number, at least 1, got 0'),
                     (dict(labels=None, n=-1), 'n must be a whole number, at least 1, got -1')]:
        with pytest.raises(ValueError, match=says.replace('+', r'\+')):
            sample(ideal, diffusion, **{'labels': labels, **kw})
    shape = tuple(d['images'].shape[1:])
    assert torch.equal(sample(ideal, diffusion, labels.tolist(), shape=shape, steps=3, generator=g()),
                       sample(ideal, diffusion, labels, shape=shape, steps=3, generator=g()))
    with pytest.raises(TypeError, match=r"got a Trained; pass its .model, with its .diffusion and .shape"):
        from minddpm.trained import load_model
        sample(load_model(), diffusion, labels)

# ---- the loop itself ------------------------------------------------------------------------------------------------

def test_denoise_steps_yields_every_step_then_the_images_sample_returns():
    "The generator is `sample`'s loop: its steps are sample's trajectory, its last step (t = −1) sample's images."
    from minddpm.sampling import Step, denoise_steps
    torch.manual_seed(0)
    net, d, y = ConditionalUNet(10, **unet_preset('tiny', in_channels=1, base=8, time_dim=32)).eval(), Diffusion(T=100), torch.arange(3)
    for sampler, kw in (('ddim', dict(eta=1.0)), ('dpm++', {}), ('ddpm', {})):
        traj = []
        want = sample(net, d, y, sampler=sampler, steps=7, generator=torch.Generator().manual_seed(2), trajectory=traj, **kw)
        gen = torch.Generator().manual_seed(2)
        noise = lambda: torch.randn((3, 1, 16, 16), generator=gen)
        ts = list(range(99, -1, -1)) if sampler == 'ddpm' else ddim_timesteps(100, 7, 'trailing' if sampler == 'dpm++' else 'linspace')
        steps = list(denoise_steps(net, d, noise(), ts, y, sampler=sampler, noise=noise, **kw))
        assert all(isinstance(s, Step) for s in steps) and [s.t for s in steps] == ts + [-1]
        assert [t for t, *_ in traj] == ts and all(torch.equal(a[1], s.x) and torch.equal(a[2], s.x0) for a, s in zip(traj, steps))
        assert torch.equal(steps[-1].x.clamp(-1, 1), want) and steps[-1].x is steps[-1].x0

def test_the_model_gets_its_mode_back_even_when_sampling_fails():
    torch.manual_seed(0)
    net = ConditionalUNet(10, **unet_preset('tiny', in_channels=1, base=8, time_dim=32)).train()
    sample(net, Diffusion(T=20), torch.arange(2), steps=2)
    assert net.training
    def broken(x, t, y=None): raise RuntimeError('the network failed')
    class Wrapped(torch.nn.Module):
        def forward(self, x, t, y=None): return broken(x, t, y)
    model = Wrapped().train()
    with pytest.raises(RuntimeError, match='the network failed'): sample(model, Diffusion(T=20), torch.arange(2), steps=2)
    assert model.training
    nan = lambda x, t, y=None: torch.full_like(x, float('nan'))
    with pytest.raises(FloatingPointError, match=r'sampling produced non-finite values \(512 of 512\)'):
        sample(nan, Diffusion(T=20), torch.arange(2), steps=2)
