"""The performance lesson's baseline (minddpm.original) and measuring tools (minddpm.measure): the original UNet is the
same function as minddpm's seed preset, every speed-up switch leaves the numbers alone, `isolated` finds what it runs,
and `minddpm_bench` writes its table and JSON and refuses bad arguments. No timing is asserted: speed is for the
benchmark's printed ratios."""
import json, subprocess, sys
from dataclasses import asdict

import pytest
import torch

from minddpm.bench import (SeedAttention, SeedSettings, SeedTrainer, SeedUNet, PeakMemory, format_table, isolated,
                           largest_batch, measure_sampling, measure_training, seed_model, training_batches, seed_sample, seed_to_minddpm,
                           _ratio, _rows)
from minddpm.conditioning import ConditionalUNet
from minddpm.unet import unet_preset

@pytest.mark.parametrize('channels,size', [(1, 16), (3, 24)])
def test_the_original_unet_is_the_seed_preset_with_other_names(channels, size):
    torch.manual_seed(0)
    seed = SeedUNet(channels, channels).eval()
    ours = ConditionalUNet(10, **unet_preset('seed', in_channels=channels)).eval()
    ours.load_state_dict(seed_to_minddpm(seed.state_dict()))   # strict: no weight missing or left over
    x, t = torch.randn(3, channels, size, size), torch.tensor([0, 321, 999])
    with torch.no_grad():
        for y in (torch.tensor([1, -1, 9]), None):
            torch.testing.assert_close(seed(x, t, y), ours(x, t, y), atol=1e-4, rtol=1e-4)

def test_every_switch_keeps_the_function():
    torch.manual_seed(0)
    x, t, y = torch.randn(2, 1, 16, 16), torch.tensor([5, 700]), torch.tensor([2, 7])
    ref_model, _ = seed_model(SeedSettings(), 16)
    state = ref_model.state_dict()
    with torch.no_grad():
        ref = ref_model.eval()(x, t, y)
        for s in (SeedSettings(attention='no_weights'), SeedSettings(attention='sdpa'), SeedSettings(broadcast=True),
                  SeedSettings(channels_last=True)):
            m, fwd = seed_model(s, 16)
            m.load_state_dict(state)
            xx = x.contiguous(memory_format=torch.channels_last) if s.channels_last else x
            torch.testing.assert_close(fwd.eval()(xx, t, y), ref, atol=1e-4, rtol=1e-4, msg=lambda m: f"{s}: {m}")
        assert {type(m).kernel for m in ref_model.modules() if isinstance(m, SeedAttention)} == {'weights'}   # the class default is the original

