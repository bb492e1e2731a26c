"""Training as users run it: the two commands end to end, a save interrupted half-way, and bad arguments."""
import subprocess, sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from minddpm.training import Run, TrainConfig, load_checkpoint, save_checkpoint

def cli(name, *args, cwd):
    code = f'from minddpm.training import {name}; {name}()'
    return subprocess.run([sys.executable, '-c', code, *args], cwd=cwd, capture_output=True, text=True, timeout=600)

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
])
def test_bad_arguments(tmp_path, name, args, msg):
    (tmp_path/'bad.pt').write_bytes(b'not a checkpoint')
    r = cli(name, *args, cwd=tmp_path)
    assert r.returncode == 2 and msg in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]

def test_unknown_label(tmp_path):
    run = Run(TrainConfig(steps=1, out=str(tmp_path)))
    save_checkpoint(run, tmp_path/'c.pt')
    r = cli('minddpm_sample', 'c.pt', '--labels', '10', cwd=tmp_path)
    assert r.returncode == 2 and 'labels [10] are unknown to this model; it knows 0 … 9' in r.stderr
