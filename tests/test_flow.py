"""Flow matching (lesson 13): checked against an independent implementation, diffusers' FlowMatchEulerDiscreteScheduler
and FlowMatchHeunDiscreteScheduler (Stable Diffusion 3's and FLUX's), fed the same data, noise and velocities; the
equivalence of DDIM on a v-model and Euler on a flow model; and a flow model through training, checkpoints, sampling,
export and the commands."""
import dataclasses

import pytest
import torch

from minddpm.cli import minddpm_demo, minddpm_edit, minddpm_sample, minddpm_train
from minddpm.data import load_bundled, resize_uint8, to_unit_range
from minddpm.flow import (FlowMatching, IdealVelocity, euler_sample, flow_calls, flow_coordinates, flow_steps, flow_target,
                          flow_times, linear_path)
from minddpm.forward import Diffusion
from minddpm.sampling import IdealDenoiser, ddim_timesteps, sample
from minddpm.training import TRAIN_PRESETS, TrainConfig, export_model, load_model, resume, train

@pytest.fixture(scope='module')
def diffusers(): return pytest.importorskip('diffusers')

def scheduler(diffusers, steps):
    s = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    s.set_timesteps(sigmas=torch.linspace(1, 0, steps + 1)[:-1].tolist())   # σ = t, from 1 down; diffusers appends the 0
    return s

def test_the_path_is_the_one_diffusers_noises_along(diffusers):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    s = scheduler(diffusers, 10)
    for i in (0, 3, 9):
        sigma = s.sigmas[i]
        ours = linear_path(x0, eps, torch.full((4,), float(sigma)))
        theirs = s.scale_noise(x0, s.timesteps[i:i + 1].expand(4), eps)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flow_target(x0, eps), eps - x0)   # d x_t / dt along that path

@pytest.mark.parametrize('steps', [1, 4, 25])
def test_euler_steps_are_diffusers_steps_for_the_same_velocities(diffusers, steps):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, 2, generator=g) * 0.5
    velocity = lambda x, t: x @ w + t[:, None]   # any smooth field of x and t
    x1 = torch.randn(16, 2, generator=g)
    ours = euler_sample(velocity, x1, steps)
    s, x = scheduler(diffusers, steps), x1.clone()
    for sigma, t in zip(s.sigmas[:-1], s.timesteps):
        x = s.step(velocity(x, torch.full((len(x),), float(sigma))), t, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)

def test_euler_refuses_no_steps():
    with pytest.raises(ValueError, match='steps must be at least 1, got 0'): euler_sample(lambda x, t: x, torch.zeros(1, 2), 0)

# --- on images --------------------------------------------------------------------------------------

def field(x, time, *y):
    "A smooth velocity of images and the network's time 1000·t, as a UNet would be called."
    return 0.3 * torch.tanh(x.flip(-1)) - 0.5 * x + (time / 1000)[:, None, None, None]

@pytest.mark.parametrize('sampler,steps', [('euler', 1), ('euler', 7), ('heun', 1), ('heun', 6)])
def test_the_image_samplers_are_diffusers_steps_for_the_same_network(diffusers, sampler, steps):
    x1 = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    if sampler == 'euler': s = scheduler(diffusers, steps)
    else: s = diffusers.FlowMatchHeunDiscreteScheduler(num_train_timesteps=1000, shift=1.0); s.set_timesteps(steps)
    ts = s.sigmas.tolist()                     # diffusers' times, 0 appended: ours walk the same ones
    ours = [step for step in flow_steps(field, FlowMatching(), x1, ts, sampler=sampler, clip=False)][-1].x
    x, calls = x1.clone(), 0
    for t in s.timesteps:                      # diffusers calls the network at 1000·σ, as minddpm does
        x = s.step(field(x, t.expand(len(x))), t, x).prev_sample; calls += 1
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)
    assert calls == flow_calls(sampler, steps)

