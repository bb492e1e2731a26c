"""The Python half of `tests/gpu_check.sh` (the one-command GPU check): run a lesson's `#| cuda` cells offline and
capped, and turn the parts' results into one JSON and a short summary.

    python tests/gpu_check.py preflight ENV.json           # versions, the device, missing modules; exit 3 without CUDA
    python tests/gpu_check.py lesson NOTEBOOK RESULT.json   # run a lesson top to bottom, `cuda` cells included
    python tests/gpu_check.py report WORK OUT               # WORK's part results → OUT/gpu_check.json, OUT/summary.md

`GPU_CHECK_MODE` (set by gpu_check.sh) is `cuda` on a GPU, or `cpu` for the CPU rehearsal of the plumbing
(`GPU_CHECK_ALLOW_CPU=1`), whose caps are far smaller. Lessons run the way `nbdev_test` runs them (in-process, with
execnb's `CaptureShell`, `slow` cells skipped); what the check changes from a lesson is listed by `changes()` and kept
to what makes it offline and short.
"""
import base64, dataclasses, functools, importlib.util, inspect, json, os, pickle, re, sys, tempfile, time
import urllib.error, urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODE = os.environ.get('GPU_CHECK_MODE', 'cuda')

# What the check shrinks. On the GPU only the lengths of work; on the CPU (plumbing rehearsal) the model's work too.
CAPS = {
    'cuda': dict(train_steps=300, batch_size=None, compile=None, sample_steps=None,
                 accuracy_per_class=20, fid_per_class=100, cifar_per_batch=1000, cifar_test=1000),
    'cpu':  dict(train_steps=2, batch_size=8, compile=False, sample_steps=2,   # accuracy: the rehearsal asserts 5 per class
                 accuracy_per_class=5, fid_per_class=2, cifar_per_batch=10, cifar_test=20),
}[MODE]
if os.environ.get('GPU_CHECK_TRAIN_STEPS'): CAPS['train_steps'] = int(os.environ['GPU_CHECK_TRAIN_STEPS'])

def changes() -> list[str]:
    "What the check changes from the lessons, in words, for the summary."
    c = CAPS
    out = [f"CIFAR-10 is a synthetic set in torchvision's on-disk format ({5 * c['cifar_per_batch']} training, "
           f"{c['cifar_test']} test images; noise tinted by class) under a temporary `$MINDDPM_DATA`, with torchvision's "
           "md5 check switched off; any `urllib` download raises, so nothing is fetched",
           "cells run in a temporary folder (the lesson's `runs/cifar10` lands there, not in the repo); "
           "`WANDB_MODE=offline`; the Google Drive cell runs as written (off Colab it does nothing)",
           f"from the first `#| cuda` cell to the end of the lesson: `train` runs at most {c['train_steps']} steps "
           "(lesson 07: 2,000; lesson 16: 30,000); a fresh run is rebuilt from the capped config, so OneCycle spans the "
           "capped steps; `ema_start` (2,000) is kept, so the EMA equals the raw weights in these short runs",
           f"lesson 16: `class_accuracy` draws at most {c['accuracy_per_class']} samples per class (lesson: 100) and "
           f"`draw` at most {c['fid_per_class']} per class for FID (lesson: 1,000)",
           "lesson 16: `inception_features` runs torch-fidelity's FID Inception-v3 with random weights (the real ones are a "
           "download), so the Inception FID figures exercise the code and mean nothing; without torch-fidelity that cell is "
           "skipped, not pip-installed"]
    if MODE == 'cpu':
        out.append(f"CPU rehearsal only: training batch at most {c['batch_size']}, `compile` off, samplers at most "
                   f"{c['sample_steps']} steps")
    return out

# --- offline data ---------------------------------------------------------------------------------

