"""Training as users run it: the two commands end to end, a save interrupted half-way, and bad arguments. Commands run
in a real process where only a process shows it (exit status, W&B's environment); elsewhere in-process, which checks the
same arguments and prints the same messages without a process start (seconds a case)."""
import os, subprocess, sys, time
from importlib import resources
from pathlib import Path

import pytest
import torch
from PIL import Image

from minddpm.cli import minddpm_sample, minddpm_train
from minddpm.training import (TRAIN_PRESETS, resolve_precision, Run, TrainConfig, export_model, load_checkpoint, load_model, resume,
                              save_checkpoint, train)
from test_commands import run

SHIPPED = str(resources.files('minddpm.assets') / 'digits_tiny.pt')

def cli(name, *args, cwd, env=None):
    code = f'from minddpm.cli import {name}; {name}()'
    return subprocess.run([sys.executable, '-c', code, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, env=env)

def test_train_then_sample(tmp_path):
    r = cli('minddpm_train', '--steps', '40', '--batch-size', '16', '--out', 'run', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'checkpoint: run/checkpoint.pt' in r.stdout
    state = load_checkpoint(tmp_path/'run'/'checkpoint.pt')
    assert state['step'] == 40 and state['version'] and state['config']['steps'] == 40
    losses = [h[1] for h in state['history']]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:5]) / 5  # the loss falls clearly
    r = cli('minddpm_sample', 'run/checkpoint.pt', '--labels', '3', '7', '--n', '2', '--steps', '5', '--out', 'grid.png', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'saved 4 samples to grid.png' in r.stdout and Image.open(tmp_path/'grid.png').size[0] > 100
    r = cli('minddpm_train', '--resume', 'run/checkpoint.pt', '--steps', '45', cwd=tmp_path)
    assert r.returncode == 0 and load_checkpoint(tmp_path/'run'/'checkpoint.pt')['step'] == 45, r.stderr[-2000:]

def test_precision_from_the_command_line(tmp_path, capsys):
    code, out, err = run(minddpm_train, '--steps', '3', '--batch-size', '8', '--precision', 'bf16', '--out', tmp_path/'run', capsys=capsys)
    assert code == 0, err[-2000:]
    state = load_checkpoint(tmp_path/'run'/'checkpoint.pt')
    assert state['config']['precision'] == 'bf16' and all(torch.isfinite(torch.tensor([h[1] for h in state['history']])))

def test_flips_follow_the_preset_unless_told(tmp_path, capsys):
    assert TRAIN_PRESETS['colab'].hflip and TRAIN_PRESETS['full'].hflip and not TRAIN_PRESETS['tiny'].hflip
    code, out, err = run(minddpm_train, '--steps', '2', '--batch-size', '8', '--hflip', '--out', tmp_path/'run', capsys=capsys)
    assert code == 0, err[-2000:]
    assert load_checkpoint(tmp_path/'run'/'checkpoint.pt')['config']['hflip']
    assert resume(tmp_path/'run'/'checkpoint.pt').cfg.hflip   # the flips come back with the run

def test_interrupted_save_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    run = Run(TrainConfig(steps=10, batch_size=8, out=str(tmp_path)))
    path = save_checkpoint(run, tmp_path/'checkpoint.pt')
    run.step = 5
    def dies_half_way(obj, f, *a, **k):
        Path(f).write_bytes(b'PK\x03\x04 half a zip')   # a partial file, then the process "dies"
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, 'save', dies_half_way)
    with pytest.raises(KeyboardInterrupt): save_checkpoint(run, path)
    assert load_checkpoint(path)['step'] == 0          # the previous checkpoint is whole