def test_the_flow_reads_its_velocity_back_as_noise_and_image_and_weighs_x0_like_min_snr():
    g = torch.Generator().manual_seed(0)
    x0, eps, t = torch.randn(5, 1, 4, 4, generator=g), torch.randn(5, 1, 4, 4, generator=g), torch.rand(5, generator=g) * .9 + .05
    flow = FlowMatching()
    xt, _ = flow.add_noise(x0, t, eps)
    e, x = flow.predictions(xt, t, flow.target(x0, eps, t))
    torch.testing.assert_close(e, eps); torch.testing.assert_close(x, x0)
    v_err = torch.randn(5, 1, 4, 4, generator=g)                          # any error in v̂ …
    x_err = flow.predictions(xt, t, flow.target(x0, eps) + v_err)[1] - x0  # … is −t times itself in x̂0
    w = flow.loss_weights(t, 'min_snr', 5.0)
    torch.testing.assert_close(w * v_err.square().flatten(1).mean(1),
                               flow.snr(t).clamp(max=5.0) * x_err.square().flatten(1).mean(1))
    torch.testing.assert_close(flow.loss_weights(t), torch.ones(5))
    ln = FlowMatching('logit_normal').sample_timesteps(20000, torch.Generator().manual_seed(0))
    assert 0 < ln.min() and ln.max() < 1 and abs(ln.median() - 0.5) < 0.02 and ln.std() < 0.25   # σ(N(0, 1)): mid-path
    with pytest.raises(ValueError, match="Unknown t_sampling 'normal'; use one of uniform, logit_normal"): FlowMatching('normal')

@pytest.fixture(scope='module')
def ideal():
    d = load_bundled()
    keep = torch.randperm(len(d['images']), generator=torch.Generator().manual_seed(0))[:300]
    return to_unit_range(resize_uint8(d['images'][keep], 16)), d['labels'][keep]

@pytest.mark.parametrize('steps,w,clip', [(1, 1.0, False), (4, 3.0, True), (25, 0.0, True), (10, 2.0, False)])
def test_ddim_on_a_v_model_is_euler_on_a_flow_model_after_the_change_of_time(ideal, steps, w, clip):
    """Kingma & Gao 2023, Gao et al. 2024: x_t/(α_t + σ_t) lies on the straight path at τ = σ_t/(α_t + σ_t), and DDIM
    (η = 0) steps there are Euler steps; the ideal networks of lessons 05 and 14 agree, so every step does."""
    images, labels = ideal
    diffusion, flow = Diffusion(objective='v'), FlowMatching()
    y, x_T = torch.arange(6) % 10, torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(steps))
    traj = []
    ddim = sample(IdealDenoiser(images, labels, diffusion), diffusion, y, sampler='ddim', eta=0.0, steps=steps, w=w,
                  clip=clip, x_T=x_T, trajectory=traj)
    ts = ddim_timesteps(diffusion.T, steps)
    velocity = IdealVelocity(images, labels, flow)
    euler = list(flow_steps(velocity, flow, flow_coordinates(diffusion, x_T, ts[0])[0],
                            [flow_coordinates(diffusion, x_T, t)[1] for t in ts] + [0.0], y, w, clip=clip))
    for (t, x, x0), step in zip(traj, euler):        # each point of the walk, on the path's scale, and its x̂0
        torch.testing.assert_close(step.x, flow_coordinates(diffusion, x, t)[0], rtol=0, atol=1e-4)
        torch.testing.assert_close(step.x0, x0, rtol=0, atol=1e-4)
    torch.testing.assert_close(euler[-1].x.clamp(-1, 1), ddim, rtol=0, atol=1e-4)
    if steps > 1:                                    # the clocks taken as one, (t + 1)/T and x_T unscaled, walk elsewhere
        naive = list(flow_steps(velocity, flow, x_T, [(t + 1) / diffusion.T for t in ts] + [0.0], y, w, clip=clip))
        assert (naive[1].x - euler[1].x).abs().max() > 0.1

def test_the_samplers_refuse_the_other_kind_of_model_by_name():
    flow, v = FlowMatching(), Diffusion(objective='v')
    net = lambda x, t, *y: torch.zeros_like(x)
    with pytest.raises(ValueError, match=r"sampler 'dpm\+\+' walks a diffusion's timesteps; this model was trained with flow matching"):
        sample(net, flow, [1], sampler='dpm++')
    with pytest.raises(ValueError, match="sampler 'heun' follows a flow-matching model .lesson 13.; this model predicts 'v'"):
        sample(net, v, [1], sampler='heun')
    with pytest.raises(ValueError, match="spacing 'trailing' places DDIM's and DPM-Solver..'s timesteps; a flow model's euler steps"):
        sample(net, flow, [1], spacing='trailing')
    with pytest.raises(ValueError, match='steps must be a whole number between 1'): sample(net, flow, [1], steps=0)
    assert sample(net, flow, [1, 2], steps=3).shape == (2, 1, 16, 16)   # euler by default