def fake_cifar10(root: Path, per_batch: int, n_test: int, seed: int = 0):
    "A synthetic CIFAR-10 in torchvision's format (as tests/test_data.py's `fake_cifar10`): each class tints its noise."
    import torch, torchvision.datasets.cifar as cifar
    d = root/'cifar-10-batches-py'
    d.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    tint = torch.rand(10, 3, 1, 1, generator=g) * 160

    def batch(n):
        labels = torch.arange(n) % 10
        x = tint[labels] + torch.rand(n, 3, 32, 32, generator=g) * 95        # (N, 3, 32, 32): rows are R, G, B planes
        return {'data': x.to(torch.uint8).reshape(n, 3072).numpy(), 'labels': labels.tolist()}
    for i in range(1, 6): (d/f'data_batch_{i}').write_bytes(pickle.dumps(batch(per_batch)))
    (d/'test_batch').write_bytes(pickle.dumps(batch(n_test)))
    (d/'batches.meta').write_bytes(pickle.dumps({'label_names': ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                                                                 'frog', 'horse', 'ship', 'truck']}))
    cifar.check_integrity = lambda *a, **k: True                               # the bytes are ours: no md5 to match

def refuse_downloads():
    "Make every urllib download fail at once, as it would without a network (instead of hanging)."
    def refuse(*a, **k): raise urllib.error.URLError('gpu_check: offline, nothing is downloaded')
    urllib.request.urlopen = refuse

def random_inception_weights(path: Path) -> Path | None:
    "A weights file of the FID Inception's architecture with random weights (as tests/test_metrics.py); None without torch-fidelity."
    if importlib.util.find_spec('torch_fidelity') is None: return None
    import torch, torch_fidelity.feature_extractor_inceptionv3 as tfi
    url, load = tfi.load_state_dict_from_url, tfi.FeatureExtractorInceptionV3.load_state_dict
    tfi.load_state_dict_from_url = lambda *a, **k: {}
    tfi.FeatureExtractorInceptionV3.load_state_dict = lambda self, sd, *a, **k: None
    try:
        torch.manual_seed(0)
        torch.save(tfi.FeatureExtractorInceptionV3('inception-v3-compat', ['2048']).state_dict(), path)
    finally: tfi.load_state_dict_from_url, tfi.FeatureExtractorInceptionV3.load_state_dict = url, load
    return path

# --- the caps, as wrappers around the lesson's own functions ---------------------------------------

def capping(fn, arg: str, cap, log: list):
    "`fn` with its argument `arg` (positional, keyword or default) lowered to at most `cap`."
    sig = inspect.signature(fn)
    @functools.wraps(fn)
    def capped(*a, **k):
        b = sig.bind(*a, **k); b.apply_defaults()
        if b.arguments[arg] is not None and b.arguments[arg] > cap:
            log.append(f"{fn.__name__}: {arg} {b.arguments[arg]} → {cap}")
            b.arguments[arg] = cap
        return fn(*b.args, **b.kwargs)
    return capped

def capped_train(train, log: list):
    "`train`, but every run is at most `train_steps` long (and, on the CPU, small and not compiled)."
    def shrink(cfg):
        new = dict(steps=min(cfg.steps, CAPS['train_steps']))
        if CAPS['batch_size']: new['batch_size'] = min(cfg.batch_size, CAPS['batch_size'])
        if CAPS['compile'] is False: new['compile'] = False
        new = {k: v for k, v in new.items() if getattr(cfg, k) != v}
        if new: log.append('train: ' + ', '.join(f'{k} {getattr(cfg, k)} → {v}' for k, v in new.items()))
        return dataclasses.replace(cfg, **new)

    @functools.wraps(train)
    def capped(cfg=None, run=None, *a, **k):
        if run is None: cfg = shrink(cfg)
        elif run.step == 0: run = type(run)(shrink(run.cfg))   # a fresh run: the same start, from the capped config
        elif run.cfg.steps > CAPS['train_steps']:               # a resumed one (not in a fresh folder): shorten it
            from minddpm.training import set_steps
            log.append(f"train: steps {run.cfg.steps} → {max(CAPS['train_steps'], run.step + 1)} (resumed at {run.step})")
            set_steps(run, max(CAPS['train_steps'], run.step + 1))
        return train(cfg, run, *a, **k)
    return capped

