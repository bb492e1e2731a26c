"""Prediction targets (ε, v, x0) and loss weightings: every sampler gives the same images from the same ideal denoiser
in each parametrisation, training uses the target and weighting its config names, checkpoints record both, and files
written before they existed load as ε, uniform."""
import dataclasses, math

import pytest
import torch

from minddpm.cli import minddpm_sample, minddpm_train
from minddpm.conditioning import NULL_LABEL
from minddpm.data import load_bundled, to_unit_range
from minddpm.forward import OBJECTIVES, Diffusion
from minddpm.sampling import IdealDenoiser, sample
from minddpm.training import (TRAIN_PRESETS, Run, TrainConfig, export_model, load_checkpoint, load_model, resume,
                              save_checkpoint, train, train_step)
from test_commands import run, small

SHAPE = (1, 8, 8)

@pytest.fixture(scope='module')
def digits():
    d = load_bundled()
    return to_unit_range(d['images'][:40]), d['labels'][:40]

@pytest.mark.parametrize('schedule', ['linear', 'cosine'])
@pytest.mark.parametrize('sampler,kw', [('ddim', dict(steps=20, eta=0.0)), ('ddim', dict(steps=10, eta=1.0)),
                                        ('dpm++', dict(steps=10)), ('ddpm', {})])
def test_every_sampler_gives_the_same_images_whatever_the_ideal_denoiser_predicts(digits, schedule, sampler, kw):
    "The ideal denoiser in ε, v and x0 terms is one function in three coordinates: the same noise must give the same images."
    images, labels = digits
    got = {}
    for objective in OBJECTIVES:
        diffusion = Diffusion(schedule, objective=objective)
        model = IdealDenoiser(images, labels, diffusion)
        got[objective] = sample(model, diffusion, labels[:6], shape=SHAPE, sampler=sampler, w=2.0,
                                generator=torch.Generator().manual_seed(0), **kw)
    for objective in ('v', 'x0'):
        torch.testing.assert_close(got[objective], got['eps'], rtol=0, atol=2e-3)   # a wrong reading is off by ≥ 0.1
    # and the images are the denoiser's own digits (its samples are training images), not noise
    nearest = torch.cdist(got['v'].flatten(1), images.flatten(1)).min(1).values
    assert nearest.max() < 0.05 * math.sqrt(images[0].numel())

def test_the_ideal_denoiser_of_each_target_outputs_that_target(digits):
    images, labels = digits
    x0, eps, t = images[:5], torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(1)), torch.full((5,), 30)
    for objective in OBJECTIVES:
        diffusion = Diffusion(objective=objective)
        xt, _ = diffusion.add_noise(x0, t, eps)
        out = IdealDenoiser(images, labels, diffusion)(xt, t, labels[:5])   # at t = 30 it knows the image
        torch.testing.assert_close(out, diffusion.target(x0, eps, t), rtol=0, atol=1e-3)

@pytest.mark.parametrize('objective,weighting', [('v', 'min_snr'), ('x0', 'uniform'), ('eps', 'min_snr')])
def test_a_run_trains_on_its_target_and_weighting_and_its_checkpoint_records_them(tmp_path, objective, weighting):
    cfg = small(tmp_path/'a', steps=4, objective=objective, weighting=weighting, snr_gamma=2.0)
    r = Run(cfg)
    x, y = next(iter(r.train_dl))
    # the loss train_step reports is the weighted target MSE, computed here by hand from the same draws
    from minddpm.distributed import rank_positions, step_draws
    d = step_draws(cfg.seed, 0, cfg.batch_size, rank_positions(r.place, cfg.batch_size), x.shape[1:], 1000, cfg.p_uncond,
                   torch.Generator())
    with torch.no_grad():
        out = r.model(r.diffusion.add_noise(x, d.t, d.eps)[0], d.t, torch.where(d.drop, NULL_LABEL, y))
        snr = r.diffusion.snr[d.t]
        scale = {'eps': snr, 'v': snr + 1, 'x0': torch.ones_like(snr)}[objective]       # what the target's MSE weighs x0's error by
        want_w = snr.clamp(max=2.0) / scale if weighting == 'min_snr' else torch.ones_like(snr)
        a, s = (c[d.t].view(-1, 1, 1, 1) for c in (r.diffusion.sqrt_alpha_bars, r.diffusion.sqrt_one_minus_alpha_bars))
        target = {'eps': d.eps, 'x0': x, 'v': a * d.eps - s * x}[objective]
        want = (want_w * (out - target).square().mean((1, 2, 3))).mean().item()
    assert train_step(r, x, y) == pytest.approx(want, rel=1e-5)
    r = train(cfg, progress=False)
    state = load_checkpoint(tmp_path/'a'/'checkpoint.pt')
    assert (state['config']['objective'], state['config']['weighting'], state['config']['snr_gamma']) == (objective, weighting, 2.0)
    m = load_model(tmp_path/'a'/'checkpoint.pt')
    assert m.diffusion.objective == objective and m.config.weighting == weighting
    assert resume(tmp_path/'a'/'checkpoint.pt').diffusion.objective == objective