@pytest.mark.parametrize('name,args,msg', [
    ('minddpm_sample', ['missing.pt'], 'no checkpoint at missing.pt'),
    ('minddpm_sample', ['bad.pt'], 'is not a readable minddpm checkpoint'),
    ('minddpm_train', ['--preset', 'huge'], "Unknown preset 'huge'"),
    ('minddpm_train', ['--dataset', 'imagenet', '--steps', '1'], 'Known names: digits'),
    ('minddpm_train', ['--img-size', '30', '--steps', '1'], 'valid sizes: 4, 8, 12, 16'),
    ('minddpm_train', ['--steps', '0'], 'argument --steps: must be at least 1, got 0'),
    ('minddpm_train', ['--steps', '5', '--epochs', '2'], 'not allowed with argument'),
    ('minddpm_train', ['--minutes', '-1'], 'argument --minutes: must be greater than 0, got -1'),
    ('minddpm_train', ['--precision', 'int8'], "invalid choice: 'int8'"),
    ('minddpm_sample', [SHIPPED, '--img-size', '30'], 'valid sizes: 4, 8, 12, 16'),
    ('minddpm_sample', [SHIPPED, '--eta', '2'], 'argument --eta: must be in [0, 1], got 2'),
    ('minddpm_sample', [SHIPPED, '--labels', '3', '11'], '--labels 11 is unknown to this model; it knows 0, 1, 2'),
])
def test_bad_arguments(tmp_path, monkeypatch, capsys, name, args, msg):
    monkeypatch.chdir(tmp_path)
    (tmp_path/'bad.pt').write_bytes(b'not a checkpoint')
    code, out, err = run(dict(minddpm_train=minddpm_train, minddpm_sample=minddpm_sample)[name], *args, capsys=capsys)
    assert code == 2 and msg in err, err[-2000:]

def test_bad_arguments_end_a_real_process_with_status_2_and_no_traceback(tmp_path):
    r = cli('minddpm_sample', SHIPPED, '--guidance', 'nan', cwd=tmp_path)
    assert r.returncode == 2 and "argument --guidance: must be a finite number, got 'nan'" in r.stderr and 'Traceback' not in r.stderr