def apply_caps(ns: dict, weights, log: list):
    """Wrap the lesson's functions in the shell's namespace `ns` (and, on the CPU, the package's sampler). Called before
    every cell from the first `cuda` one on, so functions defined later are capped too; wraps each function once."""
    import minddpm.metrics, minddpm.sampling
    def wrap(where: dict, name: str, make):
        if name in where and not getattr(where[name], '_gpu_check', False):
            where[name] = make(where[name]); where[name]._gpu_check = True
    wrap(ns, 'train', lambda f: capped_train(f, log))
    wrap(ns, 'class_accuracy', lambda f: capping(f, 'per_class', CAPS['accuracy_per_class'], log))
    wrap(ns, 'draw', lambda f: capping(f, 'per_class', CAPS['fid_per_class'], log))
    if weights: wrap(ns, 'inception_features', lambda f: functools.partial(f, weights=weights))
    if CAPS['sample_steps']:
        for where in (ns, vars(minddpm.sampling), vars(minddpm.metrics)):
            wrap(where, 'sample', lambda f: capping(f, 'steps', CAPS['sample_steps'], log))

# --- running a lesson ----------------------------------------------------------------------------

ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')

def output_text(outputs) -> tuple[str, list[str]]:
    "A cell's printed output as plain text (progress-bar redraws collapsed), and its PNG images (base64)."
    text, pngs = [], []
    for o in outputs:
        if o['output_type'] == 'stream': text.append(''.join(o['text']))
        elif o['output_type'] == 'error': text.append('\n'.join(o['traceback'][-3:]) or f"{o['ename']}: {o['evalue']}")
        else:
            data = o.get('data', {})
            if 'image/png' in data: pngs.append(''.join(data['image/png'])); text.append('[image]\n')
            elif 'text/plain' in data: text.append(''.join(data['text/plain']) + '\n')
    lines = [line.split('\r')[-1] for line in ANSI.sub('', ''.join(text)).split('\n')]
    return '\n'.join(line for line in lines if line.strip()), pngs

def cell_error(shell, outputs) -> str | None:
    "What went wrong in the cell just run: an exception, or a traceback IPython printed instead of raising."
    if shell.exc is not None: return f'{type(shell.exc).__name__}: {shell.exc}'
    for o in outputs:
        if o['output_type'] == 'error': return f"{o['ename']}: {o['evalue']}"
        if o.get('name') == 'stderr' and 'Traceback' in ''.join(o.get('text', '')): return 'a traceback on stderr'
    return None

def write_json(path: Path, obj):
    tmp = path.with_suffix('.tmp'); tmp.write_text(json.dumps(obj, indent=1, default=str)); os.replace(tmp, path)

