"""Distributed training on the CPU with gloo: `torchrun --standalone --nproc-per-node 2` against one process.

The run is defined by its global batch, so 2 processes at B/2, 1 process at B, and 1 process at B with 2 micro-batches
must give the same losses (relative 1e-5) and weights (1e-4); a checkpoint moves between world sizes; every rank holds the
same EMA; the budget stops every rank at one step; and a killed rank ends the run with a message, not a hang."""
import dataclasses, json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from minddpm.distributed import Place, local_batch_size, rank_positions, step_draws
from minddpm.training import TRAIN_PRESETS, Run, load_checkpoint, resume, small_batch, train, train_step

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2']
CFG = dict(batch_size=16, val_every=10, sample_every=0)   # the tiny preset's 4,000-step schedule, of which 20 steps are run
# Float rounding differs between world sizes (the gradients are summed in another order). Early in the tiny preset's
# schedule those differences stay at 1e-7; near the peak learning rate of a schedule squeezed into a few dozen steps,
# training is chaotic and any difference (a second micro-batch in one process, too) grows to 1e-3 within 20 steps.

def env():
    "One thread per rank: two ranks on two cores."
    return {**os.environ, 'OMP_NUM_THREADS': '1'}

def torchrun(tmp_path, name, spec) -> subprocess.CompletedProcess:
    "Run tests/ddp_worker.py on 2 processes with `spec`; the ranks' files land in tmp_path/name."
    path = tmp_path/f'{name}.json'
    path.write_text(json.dumps(spec))
    r = subprocess.run(TORCHRUN + [str(HERE/'ddp_worker.py'), str(path)], capture_output=True, text=True, env=env(), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r

def ranks(folder):
    return [torch.load(Path(folder)/f'rank{r}.pt', weights_only=True) for r in (0, 1)]

def losses(history): return torch.tensor([h[1] for h in history], dtype=torch.float64)
def flat(state): return torch.cat([v.double().flatten() for v in state.values() if v.is_floating_point()])

def assert_same_run(a, b):
    "Equal loss sequences (relative 1e-5) and final weights (1e-4 of the largest)."
    la, lb = losses(a['history']), losses(b['history'])
    assert len(la) == len(lb) and ((la - lb).abs() / la.abs()).max() < 1e-5, (la, lb)
    wa, wb = flat(a['model']), flat(b['model'])
    assert (wa - wb).abs().max() < 1e-4 * wa.abs().max()

def single(tmp_path, name, until=20, **changes):
    "The same run in this process, to step `until`, as the rank files hold it."
    cfg = dataclasses.replace(TRAIN_PRESETS['tiny'], **{**CFG, **changes}, out=str(tmp_path/name))
    run = train(cfg, progress=False, until=until)
    return {'history': run.history, 'model': run.model.state_dict(), 'ema': run.ema.model.state_dict(), 'step': run.step}

@pytest.fixture(scope='module')
def two(tmp_path_factory):
    "One 2-process run of 20 steps (batch 8 per rank), stopping at step 10 to keep a copy of its checkpoint."
    tmp = tmp_path_factory.mktemp('ddp')
    torch.set_num_threads(1)
    torchrun(tmp, 'two', {'cfg': {**CFG, 'out': str(tmp/'two')}, 'stops': [10, 20]})
    return tmp

def test_two_processes_train_the_run_of_one(two):
    r0, r1 = ranks(two/'two')
    assert r0['place'] == (0, 2) and r1['place'] == (1, 2) and r0['step'] == r1['step'] == 20
    assert_same_run(single(two, 'one'), r0)
    assert_same_run(single(two, 'accum', grad_accum=2), r0)          # 1 process, 2 micro-batches of 8

def test_every_rank_holds_the_same_ema_and_history(two):
    r0, r1 = ranks(two/'two')
    assert all(torch.equal(r0['ema'][k], r1['ema'][k]) for k in r0['ema'])      # bit for bit, not merely close
    assert all(torch.equal(r0['model'][k], r1['model'][k]) for k in r0['model'])
    assert r0['history'] == r1['history']                            # the loss is the global batch's on every rank

def test_only_rank_0_writes_and_its_checkpoint_holds_the_run(two):
    files = sorted(p.name for p in (two/'two').iterdir())
    assert files == ['checkpoint.pt', 'rank0.pt', 'rank1.pt', 'step10.pt', 'step20.pt'], files
    state, r0 = load_checkpoint(two/'two'/'checkpoint.pt'), ranks(two/'two')[0]
    assert state['step'] == 20 and all(torch.equal(state['ema']['model'][k], r0['ema'][k]) for k in r0['ema'])

def test_a_two_process_checkpoint_resumes_in_one_process_exactly(two):
    assert load_checkpoint(two/'two'/'step10.pt')['step'] == 10
    run = resume(two/'two'/'step10.pt', out=str(two/'resumed'))
    assert run.place.world_size == 1 and run.micro_batch == 16
    run = train(run=run, progress=False, until=20)
    assert_same_run(single(two, 'straight'), {'history': run.history, 'model': run.model.state_dict()})

def test_a_one_process_checkpoint_resumes_on_two_with_grad_accum(tmp_path):
    "The other way round, with 2 micro-batches of 4 on each rank and a changed checkpoint interval."
    cfg = dataclasses.replace(TRAIN_PRESETS['tiny'], **CFG, out=str(tmp_path/'one'))
    train(cfg, progress=False, until=10)
    torchrun(tmp_path, 'two', {'resume': str(tmp_path/'one'/'checkpoint.pt'), 'stops': [20],
                               'changes': {'out': str(tmp_path/'two'), 'grad_accum': 2, 'ckpt_every': 5}})
    r0, r1 = ranks(tmp_path/'two')
    assert r0['place'] == (0, 2) and r0['history'] == r1['history']
    assert_same_run(single(tmp_path, 'straight'), r0)

def test_the_budget_stops_every_rank_at_one_step(tmp_path):
    "Rank 0's clock decides: with a budget of a few seconds the run ends early, at the same step on both ranks."
    torchrun(tmp_path, 'budget', {'cfg': {**CFG, 'steps': 100_000, 'minutes': 0.1, 'val_every': 50, 'ckpt_every': 10_000,
                                          'out': str(tmp_path/'budget')}})
    r0, r1 = ranks(tmp_path/'budget')
    assert 0 < r0['step'] == r1['step'] < 100_000 and r0['steps'] == r1['steps'] and r0['history'] == r1['history']
    assert load_checkpoint(tmp_path/'budget'/'checkpoint.pt')['step'] == r0['step']

@pytest.mark.parametrize('precision,steps', [('bf16', 12), ('fp16', 4)])   # fp16 on a CPU is slow: a few steps show the scaler
def test_autocast_under_ddp(tmp_path, precision, steps):
    torchrun(tmp_path, precision, {'cfg': {**CFG, 'steps': steps, 'precision': precision, 'out': str(tmp_path/precision)}})
    r0, r1 = ranks(tmp_path/precision)
    assert r0['history'] == r1['history'] and all(torch.equal(r0['ema'][k], r1['ema'][k]) for k in r0['ema'])
    l = losses(r0['history'])
    assert torch.isfinite(l).all()
    if precision == 'bf16': assert l[-2:].mean() < l[:2].mean()
    # fp16's scaler skips a step whose gradients overflow; every rank sees the same all-reduced gradients, so all skip it
    else: assert load_checkpoint(tmp_path/precision/'checkpoint.pt')['scaler']['scale'] > 1

def test_compiled_ddp_with_micro_batches_trains_the_eager_run(tmp_path):
    "torch.compile of the DDP model, with no_sync on the first of 2 micro-batches: the eager run's losses, to compiler rounding."
    torchrun(tmp_path, 'compiled', {'cfg': {**CFG, 'compile': True, 'grad_accum': 2, 'out': str(tmp_path/'compiled')}, 'stops': [6]})
    r0, r1 = ranks(tmp_path/'compiled')
    assert r0['history'] == r1['history'] and r0['step'] == 6
    eager = losses(single(tmp_path, 'eager', until=6)['history'])
    assert ((losses(r0['history']) - eager).abs() / eager).max() < 1e-4

# --- the contract, in one process ---------------------------------------------------------------

def test_a_batch_that_does_not_split_is_refused_naming_sizes_that_do():
    with pytest.raises(ValueError, match=r'batch_size 50 is the global batch .* 2 processes × 2 micro-batches = 4 equal parts; '
                                         r'use a multiple of 4, e.g. 48 or 52'):
        local_batch_size(50, 2, 2)
    with pytest.raises(ValueError, match='e.g. 8$'): local_batch_size(3, 8, 1)
    assert local_batch_size(64, 4, 2) == 8

def test_the_draws_of_a_sample_depend_on_its_position_alone():
    g, kw = torch.Generator(), dict(shape=(1, 4, 4), T=1000, p_uncond=0.5)
    whole = step_draws(3, 7, 8, torch.arange(8), **kw, generator=g)
    halves = [step_draws(3, 7, 8, rank_positions(Place(r, 2), 8), **kw, generator=g) for r in (0, 1)]
    for field in ('t', 'eps', 'drop', 'flip'):
        merged = torch.empty_like(getattr(whole, field))
        for r, h in enumerate(halves): merged[r::2] = getattr(h, field)
        assert torch.equal(merged, getattr(whole, field)), field
    other = step_draws(3, 8, 8, torch.arange(8), **kw, generator=g)
    assert not torch.equal(other.eps, whole.eps) and not torch.equal(step_draws(4, 7, 8, torch.arange(8), **kw, generator=g).eps, whole.eps)

def test_a_training_split_smaller_than_the_batch_trains_on_the_largest_batch_it_allows(tmp_path):
    cfg = dataclasses.replace(TRAIN_PRESETS['tiny'], batch_size=4096, out=str(tmp_path))
    with pytest.warns(UserWarning, match=r'^the training split holds 1617 images, fewer than a batch of 4096: each step takes '
                                         r'1617, the whole split$'):
        run = Run(cfg)
    assert run.cfg.batch_size == run.micro_batch == 1617 and len(run.train_dl) == 1
    with pytest.warns(UserWarning, match='each step takes 12, the largest that 14 images split into 4 processes × 1 '
                                         'micro-batch allow'):
        assert small_batch(14, 64, 4, 1) == 12
    assert small_batch(14, 64, 2, 3, say=False) == 12 and small_batch(6, 8, 2, 3, say=False) == 6
    with pytest.raises(ValueError, match=r'the training split holds 3 images, too few to train on 2 processes × 2 '
                                         r'micro-batches: it needs at least 4 \(one image for each\)'):
        small_batch(3, 64, 2, 2)

# --- a rank that dies ---------------------------------------------------------------------------

def children(pid):
    "Every process started, directly or not, by `pid`."
    kids = [int(p) for p in Path(f'/proc/{pid}/task/{pid}/children').read_text().split()]
    return kids + [g for k in kids for g in children(k)]

def rank_of(pid):
    try: environ = Path(f'/proc/{pid}/environ').read_bytes().split(b'\0')
    except OSError: return None
    return next((int(v[5:]) for v in environ if v.startswith(b'RANK=')), None)

@pytest.mark.skipif(not Path('/proc/self/task').exists(), reason='finds the rank to kill through /proc (Linux)')
def test_a_killed_rank_ends_the_run_within_a_minute_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path/'run'
    # with a budget, the first checkpoint is written at step 20, once the steps are timed
    cmd = TORCHRUN + ['--no-python', 'minddpm_train', '--minutes', '10', '--batch-size', '16', '--out', str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    p_ckpt = out/'checkpoint.pt'
    try:
        deadline = time.monotonic() + 120
        while not p_ckpt.exists() and p.poll() is None and time.monotonic() < deadline: time.sleep(0.2)
        assert p_ckpt.exists(), 'no checkpoint within 2 minutes'
        victim = next(pid for pid in children(p.pid) if rank_of(pid) == 1)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        output, _ = p.communicate(timeout=60)
        took = time.monotonic() - killed
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode != 0 and took < 60, (p.returncode, took)
    assert 'rank: 1' in output and 'Signal 9 (SIGKILL)' in output, output[-3000:]
    assert load_checkpoint(p_ckpt)['step'] > 0

@pytest.mark.skipif(not Path('/proc/self/task').exists(), reason='finds the rank to kill through /proc (Linux)')
def test_on_two_nodes_the_survivor_says_what_stopped_it(tmp_path):
    "Two torchrun agents, as on two nodes: the surviving rank's agent cannot see the dead one, so the rank must notice itself."
    out, port = tmp_path/'run', 29400 + os.getpid() % 500
    node = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '2', '--nproc-per-node', '1', '--rdzv-backend', 'c10d',
            '--rdzv-endpoint', f'localhost:{port}', '--rdzv-id', 'two-nodes', '--no-python', 'minddpm_train', '--minutes', '10',
            '--batch-size', '16', '--out', str(out)]
    agents = [subprocess.Popen(node, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env()) for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        while not (out/'checkpoint.pt').exists() and time.monotonic() < deadline and all(a.poll() is None for a in agents):
            time.sleep(0.2)
        assert (out/'checkpoint.pt').exists(), [a.communicate()[0][-2000:] for a in agents if a.poll() is not None]
        victim = next(pid for a in agents for pid in children(a.pid) if rank_of(pid) == 1)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        outputs = [a.communicate(timeout=60)[0] for a in agents]
        took = time.monotonic() - killed
    finally:
        for a in agents:
            if a.poll() is None: a.kill()
    assert all(a.returncode != 0 for a in agents) and took < 60, ([a.returncode for a in agents], took)
    said = '\n'.join(outputs)
    assert 'rank 0 of 2 stopped in step' in said and 'lost touch with the other processes' in said, said[-3000:]
    assert f'the last checkpoint, {out/"checkpoint.pt"} at step' in said and 'rank      : 1' in said
    assert load_checkpoint(out/'checkpoint.pt')['step'] > 0

def test_flips_are_drawn_per_sample_in_the_step(tmp_path):
    "Flips are part of the step's draws: a left-right symmetric batch trains the same with or without them, another does not."
    cfg = dataclasses.replace(TRAIN_PRESETS['tiny'], batch_size=8, out=str(tmp_path))
    y, half = torch.arange(8), torch.rand(8, 1, 16, 8)
    symmetric, other = torch.cat([half, half.flip(-1)], -1), torch.rand(8, 1, 16, 16)
    for x, same in ((symmetric, True), (other, False)):
        losses = [train_step(Run(dataclasses.replace(cfg, hflip=h)), x * 2 - 1, y) for h in (False, True)]
        assert (losses[0] == losses[1]) == same, (losses, same)

def test_the_readme_two_process_command_runs_as_written(tmp_path):
    "README's CPU command as a new user copies it, shortened to 12 steps."
    readme = (HERE.parent/'README.md').read_text()
    line = next(l for l in readme.splitlines() if l.startswith('torchrun --standalone --nproc-per-node 2 '))
    r = subprocess.run(line + ' --steps 12 --batch-size 16', shell=True, cwd=tmp_path, capture_output=True, text=True, env=env(),
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = Path(tmp_path/line.split('--out ')[1].split()[0])
    assert load_checkpoint(out/'checkpoint.pt')['step'] == 12 and 'trained to step 12' in r.stdout
    assert r.stdout.count('trained to step 12') == 1 and r.stderr.count(' 0/12 [') == 1   # one progress bar: rank 1 is quiet

def test_a_mistake_is_said_once_by_rank_0_and_leaves_no_run_folder(tmp_path):
    "A missing dataset folder once made rank 1 print a raw gloo error beside rank 0's message, and left an empty run folder."
    r = subprocess.run(TORCHRUN + ['--no-python', 'minddpm_train', '--dataset', str(tmp_path/'no'/'such'), '--out', 'run'],
                       cwd=tmp_path, capture_output=True, text=True, env=env(), timeout=120)
    said = [l for l in r.stderr.splitlines() if l.startswith('minddpm_train') and 'FAILED' not in l]   # not torchrun's report
    assert r.returncode != 0 and said == [f"minddpm_train: error: no folder at {tmp_path/'no'/'such'}: pass a folder with one "
                                          f"sub-folder of images per class, or one of digits, cifar10, mnist, fashion_mnist"], said
    assert 'gloo' not in r.stderr and not (tmp_path/'run').exists()