def test_unknown_label(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save_checkpoint(Run(TrainConfig(steps=1, out=str(tmp_path))), tmp_path/'c.pt')
    code, out, err = run(minddpm_sample, 'c.pt', '--labels', '10', capsys=capsys)
    assert code == 2 and '--labels 10 is unknown to this model; it knows 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 (or 0 … 9)' in err
    code, out, err = run(minddpm_sample, 'c.pt', '--labels', '3', 'cat', capsys=capsys)
    assert code == 2 and '--labels cat is unknown to this model' in err

def test_epochs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(minddpm_train, '--epochs', '1', '--batch-size', '32', '--out', 'e', capsys=capsys)
    assert code == 0, err[-2000:]
    per_epoch = len(Run(TrainConfig(batch_size=32, out=str(tmp_path/'x'))).train_dl)
    state = load_checkpoint(tmp_path/'e'/'checkpoint.pt')
    assert state['step'] == state['config']['steps'] == per_epoch
    assert (tmp_path/'e'/'samples'/f'step_{per_epoch:06d}.png').exists()   # the grid at the end

def test_a_time_budget_on_the_real_clock(tmp_path):
    "The budget's logic is tested on simulated time in test_budget.py; this is the real clock, with no grids to draw."
    t0 = time.monotonic()
    run = train(TrainConfig(minutes=0.2, batch_size=16, sample_every=0, out=str(tmp_path)), progress=False)
    assert 0.9 * 12 <= time.monotonic() - t0 <= 12 + 3, time.monotonic() - t0     # 3 s: loading the data and model
    lrs = [h[2] for h in run.history]
    assert run.step == run.cfg.steps != TrainConfig().steps and run.step > 20       # fitted after 20 steps, and finished
    assert lrs.index(max(lrs)) >= 20 and lrs[-1] < 0.05 * max(lrs)   # a whole OneCycle in the budget, peaking after the refit (at 20 on a slow machine)

def test_wandb_runs_offline_without_credentials_and_never_prompts(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith('WANDB_')} | {'HOME': str(tmp_path), 'NETRC': str(tmp_path/'none')}
    r = cli('minddpm_train', '--steps', '6', '--batch-size', '8', '--wandb', '--out', 'run', cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((tmp_path/'run'/'wandb').glob('offline-run-*'))
    assert len(runs) == 1, list((tmp_path/'run').rglob('*'))[:20]
    log = next(runs[0].glob('*.wandb')).read_bytes()
    for key in (b'loss', b'lr', b'val_loss', b'samples', b'minddpm-'):   # scalars, the grid, the checkpoint artifact
        assert key in log, key

def test_wandb_with_credentials_and_no_route_logs_offline_at_once(tmp_path):
    "A key but no way to the server (here a closed local port): one line says so within seconds, and the run logs offline."
    env = {k: v for k, v in os.environ.items() if not k.startswith('WANDB_')} | {
        'HOME': str(tmp_path), 'NETRC': str(tmp_path/'none'), 'WANDB_API_KEY': 'x' * 40, 'WANDB_BASE_URL': 'http://127.0.0.1:9'}
    t0 = time.monotonic()
    r = cli('minddpm_train', '--steps', '4', '--batch-size', '8', '--wandb', '--out', 'run', cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'minddpm_train: warning: W&B credentials found, but http://127.0.0.1:9 cannot be reached: logging offline' in r.stderr
    assert len(list((tmp_path/'run'/'wandb').glob('offline-run-*'))) == 1 and time.monotonic() - t0 < 90

def test_exported_model_samples_like_its_checkpoint(tmp_path):
    run = train(TrainConfig(steps=30, batch_size=16, sample_every=0, out=str(tmp_path)), progress=False)
    path = export_model(tmp_path/'checkpoint.pt', tmp_path/'model.pt')
    assert path.stat().st_size < 0.3 * (tmp_path/"checkpoint.pt").stat().st_size
    from minddpm.sampling import sample
    a, b = load_model(tmp_path/'checkpoint.pt'), load_model(path)
    assert (a.shape, a.classes, a.step) == (b.shape, b.classes, b.step) == ((1, 16, 16), run.classes, 30)
    draw = lambda m: sample(m.model, m.diffusion, torch.arange(4), shape=m.shape, steps=10, eta=0.0,
                            generator=torch.Generator().manual_seed(0))
    assert (draw(a) - draw(b)).abs().max() < 0.05                            # half-precision weights, same images

def test_sample_writes_one_png_per_image_and_takes_other_sizes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(minddpm_sample, SHIPPED, '--labels', '3', '7', '--n', '2', '--steps', '5', '--img-size', '24',
                         '--out', 'grid.png', '--each', 'singles', capsys=capsys)
    assert code == 0, err[-2000:]
    files = sorted(p.name for p in (tmp_path/'singles').iterdir())
    assert files == ['0000_3.png', '0001_3.png', '0002_7.png', '0003_7.png'] and 'singles' in out
    assert Image.open(tmp_path/'singles'/files[0]).size == (24, 24)

def test_sample_defaults_match_the_library(capsys):
    "minddpm_sample's --eta default, 1, is what `sample` does when eta is left out (None: 1; a distilled student's 0)."
    from minddpm.sampling import sample
    code, out, err = run(minddpm_sample, '--help', capsys=capsys)
    m = load_model()
    kw = dict(labels=[1, 2], shape=m.shape, steps=5)
    left_out = sample(m.model, m.diffusion, generator=torch.Generator().manual_seed(0), **kw)
    given = sample(m.model, m.diffusion, eta=1.0, generator=torch.Generator().manual_seed(0), **kw)
    assert code == 0 and torch.equal(left_out, given) and 'to 1 (default: 1' in out

def test_compiled_training_matches_eager_on_the_cpu(tmp_path):
    cfg = TrainConfig(steps=3, batch_size=8, sample_every=0, val_every=100, out=str(tmp_path/'e'))
    eager = train(cfg, progress=False)
    compiled = train(TrainConfig(**{**cfg.__dict__, 'compile': True, 'out': str(tmp_path/'c')}), progress=False)
    a, b = torch.tensor([h[1] for h in eager.history]), torch.tensor([h[1] for h in compiled.history])
    assert torch.allclose(a, b, rtol=1e-3), (a, b)


def test_fp16_on_a_cpu_warns_that_it_is_slow_and_auto_never_picks_it():
    cpu = torch.device('cpu')
    with pytest.warns(UserWarning, match='fp16 on a CPU is slow.*use bf16 or fp32'):
        assert resolve_precision(cpu, 'fp16') == torch.float16
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert resolve_precision(cpu, 'auto') is None and resolve_precision(cpu, 'bf16') == torch.bfloat16