def run_lesson(nb_path: Path, result_path: Path):
    "Run the lesson's code cells in order (`slow` ones skipped, `cuda` ones run, capped), recording each as it ends."
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor
    work = Path(tempfile.mkdtemp(prefix=nb_path.stem + '_'))  # under $TMPDIR, which gpu_check.sh removes at the end
    refuse_downloads()
    fake_cifar10(work/'data', CAPS['cifar_per_batch'], CAPS['cifar_test'])
    os.environ.update(MINDDPM_DATA=str(work/'data'), WANDB_MODE='offline', IN_TEST='1')
    weights = random_inception_weights(work/'inception_random.pth')
    with working_directory(ROOT): nb = NBProcessor(nb_path, process=True, rm_directives=False).nb
    cells = [c for c in nb.cells if c.cell_type == 'code']
    res = dict(lesson=nb_path.name, mode=MODE, caps=CAPS, result='running', lesson_seconds=0.0, cells=[])
    for i, c in enumerate(cells):
        src = [l for l in c.source.splitlines() if l.strip() and not l.startswith('#|')]
        res['cells'].append(dict(index=i, flags=sorted(set(c.directives_ or {}) & {'cuda', 'slow'}),
                                 source=src[0][:100] if src else '', status='not run', seconds=0.0))
    shell, log, capped, t_start = CaptureShell(nb_path), [], False, time.perf_counter()
    (work/'cwd').mkdir(); os.chdir(work/'cwd')                  # relative paths (runs/…) land in the temp folder
    for c, entry in zip(cells, res['cells']):
        flags = entry['flags']
        if 'slow' in flags: entry.update(status='skipped', reason='`slow` cell'); continue
        if 'cuda' in flags and 'torch_fidelity' in c.source and weights is None:
            entry.update(status='skipped', reason='torch-fidelity is not installed (the cell would pip install it; '
                                                  'the check installs nothing): no Inception FID'); continue
        capped = capped or 'cuda' in flags
        if capped: apply_caps(shell.user_ns, weights, log)
        entry['status'] = 'running'                              # what a timeout interrupts shows as 'running'
        write_json(result_path, res)
        n_log, t0 = len(log), time.perf_counter()
        c.outputs = []
        shell.cell(c)
        entry['seconds'] = round(time.perf_counter() - t0, 2)
        err = cell_error(shell, c.outputs)
        text, pngs = output_text(c.outputs)
        entry.update(status='fail' if err else 'pass', output_tail=text[-1500:], images=len(pngs), capped=log[n_log:])
        if 'cuda' in flags and pngs: res['last_cuda_png'] = pngs[-1]
        print(f"cell {entry['index']:2d} {','.join(flags) or '-':5s} {entry['status']:4s} {entry['seconds']:7.1f} s  "
              f"{entry['source'][:60]}", flush=True)
        res['lesson_seconds'] = round(time.perf_counter() - t_start, 2)
        if err: entry['error'] = err; break                     # later cells build on this one: stop, as nbdev_test does
        write_json(result_path, res)
    res['result'] = 'fail' if any(e['status'] == 'fail' for e in res['cells']) else 'pass'
    write_json(result_path, res)
    return 1 if res['result'] == 'fail' else 0

# --- preflight ------------------------------------------------------------------------------------

def preflight(env_path: Path) -> int:
    "Write what this machine has (Python, torch, the GPU, the modules the parts need); exit 3 when there is no CUDA."
    import platform, torch
    needed = ['minddpm', 'minddpm.assets', 'pytest', 'execnb', 'nbdev', 'fastcore', 'IPython', 'matplotlib', 'torchvision']
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    cuda = torch.cuda.is_available()
    env = dict(python=platform.python_version(), torch=torch.__version__, cuda=cuda,
               device=torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
               torch_fidelity=importlib.util.find_spec('torch_fidelity') is not None,
               wandb=importlib.util.find_spec('wandb') is not None, missing=missing)
    write_json(env_path, env)
    print(f"python {env['python']}, torch {env['torch']}, {'CUDA: ' + env['device'] if cuda else 'no CUDA'}"
          + (f"; missing modules: {', '.join(missing)}" if missing else ''))
    return 0 if cuda else 3

# --- the report -----------------------------------------------------------------------------------

def tail(path: Path, n: int = 2000) -> str:
    return ANSI.sub('', path.read_text(errors='replace'))[-n:] if path.exists() else ''

def tests_figures(xml: Path) -> dict:
    "Counts and per-test outcomes from pytest's JUnit XML."
    if not xml.exists(): return {}
    suite = ET.parse(xml).getroot()
    suite = suite.find('testsuite') if suite.tag == 'testsuites' else suite
    cases = []
    for tc in suite.iter('testcase'):
        bad = next((tc.find(k) for k in ('failure', 'error', 'skipped') if tc.find(k) is not None), None)
        cases.append(dict(name=tc.get('name'), seconds=float(tc.get('time', 0)),
                          outcome='passed' if bad is None else {'failure': 'failed'}.get(bad.tag, bad.tag),
                          **({'message': (bad.get('message') or '')[:300]} if bad is not None else {})))
    count = lambda o: sum(c['outcome'] == o for c in cases)
    return dict(tests=len(cases), passed=count('passed'), failed=count('failed'), errors=count('error'),
                skipped=count('skipped'), cases=cases)

