"Progressive distillation (lesson 14): the student's target against lesson 05's DDIM steps, rounds, commands, refusals."
from importlib import resources
from pathlib import Path

import pytest
import torch

from minddpm.checkpoint import load_checkpoint
from minddpm.cli import minddpm_distill, minddpm_sample
from minddpm.conditioning import NULL_LABEL
from minddpm.distill import Teacher, distill, distill_config, distill_rounds, student_timesteps
from minddpm.run import Run, TrainConfig
from minddpm.sampling import _eps, ddim_step, ddim_timesteps, sample
from minddpm.training import export_model, load_model, train

SHIPPED, SHIPPED_PATH = load_model(), str(resources.files('minddpm.assets') / 'digits_tiny.pt')

def test_student_timesteps_nest_in_their_teachers():
    "Every student timestep is a teacher timestep, and the teacher's odd ones fall in between: two teacher steps per student step."
    for calls in (1, 2, 3, 4, 5, 8, 16, 25, 32, 64, 125, 500):
        s, t = student_timesteps(1000, calls), student_timesteps(1000, 2 * calls)
        assert t[::2] == s and len(t) == 2 * len(s) == 2 * calls and s[0] == 999
        assert all(a > b > c for a, b, c in zip(t[::2], t[1::2], t[2::2]))
    assert student_timesteps(1000, 4) == ddim_timesteps(1000, 4, 'trailing') == [999, 749, 499, 249]

@pytest.mark.parametrize('calls', [1, 2, 4])
def test_one_student_step_on_its_target_lands_where_two_guided_teacher_steps_land(calls):
    """A network that outputs exactly `Teacher`'s target, stepped once by lesson 05's `ddim_step`, lands where two of
    lesson 05's guided DDIM steps of the teacher land, at every student timestep. A target from the unguided teacher
    must land elsewhere: the check can fail."""
    d, net = SHIPPED.diffusion, SHIPPED.model
    teacher, unguided = Teacher(net, d, calls, w=3.0), Teacher(net, d, calls, w=1.0)
    ts, tt = student_timesteps(d.T, calls), student_timesteps(d.T, 2 * calls)
    g = torch.Generator().manual_seed(calls)
    y = torch.tensor([0, 3, 7, NULL_LABEL])
    for i, t in enumerate(ts):
        z = torch.randn(4, *SHIPPED.shape, generator=g) * (1 if i == 0 else 0.8)
        tb = torch.full((4,), t)
        s = ts[i + 1] if i + 1 < len(ts) else None
        with torch.no_grad():   # two of the teacher's steps, as `sample` takes them (guided, x̂0 clipped)
            z_m, _ = ddim_step(d, z, t, tt[2 * i + 1], _eps(net, d, z, tb, y, 3.0), eta=0.0)
            z_s, _ = ddim_step(d, z_m, tt[2 * i + 1], s, _eps(net, d, z_m, torch.full((4,), tt[2 * i + 1]), y, 3.0), eta=0.0)
        def student_step(target):   # one DDIM step of a network whose output is `target`, nothing clipped
            eps = d.predictions(z, tb, target)[0]
            return ddim_step(d, z, t, s, eps, eta=0.0, clip=False)[0]
        assert (student_step(teacher(z, tb, y)) - z_s).abs().max() < 1e-4
        assert (student_step(unguided(z, tb, y)) - z_s).abs().max() > 1e-2

def test_the_rounds_halve_the_calls_and_refuse_what_halving_cannot_reach():
    assert distill_rounds(64, 4) == [32, 16, 8, 4] and distill_rounds(64, 1)[-1] == 1 and distill_rounds(8, 4) == [4]
    for start, calls in ((64, 3), (64, 64), (48, 5), (7, 1)):
        with pytest.raises(ValueError, match='cannot be reached|is odd'): distill_rounds(start, calls)
    with pytest.raises(ValueError, match='start 7 is odd: no round can halve it; give a start that is calls × a power of two, e.g. 8'):
        distill_rounds(7, 1)
    with pytest.raises(ValueError, match='calls must be a whole number'): distill_rounds(64, 0)

@pytest.fixture(scope='module')
def rounds(tmp_path_factory):
    "Two short rounds from the shipped model: 16 → 8 → 4 calls, 8 steps each, w = 3."
    out = tmp_path_factory.mktemp('distill')
    last = distill(None, calls=4, start=16, steps=8, lr=1e-4, out=out, progress=False, batch_size=32)
    return out, last