def test_files_from_before_targets_existed_load_as_eps_uniform(tmp_path, monkeypatch):
    "Old checkpoints and exports have no objective or weighting in their config: they are ε, uniform, whatever today's defaults."
    train(small(tmp_path/'a', steps=2, objective='v', weighting='min_snr'), progress=False)
    ckpt = tmp_path/'a'/'checkpoint.pt'
    state = torch.load(ckpt, weights_only=True)
    for k in ('objective', 'weighting', 'snr_gamma'): del state['config'][k]
    torch.save(state, ckpt)
    export_model(ckpt, tmp_path/'old.pt')
    monkeypatch.setattr(TrainConfig, 'objective', 'v')             # as if the default had moved on
    monkeypatch.setattr(TrainConfig, 'weighting', 'min_snr')
    for path in (ckpt, tmp_path/'old.pt'):
        m = load_model(path)
        assert (m.diffusion.objective, m.config.objective, m.config.weighting) == ('eps', 'eps', 'uniform')
    r = resume(ckpt)
    assert (r.diffusion.objective, r.cfg.weighting) == ('eps', 'uniform')

@pytest.mark.parametrize('field,value', [('objective', 'score'), ('weighting', 'p2'), ('snr_gamma', 0), ('snr_gamma', math.nan)])
def test_the_config_refuses_an_unknown_target_or_weighting(field, value):
    with pytest.raises(ValueError, match=f'TrainConfig.{field} must be .*got {value!r}'):
        TrainConfig(**{field: value})

def test_the_commands_take_a_target_and_a_weighting(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(minddpm_train, '--steps', '3', '--batch-size', '8', '--objective', 'x0', '--weighting', 'min_snr',
                         '--snr-gamma', '3', '--out', 'run', capsys=capsys)
    assert code == 0, err[-2000:]
    assert {'objective': 'x0', 'weighting': 'min_snr', 'snr_gamma': 3.0}.items() <= load_checkpoint(tmp_path/'run'/'checkpoint.pt')['config'].items()
    code, out, err = run(minddpm_sample, 'run/checkpoint.pt', '--n', '1', '--steps', '3', '--sampler', 'dpm++', '--out', 'x.png',
                         capsys=capsys)
    assert code == 0 and (tmp_path/'x.png').is_file(), err[-2000:]
    code, out, err = run(minddpm_train, '--resume', 'run/checkpoint.pt', '--objective', 'v', capsys=capsys)
    assert code == 2 and "cannot change objective ('x0' → 'v')" in err, err
    for args, msg in ((['--objective', 'score'], "argument --objective: invalid choice: 'score'"),
                      (['--weighting', 'p2'], "argument --weighting: invalid choice: 'p2'"),
                      (['--snr-gamma', 'nan'], "argument --snr-gamma: must be a finite number, got 'nan'")):
        code, out, err = run(minddpm_train, *args, '--out', 'other', capsys=capsys)
        assert code == 2 and msg in err, err
    assert not (tmp_path/'other').exists()

def test_min_snr_gamma_is_refused_where_it_does_nothing_and_compared_on_resume_only_where_it_counts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(minddpm_train, '--preset', 'colab', '--snr-gamma', '3', '--out', 'uniform', capsys=capsys)  # colab weighs uniformly
    assert code == 2 and "--snr-gamma does nothing with uniform weighting" in err and not (tmp_path/'uniform').exists(), err
    train(small(tmp_path/'u', steps=2, weighting='uniform'), progress=False)                         # uniform: γ is not part of the run
    assert resume(tmp_path/'u'/'checkpoint.pt', snr_gamma=2.0).cfg.weighting == 'uniform'
    code, out, err = run(minddpm_train, '--resume', 'u/checkpoint.pt', '--steps', '3', '--snr-gamma', '2', capsys=capsys)
    assert code == 2 and "--snr-gamma does nothing with uniform weighting" in err, err
    train(small(tmp_path/'m', steps=2), progress=False)                                              # tiny's min-SNR: γ defines the run
    with pytest.raises(ValueError, match=r"cannot change snr_gamma \(5.0 → 2.0\)"): resume(tmp_path/'m'/'checkpoint.pt', snr_gamma=2.0)

@pytest.mark.parametrize('args,message', [(['--sampler', 'dpm++', '--eta', '0'], "--eta does nothing with --sampler dpm++: dpm++ is deterministic"),
                                          (['--sampler', 'ddpm', '--steps', '20'], "--steps does nothing with --sampler ddpm"),
                                          (['--sampler', 'ddpm', '--spacing', 'trailing', '--eta', '1'], "--spacing and --eta do nothing")])
def test_sampling_options_the_sampler_does_not_use_are_refused(tmp_path, capsys, args, message):
    code, out, err = run(minddpm_sample, 'missing.pt', '--out', tmp_path/'x.png', *args, capsys=capsys)   # refused before loading
    assert code == 2 and message in err and not (tmp_path/'x.png').exists(), err