def bench_figures(path: Path) -> dict:
    "The bench's rows, ratios and targets, and whether minddpm meets each target."
    if not path.exists(): return {}
    b = json.loads(path.read_text())
    targets = {}
    for row, ratios in b['ratios'].items():
        goal, r = b['targets'].get(row.split(' (')[0]), ratios.get('minddpm')
        if goal is not None: targets[row] = dict(target=goal, ratio=r, met=r is not None and r >= goal)
    return dict(device=b['device'], torch=b['torch'], size=b['size'], batch=b['batch'], precision=b['precision'],
                compile=b['compile'], bench_seconds=b.get('seconds'), rows=b['rows'], ratios=b['ratios'], targets=targets)

def lesson_figures(path: Path, out: Path, name: str, timed_out: bool) -> dict:
    "The lesson runner's per-cell record (partial if it was stopped), its last GPU-cell image saved as a PNG."
    if not path.exists(): return {}
    r = json.loads(path.read_text())
    for c in r['cells']:                                   # the cell the runner was in when it was stopped
        if c['status'] == 'running': c['status'] = 'timed out' if timed_out else 'crashed'
    png = r.pop('last_cuda_png', None)
    if png: (out/f'{name}.png').write_bytes(base64.b64decode(png)); r['image'] = f'{name}.png'
    r['counts'] = {s: sum(c['status'] == s for c in r['cells']) for s in ('pass', 'fail', 'skipped', 'not run')}
    return r

def report(work: Path, out: Path) -> int:
    "Gather the parts' results into OUT/gpu_check.json and OUT/summary.md; 1 if any part failed."
    env = json.loads((work/'env.json').read_text()) if (work/'env.json').exists() else {}
    parts, log = {}, []
    for line in (work/'parts.tsv').read_text().splitlines() if (work/'parts.tsv').exists() else []:
        name, rc, ms, limit, cmd = line.split('\t')
        rc, secs = int(rc), int(ms) / 1000
        p = dict(command=cmd, exit_code=rc, seconds=round(secs, 1), limit_s=int(limit), timed_out=rc in (124, 137))
        if name == 'tests': p.update(tests_figures(work/'test_cuda.xml'))
        elif name == 'bench': p.update(bench_figures(out/'bench.json'))
        else: p.update(lesson_figures(work/f'{name}.json', out, name, p['timed_out']))
        p['status'] = 'pass' if rc == 0 and (name != 'bench' or 'rows' in p) else 'fail'
        p['log_tail'] = tail(work/f'{name}.log')
        parts[name] = p
        log.append(f"===== {name}: {cmd}\n{tail(work/f'{name}.log', 200_000)}\n")
    ok = all(p['status'] == 'pass' for p in parts.values())
    total = sum(p['seconds'] for p in parts.values())
    res = dict(status='pass' if ok else 'fail', mode=MODE, environment=env, seconds=round(total, 1),
               changes_from_lessons=changes(), parts=parts)
    write_json(out/'gpu_check.json', res)
    (out/'gpu_check.log').write_text(''.join(log))
    (out/'summary.md').write_text(summary(res))
    return 0 if ok else 1