def test_a_round_learns_its_teachers_two_steps(tmp_path):
    """One round of 30 steps brings the student's prediction on its training inputs much nearer the teacher's two-step
    target than the teacher itself (the student's start) is: it learns the jump, guidance included."""
    run = Run(distill_config(SHIPPED_PATH, 8, steps=30, lr=3e-4, out=tmp_path, batch_size=32))
    g = torch.Generator().manual_seed(0)
    x0 = torch.stack([run.train_dl.dataset[i][0] for i in range(32)]); y = torch.tensor([run.train_dl.dataset[i][1] for i in range(32)])
    t = run.diffusion.sample_timesteps(32, g); xt, _ = run.diffusion.add_noise(x0, t, torch.randn(x0.shape, generator=g))
    target = run.teacher(xt, t, y)
    def error(model):
        with torch.no_grad(): return (model.eval()(xt, t, y) - target).square().mean().item()
    before = error(run.model)
    train(run=run, progress=False)
    assert run.step == 30 and error(run.model) < 0.5 * before   # the raw weights: 30 steps are too few for the EMA to follow

def test_a_student_checkpoint_records_its_calls_and_samples_in_them_one_call_a_step(rounds):
    out, last = rounds
    assert last == out/'calls_004'/'checkpoint.pt'
    for calls in (8, 4):
        cfg = load_checkpoint(out/f'calls_{calls:03d}'/'checkpoint.pt')['config']
        assert (cfg['calls'], cfg['guidance'], cfg['steps']) == (calls, 3.0, 8)
    assert load_checkpoint(last)['config']['teacher'] == str(out/'calls_008'/'checkpoint.pt')
    m = load_model(last)
    seen = []
    class Counted(torch.nn.Module):
        def __init__(self, net): super().__init__(); self.net = net
        def forward(self, x, t, y=None): seen.append((len(x), int(t[0]))); return self.net(x, t, y)
    x = sample(Counted(m.model), m.diffusion, torch.tensor([1, 2, 3]), shape=m.shape, generator=torch.Generator().manual_seed(0))
    assert seen == [(3, t) for t in (999, 749, 499, 249)] and x.shape == (3, *m.shape)
    seen.clear()
    sample(Counted(SHIPPED.model), SHIPPED.diffusion, torch.tensor([1, 2, 3]), shape=m.shape, steps=4, spacing='trailing', eta=0.0)
    assert [n for n, _ in seen] == [6] * 4   # the teacher, guided: two branches a call

def test_a_student_refuses_what_it_was_not_distilled_for(rounds):
    _, last = rounds
    m = load_model(last)
    for kw, what in ((dict(steps=8), 'steps=8'), (dict(w=1.0), 'w=1.0'), (dict(sampler='dpm++'), "sampler='dpm\\+\\+'"),
                     (dict(eta=1.0), 'eta=1.0'), (dict(spacing='linspace'), "spacing='linspace'")):
        with pytest.raises(ValueError, match=f"{what}: this model is a student distilled to sample in 4 calls"):
            sample(m.model, m.diffusion, [1], shape=m.shape, **kw)
    same = dict(labels=[1, 2], shape=m.shape, generator=torch.Generator().manual_seed(0))
    a = sample(m.model, m.diffusion, **same)
    assert torch.equal(a, sample(m.model, m.diffusion, **{**same, 'generator': torch.Generator().manual_seed(0)},
                                 steps=4, w=3.0, eta=0.0, sampler='ddim', spacing='trailing'))
    from minddpm.editing import img2img
    with pytest.raises(ValueError, match='student distilled to sample in 4 calls .* edit with its teacher'):
        img2img(m.model, m.diffusion, torch.zeros(1, *m.shape), 0.5)

def test_distillation_refuses_a_teacher_that_cannot_teach(tmp_path, rounds):
    _, last = rounds
    junk = tmp_path/'notes.pt'; junk.write_text('not a model')
    with pytest.raises(ValueError, match='is not a readable minddpm checkpoint or model file'): distill(junk, out=tmp_path/'a')
    with pytest.raises(FileNotFoundError, match='no checkpoint at'): distill(tmp_path/'missing.pt', out=tmp_path/'a')
    eps = Run(TrainConfig(objective='eps', steps=1, out=str(tmp_path/'eps')))
    export_model(eps, tmp_path/'eps.pt')
    with pytest.raises(ValueError, match="predicts 'eps'; distillation takes a teacher predicting 'v' or 'x0'"):
        distill(tmp_path/'eps.pt', out=tmp_path/'a')
    with pytest.raises(ValueError, match='TrainConfig.objective must be'):
        TrainConfig(objective='eps', teacher='x.pt', calls=4, guidance=3.0)
    with pytest.raises(ValueError, match='TrainConfig.calls must be None unless a teacher is given'): TrainConfig(calls=4)
    with pytest.raises(ValueError, match='is a student of 4 calls at w = 3, and its rounds go on from those: guidance 2 cannot change them; leave it out'):
        distill(last, calls=2, guidance=2.0, out=tmp_path/'a')
    with pytest.raises(ValueError, match='3 calls cannot be reached from the teacher\'s 64'): distill(None, calls=3, out=tmp_path/'a')
    assert not (tmp_path/'a').exists()