def test_batched_guidance_draws_the_same_samples():
    model, fwd = seed_model(SeedSettings(), 16)
    labels = torch.tensor([0, 3, 8])
    out = []
    for batched in (False, True):
        torch.manual_seed(1)
        out.append(seed_sample(fwd.eval(), labels, (1, 16, 16), SeedSettings(batched=batched), stop_after=3,
                               generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(*out, atol=1e-4, rtol=1e-4)

def test_the_original_ema_reloads_then_averages():
    torch.manual_seed(0)
    tr = SeedTrainer(SeedSettings(), 16, steps=4, step_start_ema=1)
    x, y = torch.rand(2, 1, 16, 16) * 2 - 1, torch.tensor([1, 2])
    tr.step(x, y)                                   # before step_start_ema: a copy
    for p, q in zip(tr.model.parameters(), tr.ema_model.parameters()): torch.testing.assert_close(p, q)
    before = [q.clone() for q in tr.ema_model.parameters()]
    tr.step(x, y)                                   # then θ_ema ← β·θ_ema + (1 − β)·θ
    for p, q, b in zip(tr.model.parameters(), tr.ema_model.parameters(), before):
        torch.testing.assert_close(q, 0.995 * b + 0.005 * p)

def test_the_split_keeps_every_old_name_and_its_layers():
    "The baseline (minddpm.original) and the measuring tools (minddpm.measure) left minddpm.bench, which still gives them."
    import minddpm.bench, minddpm.measure, minddpm.original
    for mod in (minddpm.original, minddpm.measure):
        assert all(getattr(minddpm.bench, n, None) is getattr(mod, n) for n in mod.__all__), mod.__name__
    code = ('import sys, minddpm.original, minddpm.measure; '
            'assert not [m for m in ("minddpm.bench", "minddpm.cli") if m in sys.modules], sorted(sys.modules)')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)   # a lower module imports no higher one
    assert r.returncode == 0, r.stderr

def test_isolated_runs_a_notebooks_copy_as_the_packages():
    from minddpm.measure import _home
    def measure_sampling(): pass                      # as a lesson defines it: in __main__, which no new process can import
    measure_sampling.__module__ = '__main__'
    assert _home(measure_sampling) == 'minddpm.measure'
    assert _home(_rows) == 'minddpm.bench'
    def nowhere(): pass
    nowhere.__module__ = '__main__'
    with pytest.raises(ValueError, match="isolated runs functions of minddpm's modules"): _home(nowhere)

def test_peak_memory_sees_an_allocation():
    with PeakMemory('cpu') as mem:
        big = torch.ones(64 * 2**20)                 # 256 MiB, written
        del big
    assert mem.peak > 200 * 2**20, mem.peak

def test_measurements_return_their_figures():
    r = measure_training(SeedSettings(), size=8, batch=2, steps=1, warmup=1)
    assert r['images_per_s'] == pytest.approx(2 / r['step_s']) and r['peak_bytes'] > 0
    s = measure_sampling('minddpm', size=8, batch=2, runs={'step': 2, 'ddim': 5}, reps=1)
    assert s['step']['steps'] == 2 and s['ddim']['steps'] == 5
    b = isolated(measure_sampling, variant=asdict(SeedSettings()), size=8, batch=2, runs={'step': 1000}, reps=1)
    assert b['step']['steps'] == 999                 # the original's loop has 999 steps, no more

def test_training_batches_hold_exactly_the_batch_asked_for():
    big = training_batches(8, 2000, 2)                # more than the 1,617 training digits
    assert [tuple(x.shape) for x, _ in big] == [(2000, 1, 8, 8)] * 2 and big[0][1].shape == (2000,)
    assert not torch.equal(big[0][0], big[1][0]) and big[0][0].min() >= -1 and big[0][0].max() <= 1

def test_largest_batch_stays_within_the_budget():
    kw = dict(variant=asdict(SeedSettings()), size=32, device='cpu')    # the original keeps ~70 MB per image at 32×32
    at_2 = isolated(measure_training, **kw, batch=2, steps=1, warmup=1)['total_bytes']
    budget = at_2 + 300 * 2**20
    r = largest_batch(**kw, budget=budget, probe=2)
    assert 2 < r['batch'] < 12 and r['total_bytes'] <= budget, r

def test_table_ratios_point_the_right_way():
    raw = {name: {'training': dict(images_per_s=ips, peak_bytes=mb * 2**20),
                  'sampling': {'step': dict(step_s=step), 'ddim_50': dict(total_s=50 * step)}}
           for name, ips, mb, step in [('original', 10, 800, 1.0), ('minddpm', 30, 400, 0.25)]}
    rows, estimated = _rows(raw, full=False)
    res = dict(columns=list(raw), rows=rows, estimated=estimated, size=32, batch=16, device='a CPU', torch='2',
               precision='bf16', compile=False, targets={'training images/s': 2.0, 'guided step': 5.0})
    res['ratios'] = {row: {'minddpm': _ratio(row, v['original'], v['minddpm'])} for row, v in rows.items()}
    assert res['ratios']['training images/s']['minddpm'] == pytest.approx(3)           # faster: more images/s
    assert res['ratios']['training peak memory (MB)']['minddpm'] == pytest.approx(2)   # half the memory
    assert res['ratios']['DDPM end to end (s)']['minddpm'] == pytest.approx(999 / 1000 * 4)
    assert res['ratios']['DDIM-50 end to end (s)']['minddpm'] == pytest.approx(999 / 50 * 4)
    table = format_table(res)
    assert '≥ 2× ✓' in table and '≥ 5× ✗' in table and '* estimated' in table

def run_cli(*args, **kw):
    return subprocess.run([sys.executable, '-c', 'from minddpm.cli import minddpm_bench; minddpm_bench()', *args],
                          capture_output=True, text=True, **kw)

def test_minddpm_bench_writes_the_table_and_json(tmp_path):
    out = tmp_path/'bench'/'res.json'
    r = run_cli('--size', '8', '--batch', '2', '--steps', '1', '--precision', 'fp32', '--compile', 'off', '--json', str(out),
                timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res['columns'] == ['original', 'minddpm'] and res['size'] == 8 and res['precision'] == 'fp32'
    for row in ('training images/s', 'training peak memory (MB)', 'guided step (ms)', 'DDPM end to end (s)', 'DDIM-50 end to end (s)'):
        assert res['rows'][row]['original'] > 0 and res['ratios'][row]['minddpm'] > 0, row
        assert row in r.stdout
    assert 'original' in r.stdout and '×' in r.stdout and str(out) in r.stdout

@pytest.mark.parametrize('args,message', [
    (['--size', '12'], '--size must be a multiple of 8'),
    (['--batch', '0'], 'argument --batch: must be at least 1, got 0'),
    (['--steps', '0'], 'argument --steps: must be at least 1, got 0'),
    (['--precision', 'int8'], "invalid choice: 'int8'"),
    (['--device', 'cuda:7'], '--device cuda:7 is not usable here'),
])
def test_minddpm_bench_refuses_bad_arguments(args, message, tmp_path):
    r = run_cli(*args, '--json', str(tmp_path/'x.json'), timeout=120)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path/'x.json').exists()

@pytest.mark.parametrize('where,message', [('a_file/res.json', 'is a file'), ('a_folder/', 'is a folder; give a file name in it')])
def test_minddpm_bench_checks_its_json_path_before_measuring(where, message, tmp_path):
    "A --json that cannot be written is refused at once, not after minutes of measuring."
    (tmp_path/'a_file').write_text('notes'); (tmp_path/'a_folder').mkdir()
    r = run_cli('--json', str(tmp_path) + '/' + where, timeout=120)
    assert r.returncode == 2 and message in r.stderr and 'training' not in r.stderr, r.stderr