def test_heun_calls_the_network_twice_a_step_but_the_last_and_guidance_in_one_batch():
    calls = []
    def net(x, t, y=None): calls.append(len(x)); return torch.zeros_like(x)
    sample(net, FlowMatching(), [1, 2, 3], sampler='heun', steps=5, w=3.0)
    assert calls == [6] * flow_calls('heun', 5) == [6] * 9          # both branches of 3 images in each call
    calls.clear(); sample(net, FlowMatching(), [1, 2, 3], sampler='euler', steps=5, w=1.0)
    assert calls == [3] * 5

def test_a_diffusion_run_refuses_logit_normal_times():
    with pytest.raises(ValueError, match="TrainConfig.t_sampling 'logit_normal' draws a flow run's t .objective 'flow'.; objective 'v' draws"):
        TrainConfig(t_sampling='logit_normal')
    with pytest.raises(ValueError, match="TrainConfig.objective must be 'eps' or 'v' or 'x0' or 'flow'"): TrainConfig(objective='rf')

@pytest.fixture(scope='module')
def flow_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('flow')
    cfg = dataclasses.replace(TRAIN_PRESETS['tiny'], objective='flow', t_sampling='logit_normal', batch_size=8, steps=6,
                              val_every=3, ckpt_every=3, sample_every=0, out=str(out))
    run = train(cfg, progress=False, until=3)
    return run, out/'checkpoint.pt'

def test_a_flow_run_trains_resumes_exactly_and_its_checkpoint_says_what_it_is(flow_run, tmp_path):
    run, ckpt = flow_run
    assert all(v is not None for _, _, _, v in run.history[2:3]) and run.step == 3
    again = resume(ckpt, out=str(tmp_path))
    assert isinstance(again.diffusion, FlowMatching) and again.diffusion.t_sampling == 'logit_normal'
    whole = train(dataclasses.replace(run.cfg, out=str(tmp_path/'whole')), progress=False)   # 6 steps in one go
    train(run=again, progress=False)                                                         # 3, then 3 more
    for a, b in zip(again.model.state_dict().values(), whole.model.state_dict().values()): torch.testing.assert_close(a, b)
    m = load_model(ckpt)
    assert isinstance(m.diffusion, FlowMatching) and m.config.objective == 'flow'

@pytest.mark.parametrize('suffix', ['.pt2', '.onnx'])
def test_a_flow_model_exported_as_a_graph_samples_as_its_weights(flow_run, tmp_path, suffix):
    if suffix == '.onnx': pytest.importorskip('onnxruntime'); pytest.importorskip('onnxscript')
    _, ckpt = flow_run
    graph = export_model(ckpt, tmp_path/f'flow{suffix}')
    a, b = load_model(ckpt), load_model(graph)
    kw = dict(labels=[0, 5], shape=a.shape, sampler='heun', steps=3, generator=None)
    xa = sample(a.model, a.diffusion, **{**kw, 'generator': torch.Generator().manual_seed(0)})
    xb = sample(b.model, b.diffusion, **{**kw, 'generator': torch.Generator().manual_seed(0)})
    torch.testing.assert_close(xa, xb, rtol=0, atol=1e-4)

def cli(command, *args, capsys):
    try: command([str(a) for a in args]); code = 0
    except SystemExit as e: code = e.code
    out, err = capsys.readouterr()
    return code, out, err

def test_the_commands_sample_a_flow_model_and_refuse_what_it_cannot_do_by_name(flow_run, tmp_path, capsys):
    _, ckpt = flow_run
    code, out, err = cli(minddpm_sample, ckpt, '--sampler', 'heun', '--steps', '2', '--out', tmp_path/'s.png', capsys=capsys)
    assert code == 0 and (tmp_path/'s.png').is_file(), err
    code, _, err = cli(minddpm_sample, ckpt, '--eta', '0', '--out', tmp_path/'e.png', capsys=capsys)
    assert code == 2 and '--eta does nothing with a flow model' in err and not (tmp_path/'e.png').exists()
    m = load_model(ckpt)
    with pytest.raises(ValueError, match="eta=0.0 does nothing with a flow model"):   # from Python too
        sample(m.model, m.diffusion, [1], shape=m.shape, steps=2, eta=0.0)
    code, _, err = cli(minddpm_sample, ckpt, '--sampler', 'ddim', '--out', tmp_path/'d.png', capsys=capsys)
    assert code == 2 and "this model was trained with flow matching (objective 'flow', lesson 13): use 'euler' or 'heun'" in err
    code, _, err = cli(minddpm_sample, '--sampler', 'euler', '--out', tmp_path/'v.png', capsys=capsys)   # the shipped v-model
    assert code == 2 and "sampler 'euler' follows a flow-matching model" in err
    code, _, err = cli(minddpm_sample, ckpt, '--sampler', 'heun', '--spacing', 'trailing', capsys=capsys)
    assert code == 2 and '--spacing does nothing with --sampler heun' in err
    from PIL import Image
    Image.new('L', (16, 16), 128).save(tmp_path/'x.png')
    code, _, err = cli(minddpm_edit, ckpt, tmp_path/'x.png', '--task', 'denoise', '--sigma', '0.3', '--out', tmp_path/'o.png', capsys=capsys)
    assert code == 2 and "trained with flow matching (objective 'flow', lesson 13), which the edits do not take yet" in err
    code, _, err = cli(minddpm_demo, ckpt, capsys=capsys)
    assert code == 2 and "trained with flow matching (objective 'flow', lesson 13), which it does not serve yet" in err