def test_a_round_cut_short_is_resumed_by_the_same_call(tmp_path):
    "A round stopped at step 3 of 6 (its checkpoint kept) goes on from step 3 when `distill` is called again, then the next round runs."
    run = Run(distill_config(None, 4, steps=6, out=tmp_path/'calls_004', batch_size=16))
    train(run=run, until=3, progress=False)
    assert load_checkpoint(tmp_path/'calls_004'/'checkpoint.pt')['step'] == 3
    last = distill(None, calls=2, start=8, steps=6, out=tmp_path, progress=False, batch_size=16)
    state = load_checkpoint(tmp_path/'calls_004'/'checkpoint.pt')
    assert state['step'] == 6 and [h[0] for h in state['history']][:3] == [1, 2, 3]
    assert last == tmp_path/'calls_002'/'checkpoint.pt' and load_model(last).diffusion.calls == 2
    with pytest.raises(ValueError, match='holds a round distilled from shipped at w = 3, not from shipped at w = 2'):
        distill(None, calls=2, start=8, guidance=2.0, steps=6, out=tmp_path, progress=False)   # the same out, another w

def test_commands_distill_export_sample_and_serve_a_student(tmp_path, rounds, capsys):
    _, last = rounds
    minddpm_distill([str(last), '--calls', '2', '--steps', '3', '--batch-size', '16', '--out', str(tmp_path/'d'),
                     '--export', str(tmp_path/'student.pt2')])
    said = capsys.readouterr().out
    assert 'distilled to 2 calls at w = 3' in said and (tmp_path/'student.pt2').is_file()
    weights, graph = load_model(tmp_path/'d'/'calls_002'/'checkpoint.pt'), load_model(tmp_path/'student.pt2')
    assert graph.diffusion.calls == 2 and graph.diffusion.guidance == 3.0
    a = sample(weights.model, weights.diffusion, [4, 5], shape=weights.shape, generator=torch.Generator().manual_seed(1))
    b = sample(graph.model, graph.diffusion, [4, 5], shape=graph.shape, generator=torch.Generator().manual_seed(1))
    assert (a - b).abs().max() < 1e-4
    minddpm_sample([str(tmp_path/'student.pt2'), '--out', str(tmp_path/'s.png'), '--precision', 'fp32'])
    assert (tmp_path/'s.png').is_file()
    with pytest.raises(SystemExit):
        minddpm_sample([str(tmp_path/'student.pt2'), '--steps', '8', '--out', str(tmp_path/'t.png')])
    assert 'steps=8: this model is a student distilled to sample in 2 calls' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        minddpm_distill([str(tmp_path/'student.pt2'), '--out', str(tmp_path/'e')])
    assert 'is a graph; a student starts from its teacher\'s weights' in capsys.readouterr().err
    assert not (tmp_path/'e').exists()

def test_a_student_exported_as_an_onnx_graph_samples_as_its_weights(rounds, tmp_path):
    pytest.importorskip('onnxruntime'); pytest.importorskip('onnxscript')
    _, last = rounds
    a, b = load_model(last), load_model(export_model(last, tmp_path/'student.onnx'))
    assert (b.diffusion.calls, b.diffusion.guidance) == (4, 3.0)
    xa, xb = (sample(m.model, m.diffusion, [0, 9], shape=m.shape, generator=torch.Generator().manual_seed(2)) for m in (a, b))
    torch.testing.assert_close(xa, xb, rtol=0, atol=1e-4)

def test_the_demo_serves_a_student_in_its_calls(rounds):
    pytest.importorskip('gradio')
    from minddpm.demo import Batcher, _api_inputs, _checked, _defaults
    import gradio as gr
    _, last = rounds
    m = load_model(last)
    assert _defaults(m.diffusion) == dict(w=3.0, sampler='ddim', steps=4)
    assert _api_inputs(_defaults(m.diffusion))['png'][2:4] == (('w', 3.0), ('steps', 4))   # what a short HTTP call is filled with
    b = Batcher(m, precision='fp32')
    try:
        images, info = b(_checked(gr, m, '7', 2, 3.0, 'ddim', 4, 0))
        direct = sample(m.model, m.diffusion, [7, 7], shape=m.shape, x_T=torch.randn((2, *m.shape), generator=torch.Generator().manual_seed(0)), uint8=True)
        assert images.shape == (2, *m.shape) and (images.int() - direct.int()).abs().max() <= 1
        with pytest.raises(gr.Error, match="sampler='dpm\\+\\+', steps=20: this model is a student"):
            _checked(gr, m, '7', 2, 3.0, 'dpm++', 20, 0)
    finally: b.close()
