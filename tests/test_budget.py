"""A time budget that is kept: the step count is refitted as the run goes, validation, sample grids and checkpoints are
counted, the learning-rate schedule finishes inside the budget using at least 90 % of it, and a run the budget cuts
short says so. Real training steps run, on simulated time: each step, grid, validation and checkpoint advances a clock
by a set cost, so the tests are exact and do not depend on how busy this machine is."""
import dataclasses

import pytest

import minddpm.budget as budget
import minddpm.training as training
from minddpm.cli import minddpm_train
from minddpm.training import TRAIN_PRESETS, load_checkpoint, train

class Clock:
    "Simulated seconds; training's clock while a test runs."
    def __init__(self): self.t = 0.0
    def __call__(self): return self.t

@pytest.fixture
def clock(monkeypatch):
    "Training on simulated time: a step costs `clock.step_s(step)`, a grid `clock.grid_s`, a validation and a checkpoint 0.2 s."
    c = Clock()
    c.step_s, c.grid_s, c.grids = (lambda step: 1.0), 0.0, []
    monkeypatch.setattr(training, '_clock', c)
    real_step, real_validate, real_save = training.train_step, training.validate, training.save_checkpoint
    def step(run, x, y):
        loss = real_step(run, x, y); c.t += c.step_s(run.step); return loss
    def validate(run, *a, **k):
        c.t += 0.2; return real_validate(run, *a, **k)
    def save(run, path):
        c.t += 0.2; return real_save(run, path)
    def grid(run, path, **k):                                  # the cost of a grid, without drawing one
        c.t += c.grid_s; c.grids.append(run.step); return path
    def probe(b, *a, **k): b.cost['grid'] = c.grid_s       # what one guided step times 50 would say
    for name, fn in dict(train_step=step, validate=validate, save_checkpoint=save, save_samples=grid).items():
        monkeypatch.setattr(training, name, fn)
    monkeypatch.setattr(budget.TimeBudget, 'probe_grid', probe)
    return c

def budgeted(tmp_path, minutes, **changes):
    return dataclasses.replace(TRAIN_PRESETS['tiny'], **{'batch_size': 8, 'img_size': 8, 'minutes': minutes, 'out': str(tmp_path), **changes})

def check_kept(run, clock, seconds):
    lrs = [h[2] for h in run.history]
    assert run.step == run.cfg.steps, 'the schedule did not finish'
    assert 0.9 * seconds <= clock.t <= seconds, f'used {clock.t:.1f} s of {seconds} s'
    assert lrs[-1] < 0.01 * max(lrs), 'the learning rate did not anneal'

def test_a_busy_start_does_not_shorten_the_run(tmp_path, clock):
    "The first 20 steps ran three times slower (a busy machine); fitted once on them, a 200 s run ended after 103 s."
    clock.step_s = lambda step: 3.0 if step <= 20 else 1.0
    run = train(budgeted(tmp_path, 200 / 60, sample_every=0), progress=False)
    check_kept(run, clock, 200)
    assert run.step > 150

def test_a_slower_machine_later_still_ends_in_time(tmp_path, clock):
    clock.step_s = lambda step: 1.0 if step <= 60 else 1.6
    run = train(budgeted(tmp_path, 200 / 60, sample_every=0), progress=False)
    check_kept(run, clock, 200)

def test_an_event_timed_on_a_busy_machine_is_rescaled_when_it_calms_down(tmp_path, clock, monkeypatch):
    """The first 20 steps ran three times slower, and the grid's cost was probed then (60 s for a grid that takes 20 s):
    kept as it was, it held 40 s of a 200 s budget back for nothing, and the run ended after 154 s."""
    clock.step_s, clock.grid_s = (lambda step: 3.0 if step <= 20 else 1.0), 20.0
    monkeypatch.setattr(budget.TimeBudget, 'probe_grid', lambda b, *a, **k: b.measured('grid', 60.0))
    run = train(budgeted(tmp_path, 200 / 60), progress=False)
    assert clock.grids == [run.step]                               # the one grid, at the end
    check_kept(run, clock, 200)

def test_sample_grids_are_counted(tmp_path, clock, monkeypatch):
    """16 images make a one-batch epoch, so 40 epochs are 40 steps: grids are drawn at least `GRID_MIN_STEPS` apart. With
    a grid every 40 steps (the floor lowered), 0.75 minutes were once fitted to 460 steps, stopped at 272."""
    assert budget.grid_every(TRAIN_PRESETS['tiny'], 1) == budget.GRID_MIN_STEPS == 500
    assert budget.grid_every(TRAIN_PRESETS['tiny'], 25) == 1000 and budget.grid_every(budgeted(tmp_path, None, sample_every=0), 1) == 0
    monkeypatch.setattr(budget, 'GRID_MIN_STEPS', 40)
    root = tmp_path/'sixteen'
    from PIL import Image
    for i in range(16):
        (root/f'c{i % 2}').mkdir(parents=True, exist_ok=True)
        Image.new('L', (8, 8), 15 * i).save(root/f'c{i % 2}'/f'{i}.png')
    clock.step_s, clock.grid_s = (lambda step: 0.06), 1.5
    run = train(budgeted(tmp_path/'run', 0.75, dataset=str(root), img_size=8, batch_size=14), progress=False)
    assert len(run.train_dl) == 1 and len(clock.grids) >= 5
    check_kept(run, clock, 45)
    assert sum(1 for s in clock.grids if s % 40 == 0) == run.step // 40 and clock.grids[-1] == run.step   # every grid drawn

def test_a_resumed_run_stops_by_the_budget_and_says_so(tmp_path, clock, monkeypatch, capsys):
    train(budgeted(tmp_path, None, steps=300, sample_every=0, ckpt_every=20), progress=False, until=20)
    clock.t, clock.step_s = 0.0, (lambda step: 1.0)
    monkeypatch.chdir(tmp_path)
    minddpm_train(['--resume', str(tmp_path/'checkpoint.pt'), '--minutes', '1'])   # exits only on an error
    out = capsys.readouterr().out
    step = load_checkpoint(tmp_path/'checkpoint.pt')['step']
    assert 70 <= step <= 90 and f'the time budget ran out at step {step} of 300' in out and '--resume' in out, out