def test_train_takes_objective_flow_and_t_sampling_on_the_command_line(tmp_path, capsys):
    from minddpm.parsers import _train_changes, train_parser
    def config(*argv):   # what minddpm_train runs (a run itself: flow_run)
        return dataclasses.replace(TRAIN_PRESETS['tiny'], **_train_changes(train_parser().parse_args(list(argv))))
    cfg = config('--objective', 'flow')                                # the recipe measured best in lesson 13, as the preset
    assert (cfg.objective, cfg.t_sampling, cfg.weighting) == ('flow', 'logit_normal', 'uniform') == tuple(
        getattr(TRAIN_PRESETS['flow'], k) for k in ('objective', 't_sampling', 'weighting'))
    cfg = config('--objective', 'flow', '--t-sampling', 'uniform', '--weighting', 'min_snr')   # what is given is kept
    assert (cfg.t_sampling, cfg.weighting) == ('uniform', 'min_snr')
    for argv in (['--t-sampling', 'logit_normal'], ['--t-sampling', 'uniform'], ['--preset', 'colab', '--t-sampling', 'uniform']):
        code, _, err = cli(minddpm_train, *argv, '--steps', '2', '--out', tmp_path/'v', capsys=capsys)   # an option that does nothing
        assert code == 2 and "--t-sampling does nothing with objective" in err and 'add --objective flow' in err, argv
        assert not (tmp_path/'v').exists()
    c = _train_changes(train_parser().parse_args(['--preset', 'flow', '--objective', 'v']))
    assert dataclasses.replace(TRAIN_PRESETS['flow'], **c).t_sampling == 'uniform'   # a diffusion run from the flow preset

def test_reflow_trains_a_flow_model_on_its_own_pairs_and_refuses_a_diffusion_model(flow_run, tmp_path):
    from minddpm.conditioning import NULL_LABEL
    from minddpm.flow import reflow, reflow_pairs
    _, ckpt = flow_run
    m = load_model(ckpt)
    pairs = reflow_pairs(m.model, m.diffusion, len(m.classes), 40, m.shape, steps=2, p_uncond=0.25, batch=16)
    v = load_model()
    with pytest.raises(ValueError, match="reflow pairs come from a flow model's Euler steps; this model predicts 'v'"):
        reflow_pairs(v.model, v.diffusion, 10, 4, v.shape)
    x0, eps, y = pairs
    assert x0.shape == eps.shape == (40, *m.shape) and y.shape == (40,) and 0 < (y == NULL_LABEL).sum() < 40
    again = sample(m.model, m.diffusion, y[:16], shape=m.shape, steps=2, w=1.0, x_T=eps[:16], precision='auto')
    torch.testing.assert_close(x0[:16], again)                     # x̂0 is the model's own sample from ε
    run = reflow(ckpt, pairs, steps=3, out=str(tmp_path/'rf'), progress=False)
    assert run.step == 3 and len(run.history) == 3
    r = load_model(tmp_path/'rf'/'checkpoint.pt')
    assert isinstance(r.diffusion, FlowMatching)
    assert any((a - b).abs().max() > 0 for a, b in zip(r.model.state_dict().values(), m.model.state_dict().values()))
    with pytest.raises(ValueError, match="reflow retrains a flow model .objective 'flow'.; .* predicts 'v'"):
        from importlib import resources
        reflow(resources.files('minddpm.assets') / 'digits_tiny.pt', pairs, steps=1, out=str(tmp_path/'no'))