def summary(res: dict) -> str:
    "A short human-readable account of the check."
    env, parts = res['environment'], res['parts']
    mode = 'on ' + env.get('device', '?') if res['mode'] == 'cuda' else 'CPU REHEARSAL of the plumbing (no GPU; tiny caps)'
    out = [f"# minddpm GPU check: {res['status'].upper()}", '',
           f"{mode}; python {env.get('python')}, torch {env.get('torch')}; {res['seconds']:.0f} s in the parts "
           f"(time budget of the parts: {os.environ.get('GPU_CHECK_BUDGET_S', '?')} s)."
           + (f" Missing modules: {', '.join(env['missing'])}." if env.get('missing') else ''), '',
           '| part | status | seconds (limit) | key figures |', '|---|---|---|---|']
    for name, p in parts.items():
        status = p['status'] + (' (timed out)' if p['timed_out'] else '')
        if name == 'tests': figs = (f"{p.get('passed', 0)} passed, {p.get('failed', 0)} failed, {p.get('errors', 0)} errors, "
                                    f"{p.get('skipped', 0)} skipped of {p.get('tests', 0)}") if 'tests' in p else 'no results'
        elif name == 'bench':
            figs = '; '.join(f"{row}: {t['ratio']:.2f}× (target ≥ {t['target']:g}× {'✓' if t['met'] else '✗'})"
                             for row, t in p.get('targets', {}).items() if t['ratio'] is not None) or \
                   ('ran; no targets for this device' if 'rows' in p else 'no results')
        else:
            c = p.get('counts', {})
            gpu = [x for x in p.get('cells', []) if 'cuda' in x['flags']]
            stopped = [x['index'] for x in p.get('cells', []) if x['status'] in ('timed out', 'crashed')]
            figs = (f"cells: {c['pass']} passed, {c['fail']} failed, {c['skipped']} skipped, {c['not run']} not run"
                    + (f" (stopped in cell {stopped[0]})" if stopped else '') + '; cuda cells: '
                    + ', '.join(f"#{x['index']} {x['status']} {x['seconds']:.0f} s" for x in gpu)) if c else 'no results'
        out.append(f"| {name} | {status} | {p['seconds']:.0f} ({p['limit_s']}) | {figs} |")
    if 'bench' in parts: out += ['', 'The bench passes when it runs and writes its results; its ratios are '
                                 'measurements, each shown against its target (✓/✗).']
    out += ['', '## What the check changes from the lessons', *[f'- {c}' for c in res['changes_from_lessons']]]
    for name, p in parts.items():
        if name.startswith('lesson') and p.get('cells'):
            out += ['', f"## {p['lesson']}: cuda cells and failures"]
            for x in p['cells']:
                if 'cuda' not in x['flags'] and x['status'] not in ('fail', 'timed out', 'crashed'): continue
                out += ['', f"cell {x['index']} `{x['source']}`: **{x['status']}**, {x['seconds']:.1f} s"
                        + (f" ({x['reason']})" if x.get('reason') else '') + (f"; capped: {'; '.join(x['capped'])}" if x.get('capped') else '')]
                if x.get('output_tail'): out += ['```', '\n'.join(x['output_tail'].splitlines()[-8:]), '```']
            if p.get('image'): out.append(f"\nlast image of a cuda cell: {p['image']}")
    if 'bench' in parts and parts['bench'].get('rows'):
        table = parts['bench']['log_tail'].split('minddpm against the original recipe')[-1]
        out += ['', '## minddpm_bench', '```', 'minddpm against the original recipe' + table.rstrip(), '```']
    for name, p in parts.items():
        if p['status'] != 'pass':
            out += ['', f"## {name} failed (exit {p['exit_code']}{', timed out' if p['timed_out'] else ''}): end of its log",
                    '```', '\n'.join(p['log_tail'].splitlines()[-25:]), '```']
    return '\n'.join(out) + '\n'

if __name__ == '__main__':
    cmd, *args = sys.argv[1:]
    if cmd == 'preflight': sys.exit(preflight(Path(args[0])))
    if cmd == 'lesson': sys.exit(run_lesson(Path(args[0]).resolve(), Path(args[1]).resolve()))
    if cmd == 'report': sys.exit(report(Path(args[0]), Path(args[1])))
    sys.exit(f'unknown command {cmd!r}; use preflight, lesson or report')
