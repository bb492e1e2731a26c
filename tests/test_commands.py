"""Numbers and paths on the command line, and resuming, as users really pass them. The commands run in-process (their
argument checks and messages are the same as in a terminal, and a process start would cost seconds a case); what only
a real process shows is in test_training.py."""
import dataclasses, math, warnings
from importlib import resources

import pytest
import torch
from PIL import Image

from minddpm.cli import minddpm_bench, minddpm_data, minddpm_sample, minddpm_train
from minddpm.sampling import sample
from minddpm.training import (TRAIN_PRESETS, Run, TrainConfig, export_model, load_checkpoint, load_model, resume,
                              save_checkpoint, train)

SHIPPED = str(resources.files('minddpm.assets') / 'digits_tiny.pt')

def run(command, *args, capsys):
    "Call `command` with `args` as a terminal would; return (exit status, stdout, stderr)."
    try: command([str(a) for a in args]); code = 0
    except SystemExit as e: code = e.code
    out, err = capsys.readouterr()
    return code, out, err

def small(tmp_path, **changes):
    return dataclasses.replace(TRAIN_PRESETS['tiny'], batch_size=8, sample_every=0, val_every=100, out=str(tmp_path), **changes)

# --- numbers ------------------------------------------------------------------------------------

@pytest.mark.parametrize('command,args,message', [
    (minddpm_sample, ['--guidance', 'nan'], "argument --guidance: must be a finite number, got 'nan'"),
    (minddpm_sample, ['--guidance', 'inf'], "argument --guidance: must be a finite number, got 'inf'"),
    (minddpm_sample, ['--guidance=-Infinity'], "argument --guidance: must be a finite number"),
    (minddpm_sample, ['--eta', 'nan'], "argument --eta: must be a finite number"),
    (minddpm_sample, ['--img-size', '0'], 'argument --img-size: must be at least 1, got 0'),
    (minddpm_sample, ['--img-size', '-4'], 'argument --img-size: must be at least 1, got -4'),
    (minddpm_sample, ['--steps', '2.5'], "argument --steps: must be a whole number, got '2.5'"),
    (minddpm_sample, ['--n', '-1'], 'argument --n: must be at least 1, got -1'),
    (minddpm_train, ['--lr', 'nan'], "argument --lr: must be a finite number, got 'nan'"),
    (minddpm_train, ['--lr', '0'], 'argument --lr: must be greater than 0, got 0'),
    (minddpm_train, ['--minutes', 'nan'], "argument --minutes: must be a finite number"),
    (minddpm_train, ['--minutes', 'inf'], "argument --minutes: must be a finite number"),
    (minddpm_train, ['--val-frac', '1'], 'argument --val-frac: must be in (0, 1), got 1'),
    (minddpm_train, ['--img-size', '-4'], 'argument --img-size: must be at least 1, got -4'),
    (minddpm_train, ['--seed', '-1'], 'argument --seed: must be at least 0, got -1'),
    (minddpm_data, ['--val-frac', 'nan'], "argument --val-frac: must be a finite number"),
    (minddpm_sample, ['--guidance', '-1'], 'argument --guidance: must be at least 0, got -1'),
    (minddpm_bench, ['--size', 'nan'], "argument --size: must be a whole number, got 'nan'"),
    (minddpm_bench, ['--size', '4'], 'argument --size: must be at least 8, got 4'),
    (minddpm_bench, ['--steps', '1.5'], "argument --steps: must be a whole number, got '1.5'"),
])
def test_bad_numbers_are_refused_by_name(tmp_path, monkeypatch, capsys, command, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(command, *([SHIPPED] if command is minddpm_sample else []), *args, capsys=capsys)
    assert code == 2 and message in err, err
    assert not list(tmp_path.iterdir())                                   # nothing written

@pytest.mark.parametrize('field,value', [('lr', math.nan), ('lr', math.inf), ('lr', 0), ('grad_clip', -1.0), ('p_uncond', 1.5),
                                         ('ema_beta', math.nan), ('minutes', math.nan), ('minutes', 0), ('steps', 0),
                                         ('batch_size', 2.5), ('val_frac', 0), ('weight_decay', math.inf)])
def test_the_config_refuses_what_no_run_could_use(field, value):
    with pytest.raises(ValueError, match=f'TrainConfig.{field} must be .*got {value!r}'):
        TrainConfig(**{field: value})

def test_the_sampler_refuses_non_finite_guidance_and_never_returns_non_finite_images():
    m = load_model()
    for w in (math.nan, math.inf):
        with pytest.raises(ValueError, match='w must be a finite number'): sample(m.model, m.diffusion, torch.arange(2), w=w)
    with torch.no_grad(): next(m.model.parameters()).fill_(math.nan)
    with pytest.raises(FloatingPointError, match='sampling produced non-finite values'):
        sample(m.model, m.diffusion, torch.arange(2), steps=2)

def test_a_model_that_draws_nan_saves_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    state = torch.load(SHIPPED, weights_only=True)
    state['weights'] = {k: v.fill_(math.nan) if v.is_floating_point() else v for k, v in state['weights'].items()}
    torch.save(state, tmp_path/'broken.pt')
    code, out, err = run(minddpm_sample, 'broken.pt', '--steps', 2, '--each', 'each', capsys=capsys)
    assert code == 2 and 'non-finite' in err and not (tmp_path/'samples.png').exists()
    assert not (tmp_path/'each').exists()                     # the folder it made for them is gone too

# --- paths --------------------------------------------------------------------------------------

def test_sample_out_without_an_ending_is_refused_and_a_png_is_written_where_it_says(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(minddpm_sample, SHIPPED, '--steps', 2, '--labels', 3, '--out', 'runs/x', capsys=capsys)
    assert code == 2 and 'runs/x must end in one of .png' in err and 'e.g. runs/x.png' in err
    assert not (tmp_path/'runs').exists()
    code, out, err = run(minddpm_sample, SHIPPED, '--steps', 2, '--labels', 3, '--out', 'runs/x.png', capsys=capsys)
    assert code == 0 and 'saved 1 sample to runs/x.png' in out and Image.open(tmp_path/'runs'/'x.png').size[0] > 10
    assert sorted(p.name for p in (tmp_path/'runs').iterdir()) == ['x.png']

def test_sample_without_a_checkpoint_draws_from_the_shipped_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(minddpm_sample, '--steps', 2, '--labels', 3, 7, '--out', 'x.png', capsys=capsys)
    assert code == 0 and 'saved 2 samples to x.png' in out, err
    code, out, err = run(minddpm_sample, SHIPPED, '--steps', 2, '--labels', 3, 7, '--out', 'y.png', capsys=capsys)
    assert (tmp_path/'x.png').read_bytes() == (tmp_path/'y.png').read_bytes()   # the same model, the same seed

@pytest.mark.parametrize('command,args,message', [
    (minddpm_sample, [SHIPPED, '--out', 'a_file/grid.png'], 'cannot use a_file as a folder: a_file is a file'),
    (minddpm_sample, [SHIPPED, '--out', 'a_dir'], 'a_dir is a folder; give a file name in it, e.g. a_dir/out.png'),
    (minddpm_sample, [SHIPPED, '--each', 'a_file'], 'cannot use a_file as a folder: a_file is a file'),
    (minddpm_train, ['--out', 'a_file/run'], 'cannot use a_file/run as a folder: a_file is a file'),
    (minddpm_train, ['--out', 'a_file'], 'cannot use a_file as a folder: a_file is a file'),
    (minddpm_train, ['--export', 'a_dir'], 'a_dir is a folder; give a file name in it'),
    (minddpm_train, ['--export', 'a_file/model.pt'], 'cannot use a_file as a folder: a_file is a file'),
    (minddpm_data, ['--out', 'a_file/grid.png'], 'cannot use a_file as a folder: a_file is a file'),
    (minddpm_data, ['--out', 'grid.txt'], 'grid.txt must end in one of .png'),
])
def test_output_paths_are_checked_before_any_work(tmp_path, monkeypatch, capsys, command, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path/'a_file').write_text('in the way'); (tmp_path/'a_dir').mkdir()
    monkeypatch.setattr(Run, '__init__', lambda *a, **k: pytest.fail('the run started before the paths were checked'))
    code, out, err = run(command, *args, capsys=capsys)
    assert code == 2 and message in err and 'Traceback' not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a_dir', 'a_file'] and not list((tmp_path/'a_dir').iterdir())

def test_data_makes_the_folder_of_its_grid(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(minddpm_data, '--size', 8, '--n', 4, '--out', 'missing_dir/deeper/x.png', capsys=capsys)
    assert code == 0 and 'to missing_dir/deeper/x.png' in out and (tmp_path/'missing_dir'/'deeper'/'x.png').stat().st_size > 500

def test_a_diverging_run_says_that_no_checkpoint_exists(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(minddpm_train, '--lr', '1e30', '--steps', 20, '--batch-size', 8, '--out', 'run', capsys=capsys)
    assert code == 2 and 'the loss became' in err and 'no checkpoint was written' in err and 'last checkpoint' not in err, err
    assert not (tmp_path/'run'/'checkpoint.pt').exists()

# --- resume -------------------------------------------------------------------------------------

@pytest.fixture
def six_steps(tmp_path):
    "A 12-step run stopped at step 6, with its checkpoint."
    train(small(tmp_path/'a', steps=12, ckpt_every=100), progress=False, until=6)
    return tmp_path/'a'/'checkpoint.pt'

def test_resume_applies_a_new_learning_rate(six_steps, tmp_path):
    run = train(run=resume(six_steps, lr=5e-4), progress=False)
    assert run.cfg.lr == 5e-4 and load_checkpoint(six_steps)['config']['lr'] == 5e-4
    opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=5e-4)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-4, total_steps=12)
    want = []
    for _ in range(12): want.append(ref.get_last_lr()[0]); opt.step(); ref.step()   # the learning rate each step takes
    got = [h[2] for h in run.history]
    assert got[6:] == pytest.approx(want[6:], rel=1e-6) and got[5] != pytest.approx(want[5])   # the new peak from step 7 on

def test_resume_refuses_what_defines_the_run_and_accepts_the_same_values(six_steps, tmp_path, capsys):
    for args, what in ((['--dataset', 'mnist'], "dataset ('digits' → 'mnist')"), (['--batch-size', 16], 'batch_size (8 → 16)'),
                       (['--img-size', 8], 'img_size (16 → 8)'), (['--seed', 3], 'seed (0 → 3)'),
                       (['--val-frac', 0.2], 'val_frac (0.1 → 0.2)'), (['--hflip'], 'hflip (False → True)')):
        code, out, err = run(minddpm_train, '--resume', six_steps, *args, capsys=capsys)
        assert code == 2 and f'cannot change {what}' in err and 'start a new run' in err, err
    code, out, err = run(minddpm_train, '--resume', six_steps, '--dataset', 'digits', '--batch-size', 8, capsys=capsys)
    assert code == 0 and load_checkpoint(six_steps)['step'] == 12, err

def test_resuming_a_finished_run_elsewhere_writes_nothing_and_says_so(six_steps, tmp_path, capsys):
    train(run=resume(six_steps), progress=False)
    code, out, err = run(minddpm_train, '--resume', six_steps, '--out', tmp_path/'b', capsys=capsys)
    assert code == 2 and 'already at its last step, 12' in err and '--steps' in err and 'checkpoint:' not in out
    assert not (tmp_path/'b'/'checkpoint.pt').exists()
    code, out, err = run(minddpm_train, '--resume', six_steps, '--steps', 14, '--out', tmp_path/'b', capsys=capsys)
    assert code == 0 and f"checkpoint: {tmp_path/'b'/'checkpoint.pt'}" in out
    assert load_checkpoint(tmp_path/'b'/'checkpoint.pt')['step'] == 14

def test_a_checkpoint_from_a_gpu_resumes_on_the_cpu_with_a_warning(six_steps, monkeypatch):
    state = torch.load(six_steps, weights_only=True)
    state['config']['device'] = 'cuda'
    torch.save(state, six_steps)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.warns(UserWarning, match=r"'cuda' is not available.*saved on cuda; resuming on cpu instead"):
        run = resume(six_steps)
    assert run.device.type == 'cpu' and run.cfg.device == 'auto'
    with pytest.raises(ValueError, match="'cuda' is not available"): resume(six_steps, device='cuda')   # asked for: refused

def test_work_already_done_is_never_replaced(six_steps, tmp_path, monkeypatch, capsys):
    "An export over a checkpoint, or a new run into a folder that holds one, once replaced the run without a word."
    monkeypatch.chdir(tmp_path)
    before = six_steps.read_bytes()
    code, out, err = run(minddpm_train, '--steps', 2, '--out', 'b', '--export', six_steps, capsys=capsys)
    assert code == 2 and 'is a training checkpoint; exporting over it would lose the run' in err, err
    code, out, err = run(minddpm_train, '--steps', 2, '--out', six_steps.parent, capsys=capsys)
    assert code == 2 and 'already holds a run: continue it with --resume' in err, err
    assert six_steps.read_bytes() == before

def test_a_folder_or_another_file_given_as_a_checkpoint_gets_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path/'adir').mkdir()
    code, out, err = run(minddpm_sample, 'adir', capsys=capsys)
    assert code == 2 and 'adir is a folder; give the checkpoint file in it, e.g. adir/checkpoint.pt' in err, err
    (tmp_path/'x.pdf').write_bytes(b'%PDF-1.4 not a checkpoint' + bytes(range(256)))
    code, out, err = run(minddpm_train, '--resume', 'x.pdf', capsys=capsys)
    assert code == 2 and 'x.pdf is not a readable minddpm checkpoint' in err and len(err.strip().splitlines()) == 1, err
