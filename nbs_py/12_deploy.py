# %%
#| default_exp demo

# %% [markdown]
# # Deploying
# > Put a trained model in front of people: a Gradio demo that works offline and batches concurrent requests, an HTTP API that returns the same PNG for the same request, and the network exported without the training code, each measured

# %% [markdown]
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minddpm/minddpm/blob/main/nbs/12_deploy.ipynb)
# This lesson has no GPU-only cells: it ran top to bottom in about a minute on a 2-core CPU (measured). Its last
# cell, flagged `colab`, starts a public demo from Colab and is not run in tests.

# %%
#| hide
# On Colab, or wherever minddpm is missing, install it: from PyPI, else from the course's repository.
# Where it is installed (as in CI) this does nothing.
import importlib.util, subprocess, sys
if importlib.util.find_spec('minddpm') is None:
    for source in ('minddpm', 'git+https://github.com/minddpm/minddpm'):
        if subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', source]).returncode == 0:
            print(f"installed minddpm from {'PyPI' if source == 'minddpm' else source}"); break
        print(f"pip could not install {source}" + (", trying the course's repository" if source == 'minddpm' else ''))
    else: raise RuntimeError('could not install minddpm from PyPI or from https://github.com/minddpm/minddpm')

# %%
#| hide
# Gradio is the `demo` extra (`pip install "minddpm[demo]"`); Colab has it already.
if importlib.util.find_spec('gradio') is None:
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', 'gradio>=6'], check=True)

# %%
#| export
from __future__ import annotations
import hashlib, io, json, math, os, queue, re, tempfile, threading, time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from minddpm.data import to_uint8
from minddpm.sampling import DEFAULT_SPACING, PRECISIONS, _finite, _network, _sampling, _student_options, ddim_timesteps, denoise_steps
from minddpm.training import Trained, load_model

# %%
#| hide
from fastcore.test import *
from minddpm.exercises import check   # the exercises at the end
import matplotlib.pyplot as plt
from concurrent.futures import ThreadPoolExecutor
from minddpm.data import pick_device, pick_preset, show_images
from minddpm.data import cpu_has_bf16
from minddpm.sampling import sample
from minddpm.training import export_model
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0)
started = time.perf_counter()

# %%
print(f"device: {pick_device()}; preset: {pick_preset()}")   # 'colab' sizes on a CUDA GPU, 'tiny' elsewhere

# %% [markdown]
# A model on a disk helps nobody. This lesson ships the one the course trained in two forms:
#
# - **a web demo**, the field's usual way to show a model (every Hugging Face Space is one): pick a class, press a
#   button, watch the digits form. It is built with [Gradio](https://www.gradio.app), and it is also an HTTP API.
# - **the network alone**, as a file that runs without minddpm's code: a `torch.export` archive (`.pt2`) or an ONNX
#   file (`.onnx`) for ONNX Runtime and the runtimes that read it, both from `export_model` (lesson 07).
#
# Serving raises a question that training never did: many people press the button at once. We answer it with the
# one measurement that matters, what an image costs at each batch size.
#
# We use the shipped model, the tiny digits model trained on a CPU (lesson 07); any checkpoint works the same way.

# %%
from importlib import resources
shipped = resources.files('minddpm.assets')/'digits_tiny.pt'   # what `load_model()` loads
m = load_model(shipped)
print(f"classes: {m.classes}; images: {m.shape}; trained for {m.step} steps; predicts {m.diffusion.objective}")

# %% [markdown]
# ## What an image costs at each batch size
#
# A network call has a fixed cost (launching kernels, Python, reading the weights) and a cost per image. Time one
# call of the network at several batch sizes and divide by the batch: the cost per image falls until the
# machine is busy. On a GPU it falls much further than on this CPU, because a small batch leaves most of the chip
# idle. We time three forms of the same network: the eager `nn.Module`, the exported graph of lesson 07
# (`torch.export`), and the eager one with bf16 weights where the CPU has bf16 instructions.

# %%
export_model(shipped, pt2 := Path(tempfile.mkdtemp())/'digits.pt2')     # the EMA UNet as a graph, dynamic batch size
exported = load_model(pt2)
nets = {'eager fp32': _network(m.model, 'fp32', torch.device('cpu')),
        'exported fp32': _network(exported.model, 'fp32', torch.device('cpu'))}
if cpu_has_bf16(): nets['eager bf16'] = _network(m.model, 'bf16', torch.device('cpu'))

@torch.no_grad()
def ms_per_image(net, batch, reps=5):
    "The median time of `reps` calls of `net` on `batch` images, per image, in ms."
    x, t, y = torch.randn(batch, *m.shape), torch.full((batch,), 500), torch.zeros(batch, dtype=torch.long)
    net(x, t, y)                                                          # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter(); net(x, t, y); times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[reps // 2] / batch

batches = [1, 2, 4, 8, 16, 32, 64, 128]
cost = {name: [ms_per_image(net, b) for b in batches] for name, net in nets.items()}
for name, c in cost.items(): print(f"{name:14}" + ' '.join(f"{v:6.2f}" for v in c) + '  ms per image')

# %%
fig, ax = plt.subplots(figsize=(6, 3.2))
for name, c in cost.items(): ax.plot(batches, c, 'o-', label=name)
ax.set(xscale='log', yscale='log', xlabel='images per network call', ylabel='ms per image',
       title='One image costs less in a batch (this CPU)')
ax.set_xticks(batches, batches); ax.legend(); plt.show()

# %% [markdown]
# The exported graph runs at about the eager network's speed: `python tests/bench_export.py` (7 repeats) measured it
# at 0.76 to 1.17 times eager's time per image over batches of 1 to 256, and single runs like this one wander more.
# `torch.export` buys portability (a file that runs without the training code), not speed; lesson 09's
# `torch.compile` is the tool for speed. What pays is the batch: one image alone costs several
# times what it costs among 64. The ratio is the whole argument for the next section. (The committed figure and
# `python tests/bench_export.py` measure the same on more batch sizes and repeats.)

# %% [markdown]
# ## Batching requests that arrive together
#
# A demo that samples each request on its own makes the tenth visitor wait for nine full sampling runs. A
# **batcher** collects the requests that are waiting when the network becomes free and samples them in *one*
# loop: one batch, one set of network calls. Two details make it correct:
#
# - **Requests that share a loop.** A sampling loop has one sampler, one step count and one guidance weight, so
#   only requests that agree on those three join the same batch; the class, the number of images and the seed are
#   per row.
# - **The same images as alone.** Each request's starting noise is drawn from its own seed (`x_T` of `sample`), and
#   the demo offers only the deterministic samplers (DPM-Solver++ and DDIM with η = 0), so nothing else in a
#   request's rows depends on its neighbours. A batch of requests gives each the images it would get alone, and the
#   same images `minddpm_sample --sampler dpm++ --seed …` draws. (This holds bit for bit on this CPU, checked below;
#   a GPU may pick other kernels for other batch sizes and differ in the last bits.)
#
# The batch has a ceiling, counted in network rows: a guided image costs two (its conditional and unconditional
# passes share one call, lesson 04). Which requests join a loop: the oldest waiting request is always served next,
# and its loop is the one run; every later request that shares that loop joins, in order of arrival, while the rows
# taken so far plus its own stay within the ceiling. One that would pass the ceiling waits for a later loop, and those
# behind it may still join; one with another loop waits too, however many share it. No request waits for ever.
#
# First, a request as it comes from a form or an HTTP call, checked field by field:

# %%
#| exports
DEMO_SAMPLERS = ('dpm++', 'ddim')   # the deterministic ones: an image depends on its own seed alone
MAX_IMAGES, MAX_STEPS, MAX_GUIDANCE = 16, 100, 20.0   # per request
SEED_MAX = 2**31 - 1

@dataclass(frozen=True)
class Request:
    "One checked demo request (`parse_request`): `n` images of class `label` (an index) with one sampler, steps, w and seed."
    label: int     # index into the model's classes
    n: int         # images, 1 … MAX_IMAGES
    w: float       # guidance weight, 0 … MAX_GUIDANCE
    sampler: str   # one of DEMO_SAMPLERS
    steps: int     # network calls, 1 … MAX_STEPS
    seed: int      # seeds the starting noise, 0 … SEED_MAX

    @property
    def rows(self) -> int: return self.n if self.w == 1 else 2 * self.n   # network rows per call: a guided image (w ≠ 1) is two

    @property
    def loop(self) -> tuple: return (self.sampler, self.steps, self.w)    # what requests sampled in one loop must share


# %%
#| export
#| hide
def _shown(value, most: int = 40) -> str:
    "`repr(value)`, cut to `most` characters: a message must not echo a 10,000-character field back."
    r = repr(value)
    return r if len(r) <= most else r[:most - 1] + '…'

def _number(name: str, value, lo, hi, whole: bool):
    "`value` as a form or an HTTP call gives it (a number or a string) → a number in [lo, hi]; `ValueError` saying why not."
    allowed = f"a whole number from {lo} to {hi}" if whole else f"a number from {lo:g} to {hi:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)): raise ValueError(f"{name} must be {allowed}, got {_shown(value)}")
    try: x = float(value)
    except ValueError: raise ValueError(f"{name} must be {allowed}, got {_shown(value)}") from None
    if not math.isfinite(x) or not lo <= x <= hi or (whole and x != int(x)): raise ValueError(f"{name} must be {allowed}, got {_shown(value)}")
    return int(x) if whole else x

class _RequestQueue:
    "`Batcher`'s plumbing: requests queue up, one thread takes them in batches (`_next_batch`) and samples each batch (`_sample`)."
    def _start(self):
        self.batches = []                    # requests per loop, in order served
        self._waiting, self._cv, self._closed = deque(), threading.Condition(), False
        self._thread = threading.Thread(target=self._serve, name='minddpm-batcher', daemon=True); self._thread.start()

    def submit(self, request: Request) -> queue.Queue:
        "Queue a request; its events arrive on the returned queue. Raises `RuntimeError` once closed."
        ticket = SimpleNamespace(request=request, events=queue.Queue())   # the request, and the queue its events go to
        with self._cv:
            if self._closed: raise RuntimeError('this Batcher is closed')
            self._waiting.append(ticket); self._cv.notify()
        return ticket.events

    def events(self, request: Request):
        "Submit `request` and yield its events as they come, up to and including ('done', …); re-raises a sampling error."
        q = self.submit(request)
        while (event := q.get())[0] != 'done':
            if event[0] == 'error': raise event[1]
            yield event
        yield event

    def __call__(self, request: Request):
        "Sample `request` and wait: (images, info), images (n, C, H, W) uint8, info a dict (seconds, requests, rows)."
        for event in self.events(request): pass
        return event[1], event[2]

    def close(self):
        "Stop the thread after the batch in progress; requests still waiting get a `RuntimeError`."
        with self._cv: self._closed = True; self._cv.notify()
        self._thread.join()
        for ticket in self._waiting: ticket.events.put(('error', RuntimeError('the demo stopped before this request ran')))

    def _next_batch(self) -> list:
        "Wait for requests; take the oldest and every waiting one that shares its loop and fits in `max_rows`."
        with self._cv:
            while not self._waiting and not self._closed: self._cv.wait()
            if self._closed: return []
            first = self._waiting.popleft()
            batch, rows = [first], first.request.rows
            if self.batching:
                for ticket in list(self._waiting):
                    if ticket.request.loop == first.request.loop and rows + ticket.request.rows <= self.max_rows:
                        self._waiting.remove(ticket); batch.append(ticket); rows += ticket.request.rows
            return batch

    def _serve(self):
        while batch := self._next_batch():
            try: self._sample(batch)
            except Exception as e:                      # the thread lives on; each request hears what went wrong
                for ticket in batch: ticket.events.put(('error', e))

# %%
#| exports
def parse_request(classes: list,       # the model's class names; label i is classes[i]
                  label,               # a class name, or its index (an int or a string of digits)
                  n=4,                 # images, 1 … MAX_IMAGES
                  w=3.0,               # guidance weight, 0 … MAX_GUIDANCE: 0 unconditional, 1 conditional, >1 guided
                  sampler='dpm++',     # one of DEMO_SAMPLERS
                  steps=20,            # network calls, 1 … MAX_STEPS
                  seed=0,              # seeds the starting noise, 0 … SEED_MAX
                  ) -> Request:
    """Check a request's fields as a form or an HTTP call gives them (numbers may come as strings). Raises `ValueError`
    naming the field, what it got and what is allowed: an unknown class, a number out of range, not whole or not a number."""
    names = [str(c) for c in classes]
    key = label.strip() if isinstance(label, str) else label
    if isinstance(key, str) and key in names: i = names.index(key)
    elif isinstance(key, int) and not isinstance(key, bool) and 0 <= key < len(names): i = key
    elif isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 9 and int(key) < len(names): i = int(key)
    else: raise ValueError(f"unknown class {_shown(label)}: this model knows {', '.join(names)} "
                           f"(by name, or by index 0 … {len(names) - 1})")
    if sampler not in DEMO_SAMPLERS:
        raise ValueError(f"unknown sampler {_shown(sampler)}: the demo offers {' and '.join(DEMO_SAMPLERS)} (deterministic: "
                         f"a seed gives the same images whatever else is in the batch)")
    return Request(i, _number('n', n, 1, MAX_IMAGES, True), _number('w', w, 0, MAX_GUIDANCE, False), sampler,
                   _number('steps', steps, 1, MAX_STEPS, True), _number('seed', seed, 0, SEED_MAX, True))

# %%
r = parse_request(m.classes, '7', n=4, w='3', steps=20.0, seed=1)
print(r, '→', r.rows, 'network rows')
for bad in [dict(label='seven'), dict(label='7', n=0), dict(label='7', w='strong'), dict(label='7', steps=2.5)]:
    try: parse_request(m.classes, **bad)
    except ValueError as e: print(f"{bad}: {e}")

# %%
#| hide
test_eq(parse_request(m.classes, 3), parse_request(m.classes, '3'))
test_eq(parse_request(['cat', 'dog'], 'dog').label, 1)
test_eq(parse_request(['cat', 'dog'], 1).label, 1)
test_eq(parse_request(m.classes, '0', w=1).rows, 4)
for bad, says in [(dict(label='ten'), 'unknown class'), (dict(label=10), 'unknown class'), (dict(label=True), 'unknown class'),
                  (dict(label='1', n=17), 'n must be a whole number from 1 to 16'), (dict(label='1', w='nan'), 'w must be a number from 0 to 20'),
                  (dict(label='1', w=None), 'w must be a number'), (dict(label='1', seed=-1), 'seed must be a whole number from 0'),
                  (dict(label='1', steps=0), 'steps must be a whole number from 1'), (dict(label='1', sampler='ddpm'), 'unknown sampler'),
                  (dict(label='9' * 10_000), 'unknown class')]:
    test_fail(lambda: parse_request(m.classes, **bad), contains=says)

# %% [markdown]
# The batcher owns the network and one thread that runs it. `submit` queues a request and returns a queue on which
# the request's progress arrives: one `('step', …)` event per network call, with its part of $x_t$ and of the
# predicted $\hat x_0$ (what the page streams), then `('done', images, info)`, or `('error', exception)`. The queue and
# the thread are plumbing (a hidden base class); what the batcher adds is `_sample`: one pass of lesson 05's sampling
# loop, `denoise_steps`, for the whole batch, handing each request its own rows of every step as the loop yields it.

# %%
#| exports
class Batcher(_RequestQueue):
    """Samples the requests of many threads with one network: the requests waiting when the network is free, and
    sharing sampler, steps and w, are sampled in one loop of at most `max_rows` network rows (a guided image is two).
    Each request's noise comes from its own seed, so it gets the images it would get alone. `submit(request)` queues a
    request and returns the queue of its events; `batcher(request)` waits for its (images, info); `close()` stops it."""
    def __init__(self, trained: Trained,     # from `load_model`: network (weights or exported), schedule, classes, shape
                 max_rows: int = 128,        # network rows per batch, at least 2·MAX_IMAGES (one request always fits)
                 precision: str = 'auto',    # the network's: 'fp32', 'bf16', or 'auto' (bf16 on a CPU with bf16 instructions)
                 batching: bool = True):     # False: one request per loop (to measure what batching buys)
        if max_rows < 2 * MAX_IMAGES: raise ValueError(f"max_rows must be at least {2 * MAX_IMAGES} (one request of {MAX_IMAGES} guided images), got {max_rows}")
        if trained.diffusion.objective == 'flow':
            raise ValueError("the demo samples with dpm++ and ddim along a diffusion's timesteps; this model was trained with flow "
                             "matching (objective 'flow', lesson 13), which it does not serve yet: sample it with minddpm_sample "
                             "--sampler euler or heun, or serve a model trained with objective eps, v or x0")
        self.trained, self.max_rows, self.batching = trained, max_rows, batching
        self.net = _network(trained.model, precision, trained.diffusion.betas.device)   # bf16 weights cast once
        self._start()

    def _sample(self, batch: list):
        "One sampling loop for the requests in `batch`: each hears of every step (its rows of x_t and x̂0), then gets its images."
        reqs, m, sizes = [k.request for k in batch], self.trained, [k.request.n for k in batch]
        device, (sampler, steps, w) = m.diffusion.betas.device, reqs[0].loop
        y = torch.cat([torch.full((r.n,), r.label) for r in reqs]).to(device)
        x = torch.cat([torch.randn((r.n, *m.shape), generator=torch.Generator().manual_seed(r.seed)) for r in reqs]).to(device)
        spacing = 'trailing' if getattr(m.diffusion, 'calls', None) else DEFAULT_SPACING[sampler]   # a student's own (lesson 14)
        ts, start = ddim_timesteps(m.diffusion.T, steps, spacing), time.perf_counter()
        with _sampling(self.net, m.diffusion) as (net, _):                   # lesson 05's set-up: eval mode
            for call, (t, x, x0) in enumerate(denoise_steps(net, m.diffusion, x, ts, y, w, sampler, eta=0.0), 1):
                if t < 0: break                                                  # the last step: x holds the images
                for k, xi, x0i in zip(batch, to_uint8(x).cpu().split(sizes), to_uint8(x0).cpu().split(sizes)):
                    k.events.put(('step', call, steps, xi, x0i))
        images = to_uint8(_finite(x, 'sampling', w)).cpu()
        info = dict(seconds=time.perf_counter() - start, requests=len(reqs), rows=sum(r.rows for r in reqs))
        self.batches.append(len(reqs))
        for k, im in zip(batch, images.split(sizes)): k.events.put(('done', im, info))

# %% [markdown]
# Eight visitors press the button at the same moment, each asking for four guided images of their own digit:

# %%
requests = [parse_request(m.classes, str(d), n=4, seed=d) for d in range(8)]

def serve_all(batcher):
    "Submit every request from its own thread at once; the wall time and each request's images."
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(requests)) as pool: results = list(pool.map(batcher, requests))
    return time.perf_counter() - t0, [images for images, info in results]

one_by_one = Batcher(m, batching=False)
alone_s, alone = serve_all(one_by_one); one_by_one.close()
batcher = Batcher(m)
together_s, together = serve_all(batcher)
print(f"one loop per request: {alone_s:.2f} s for {one_by_one.batches} requests per loop")
print(f"batched:              {together_s:.2f} s for {batcher.batches} requests per loop "
      f"({alone_s / together_s:.1f}× the throughput)")
test_eq(torch.cat(together), torch.cat(alone))   # the same images, bit for bit
show_images(torch.cat(together), torch.tensor([r.label for r in requests]).repeat_interleave(4), m.classes, ncols=8)

# %% [markdown]
# The requests that reach the batcher first start a loop; those that arrive while it runs share the next one. The
# images are identical bit for bit either way, and equal to what `sample` draws with the same seed:

# %%
seed7 = sample(m.model, m.diffusion, torch.full((4,), 7), shape=m.shape, sampler='dpm++', steps=20, w=3.0, uint8=True,
               generator=torch.Generator().manual_seed(7), precision='auto')   # the batcher's precision
test_eq(together[7], seed7)

# %% [markdown]
# ## The demo
#
# `demo_app` wraps the batcher in a Gradio page. The sampling function is a generator: each network call yields the
# grid of $x_t$ so far, so the visitor watches the digits form; the last yield adds the trajectory (the first image's
# $x_t$ above its $\hat x_0$ at eight steps) and the time it took. Four choices keep it fit for a course:
#
# - **Offline.** Gradio's analytics are off (`analytics_enabled=False`, and `GRADIO_ANALYTICS_ENABLED` unless you set
#   it), and Gradio 6 serves its scripts and its theme's fonts itself (Gradio 5's default theme fetched Google Fonts,
#   one reason minddpm asks for Gradio 6), so the page loads nothing from another host; CI checks that in a browser.
#   A public link (`share=True`, through Gradio's tunnel) is made only when asked.
# - **Bad input gets a message, not a traceback.** `parse_request` errors become `gr.Error`s, which the page shows as
#   a notice and an API caller receives as the error; the server logs no traceback for them and serves on.
# - **An HTTP API beside the page**, Gradio's own: the endpoint `/png` takes class, n, w, steps, seed (and sampler)
#   and returns the grid as a PNG, byte for byte the same for the same request (PNG encoding is deterministic, and so
#   is the batcher).
# - **Concurrency.** Gradio runs one event at a time by default; the demo lets them all in, and the batcher decides
#   what runs together.

# %%
#| exports
def grid_png(images: torch.Tensor,   # (B, C, H, W) uint8, C = 1 (saved greyscale) or 3
             ncols: int | None = None, # images per row; None: all in one row
             scale: int = 1,          # each pixel becomes scale × scale (nearest neighbour)
             pad: int = 1,            # grey pixels around each image
             ) -> bytes:              # the PNG file's bytes
    "The images as one PNG grid (bytes; the same images give the same bytes). Plain NumPy: no torch threads in a web handler."
    from PIL import Image
    a = images.numpy().transpose(0, 2, 3, 1)                       # (B, H, W, C)
    b, h, w, c = a.shape
    ncols = ncols or b; nrows = -(-b // ncols)
    grid = np.full((pad + nrows * (h + pad), pad + ncols * (w + pad), c), 128, np.uint8)
    for i, img in enumerate(a):
        r, q = divmod(i, ncols)
        grid[pad + r * (h + pad):(r + 1) * (h + pad), pad + q * (w + pad):(q + 1) * (w + pad)] = img
    grid = grid.repeat(scale, 0).repeat(scale, 1)
    buf = io.BytesIO(); Image.fromarray(grid[..., 0] if c == 1 else grid).save(buf, format='PNG'); return buf.getvalue()

def _picture(images, ncols=None, scale=8) -> np.ndarray:
    "A (H, W, 3) uint8 array of the grid, enlarged for the page."
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(grid_png(images, ncols, scale))).convert('RGB'))

# %%
#| export
#| hide
def _gradio():
    "Gradio with its analytics off, or an `ImportError` saying how to install it."
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')
    try: import gradio as gr
    except ImportError: raise ImportError('the demo needs Gradio: pip install "minddpm[demo]"') from None
    return gr

def _checked(gr, m: Trained, *fields) -> Request:
    """`parse_request` for model `m` (a distilled student, lesson 14, takes its own sampler, steps and w alone), its
    `ValueError` turned into a `gr.Error`: a notice on the page, the error of an API call, no traceback logged."""
    try:
        r = parse_request(m.classes, *fields)
        if getattr(m.diffusion, 'calls', None): _student_options(m.diffusion, r.sampler, r.steps, None, r.w, None)
        return r
    except ValueError as e: raise gr.Error(str(e), print_exception=False) from None

def _defaults(diffusion) -> dict:
    "The form's and the API's w, sampler and steps: DPM-Solver++ in 20 steps at w = 3, or a distilled student's own (lesson 14)."
    if getattr(diffusion, 'calls', None): return dict(w=diffusion.guidance, sampler='ddim', steps=diffusion.calls)
    return dict(w=3.0, sampler='dpm++', steps=20)

def _trajectory(frames) -> np.ndarray:
    "x_t above x̂0 of the first image, at (up to) eight evenly spaced steps of `frames`, a list of (x_t, x̂0) uint8 images."
    keep = [frames[round(i * (len(frames) - 1) / 7)] for i in range(8)] if len(frames) > 8 else frames
    return _picture(torch.stack([f[0] for f in keep] + [f[1] for f in keep]), ncols=len(keep), scale=4)

def _api_inputs(d: dict) -> dict:
    "The values each API endpoint takes, in order, with the defaults `d` a shorter plain-HTTP request gets (None: required)."
    return {'png': (('class', None), ('n', 4), ('w', d['w']), ('steps', d['steps']), ('seed', 0), ('sampler', d['sampler'])),
            'sample': (('class', None), ('n', 4), ('w', d['w']), ('sampler', d['sampler']), ('steps', d['steps']), ('seed', 0))}
API_INPUTS = _api_inputs(_defaults(None))   # a model's; a student's come from its calls and guidance

class _FilledInputs:
    """ASGI middleware before Gradio's routes: a plain-HTTP call of `/png` or `/sample` (`{"data": [...]}`) with fewer
    values than the endpoint takes gets the rest from `API_INPUTS`; one with no class, more values than it takes, or a
    body that is not such an object is answered 422, in words."""
    def __init__(self, app, inputs: dict = API_INPUTS): self.app, self.inputs = app, inputs

    async def __call__(self, scope, receive, send):
        hit = scope['type'] == 'http' and scope['method'] == 'POST' and re.fullmatch(r'.*/(?:call|run|api)/(\w+)/?', scope['path'])
        if not hit or hit.group(1) not in self.inputs: return await self.app(scope, receive, send)
        body, more = b'', True
        while more:
            message = await receive()
            body, more = body + message.get('body', b''), message.get('more_body', False)
        try: request = json.loads(body)
        except ValueError: request = None
        inputs, name = self.inputs[hit.group(1)], hit.group(1)
        data = request.get('data') if isinstance(request, dict) else None
        if not isinstance(data, list) or not 1 <= len(data) <= len(inputs):
            got = ('no JSON object' if not isinstance(request, dict) else "no 'data' list" if not isinstance(data, list)
                   else f"{len(data)} values")
            text = json.dumps({'error': f"/{name} takes {{\"data\": [{', '.join(n for n, _ in inputs)}]}}, in that order, "
                                        f"and got {got}; the class is needed, the others default to "
                                        + ', '.join(f'{n} {d!r}' for n, d in inputs[1:])}).encode()
            await send({'type': 'http.response.start', 'status': 422,
                        'headers': [(b'content-type', b'application/json'), (b'content-length', str(len(text)).encode())]})
            return await send({'type': 'http.response.body', 'body': text})
        if len(data) < len(inputs):
            request['data'] += [d for _, d in inputs[len(data):]]
            body = json.dumps(request).encode()
            scope = {**scope, 'headers': [(k, v) for k, v in scope['headers'] if k.lower() != b'content-length']
                                         + [(b'content-length', str(len(body)).encode())]}
        replayed = False
        async def replay():
            nonlocal replayed
            if replayed: return await receive()
            replayed = True
            return {'type': 'http.request', 'body': body, 'more_body': False}
        await self.app(scope, replay, send)

def _filling_launch(launch, inputs: dict = API_INPUTS):
    "Blocks.launch with `_FilledInputs` (filling from `inputs`) among the FastAPI app's middleware, whatever else `app_kwargs` brings."
    from starlette.middleware import Middleware
    def launched(*args, app_kwargs=None, **kwargs):
        app_kwargs = dict(app_kwargs or {})
        app_kwargs['middleware'] = [*app_kwargs.get('middleware', []), Middleware(_FilledInputs, inputs=inputs)]
        return launch(*args, app_kwargs=app_kwargs, **kwargs)
    return launched

def _page(gr, m: Trained, generate, png, batcher):
    "The demo's `gr.Blocks`: the form, the `generate` button (`/sample`), the `png` API endpoint (`/png`), and `batcher` as `.batcher`."
    # Gradio types the endpoint from the hints, which `from __future__ import annotations` leaves as strings
    png.__annotations__ = {'label': str, 'n': float, 'w': float, 'steps': float, 'seed': float, 'sampler': str,
                           'return': gr.FileData}
    d = _defaults(m.diffusion)   # a distilled student's own sampler, steps and w (lesson 14)
    with gr.Blocks(analytics_enabled=False, title='minddpm demo') as app:
        gr.Markdown(f"## minddpm: a conditional DDPM\nClasses {', '.join(m.classes)}; {m.shape[1]}×{m.shape[2]} images; "
                    f"{m.step} training steps" + (f"; a student distilled to {d['steps']} calls at w = {d['w']:g} (lesson 14), which "
                    "samples with those alone" if getattr(m.diffusion, 'calls', None) else '') + ". Each network call is streamed as it runs.")
        with gr.Row():
            with gr.Column(scale=1):
                # the request is checked by `parse_request`, not by the components: their checks log a traceback
                label = gr.Dropdown(m.classes, value=m.classes[0], label='class', allow_custom_value=True)
                n = gr.Number(4, step=1, label='images', info=f'1 to {MAX_IMAGES}')
                w = gr.Number(d['w'], label='guidance w', info=f'0 unconditional, 1 conditional, >1 guided (up to {MAX_GUIDANCE:g})')
                sampler = gr.Dropdown(list(DEMO_SAMPLERS), value=d['sampler'], label='sampler', allow_custom_value=True)
                steps = gr.Number(d['steps'], step=1, label='steps', info=f'network calls, 1 to {MAX_STEPS}')
                seed = gr.Number(0, step=1, label='seed', info='the same seed and settings give the same images')
                button = gr.Button('Sample', variant='primary')
            with gr.Column(scale=2):
                grid = gr.Image(label='samples', format='png', interactive=False)
                traj = gr.Image(label='trajectory of the first image: x_t above x̂0', format='png', interactive=False)
                caption = gr.Markdown()
        button.click(generate, [label, n, w, sampler, steps, seed], [grid, traj, caption], api_name='sample',
                     concurrency_limit=None)
        gr.api(png, api_name='png', concurrency_limit=None)
    app.batcher, app.launch = batcher, _filling_launch(app.launch, _api_inputs(d))
    return app

# %%
#| exports
def demo_app(model=None,                 # a `Trained` from `load_model`, or a path for it; None: the shipped digits model
             max_rows: int = 128,        # network rows per batch (`Batcher`)
             precision: str = 'auto',    # the network's precision (`Batcher`)
             batching: bool = True):     # False: one request per sampling loop
    """The Gradio demo (a `gr.Blocks`; `.launch()` serves it): class, images, guidance w, sampler,
    steps and seed → the grid, streamed step by step, the trajectory and the time; and the API endpoint `/png`. Its
    `Batcher` is `app.batcher`; `app.close()` does not stop it, `app.batcher.close()` does."""
    gr = _gradio()
    m = model if isinstance(model, Trained) else load_model(model)
    batcher, files = Batcher(m, max_rows, precision, batching), Path(tempfile.mkdtemp(prefix='minddpm-demo-'))
    d = _defaults(m.diffusion)   # the API's defaults: a distilled student's own (lesson 14)

    def generate(label, n, w, sampler, steps, seed):
        "The page's button: yields (grid, trajectory, caption) as the sampling goes."
        r, frames = _checked(gr, m, label, n, w, sampler, steps, seed), []
        for event in batcher.events(r):
            if event[0] == 'step':
                _, call, total, x, x0 = event
                frames.append((x[0], x0[0]))
                yield _picture(x, ncols=min(r.n, 8)), gr.skip(), f"network call {call} of {total} …"
            else:
                _, images, info = event
                shared = f", sampled with {info['requests'] - 1} other request{'s' * (info['requests'] != 2)}" if info['requests'] > 1 else ''
                yield (_picture(images, ncols=min(r.n, 8)), _trajectory(frames),
                       f"{r.n} × class {m.classes[r.label]!r}: {r.sampler}, {r.steps} steps, w = {r.w:g}, seed {r.seed}; "
                       f"{info['seconds']:.2f} s{shared}")

    def png(label: str, n: float = 4, w: float = d['w'], steps: float = d['steps'], seed: float = 0, sampler: str = d['sampler']):
        "The grid of `n` images of class `label` (name or index) as a PNG: the same request gives the same bytes."
        images, _ = batcher(_checked(gr, m, label, n, w, sampler, steps, seed))
        data = grid_png(images)
        path = files/f"{hashlib.sha256(data).hexdigest()[:16]}.png"   # the same request, the same name
        tmp = path.with_name(f'{path.stem}.{threading.get_ident()}.tmp')
        tmp.write_bytes(data); os.replace(tmp, path)   # atomic: two equal requests at once never read a half-written file
        return gr.FileData(path=str(path), mime_type='image/png')

    return _page(gr, m, generate, png, batcher)

# %% [markdown]
# In a notebook, launch it without blocking (`prevent_thread_lock=True`), and call it the way any program would,
# with `gradio_client`; the page is at the printed address. The API's PNG is the grid at its true size, 16×16 per
# image:

# %%
app = demo_app(m)
_, url, _ = app.launch(server_name='127.0.0.1', prevent_thread_lock=True, inline=False, quiet=True)
print(f"serving at {url}")

from gradio_client import Client
client = Client(url, verbose=False)
png_path = client.predict('3', 8, 3.0, 20, 0, api_name='/png')
again = client.predict('3', 8, 3.0, 20, 0, api_name='/png')
test_eq(Path(png_path).read_bytes(), Path(again).read_bytes())   # byte for byte
from PIL import Image
print(Image.open(png_path).size, 'pixels')
plt.figure(figsize=(6, 1)); plt.imshow(Image.open(png_path)); plt.axis('off'); plt.show()

# %% [markdown]
# A bad request gets the message, and the next one is served:

# %%
try: client.predict('thirteen', 4, 3.0, 20, 0, api_name='/png')
except Exception as e: print(f"{type(e).__name__}: {e}")
print(Path(client.predict('9', 1, 3.0, 10, 5, api_name='/png')).stat().st_size, 'bytes')

# %% [markdown]
# The page's own endpoint, `/sample`, streams; `gradio_client` returns its last yield (grid, trajectory, caption):

# %%
grid_file, trajectory_file, text = client.predict('5', 4, 3.0, 'dpm++', 20, 1, api_name='/sample')
print(text)
plt.figure(figsize=(6, 2)); plt.imshow(Image.open(trajectory_file)); plt.axis('off'); plt.show()

# %% [markdown]
# How many requests a second does it serve? `tests/bench_demo.py` starts the command twice, batched and with one
# sampling loop per request (`--no-batching`), and sends requests to each from 1, 4 and 16 clients at once: four
# guided images at 20 steps each, every client sending its next request when the last is answered. The two servers
# take turns, three rounds each, because this 2-core machine is shared and its speed drifts from minute to minute.
# `python tests/bench_demo.py` measured (`tests/results/demo.json`):

# %%
clients = [1, 4, 16]
served = {'one loop per request': [[0.42, 1.28, 0.61], [0.41, 1.32, 0.99], [0.81, 1.29, 1.18]],   # requests/s, 3 rounds
          'batched':              [[0.30, 1.26, 1.02], [0.98, 1.65, 1.46], [2.71, 2.01, 2.17]]}
fig, ax = plt.subplots(figsize=(5.5, 3))
for (name, rounds), shift in zip(served.items(), (0.94, 1.06)):
    for c, rs in zip(clients, rounds): ax.plot([c * shift] * len(rs), rs, 'o', alpha=0.5, color='C0' if shift < 1 else 'C1')
    ax.plot([c * shift for c in clients], [sorted(rs)[1] for rs in rounds], '-', label=f'{name} (median)', color='C0' if shift < 1 else 'C1')
ax.set(xscale='log', xlabel='clients sending at once', ylabel='requests per second', ylim=(0, None),
       title='The batched demo serves more as the crowd grows')
ax.set_xticks(clients, clients); ax.legend(); plt.show()

# %% [markdown]
# Read the rounds, not only the medians. With one client the two servers do the same work, so their spread (0.3 to
# 1.3 requests/s) is the machine's noise. With 4 and 16 clients the batched server served more in every round: at
# 16 clients 2.0 to 2.7 requests/s against 0.8 to 1.3, and a request's median wait fell from 11 to 19 s to 6 to
# 8 s. One loop per request cannot go faster than its single-request rate however many wait; the batched server
# climbs as the per-image curve above allows, and on a GPU, where that curve falls much further, the gap is wider.

# %% [markdown]
# ## From the command line, and on Colab
#
# `minddpm_demo [CHECKPOINT]` (page *Commands*) serves the shipped model, or any checkpoint or exported `.pt2` file, at
# http://127.0.0.1:7860 until you stop it; `--share` asks Gradio for a public link, `--host 0.0.0.0` serves your
# network. Other programs call the same server:
#
# ```python
# from gradio_client import Client
# Client('http://127.0.0.1:7860').predict('7', 4, 3.0, 20, 0, api_name='/png')   # → the PNG's path
# ```
#
# or, without Python, Gradio's two-step HTTP API: post the request's values in order (class, n, w, steps, seed,
# sampler; the class alone will do, the server fills in the others' defaults), then read the answer, which holds
# the PNG's URL:
#
# ```bash
# curl -s -H 'Content-Type: application/json' -d '{"data": ["7", 4, 3.0, 20, 0, "dpm++"]}' http://127.0.0.1:7860/gradio_api/call/png
# curl -s http://127.0.0.1:7860/gradio_api/call/png/EVENT_ID     # the event_id the first call returned
# ```
#
# The same two calls to the server this lesson started, with `httpx` (which Gradio brings):

# %%
import httpx
event = httpx.post(f"{url}gradio_api/call/png", json={'data': ['7', 4, 3.0, 20, 0, 'dpm++']}).json()['event_id']
answer = httpx.get(f"{url}gradio_api/call/png/{event}", timeout=120).text          # server-sent events; the last one is the result
result = json.loads(answer.strip().splitlines()[-1].removeprefix('data:'))[0]
png_bytes = httpx.get(result['url']).content
test_eq(png_bytes, Path(client.predict('7', 4, 3.0, 20, 0, api_name='/png')).read_bytes())   # what the Python client gets
plt.figure(figsize=(3, 1)); plt.imshow(Image.open(io.BytesIO(png_bytes)), cmap='gray'); plt.axis('off'); plt.show()

# %%
#| hide
def plain_call(data, name='png'):   # the two-step HTTP call; the last event's data, or the refusal's JSON
    posted = httpx.post(f"{url}gradio_api/call/{name}", json={'data': data})
    if posted.status_code != 200: return posted.status_code, posted.json()
    answer = httpx.get(f"{url}gradio_api/call/{name}/{posted.json()['event_id']}", timeout=120).text
    return 200, json.loads(answer.strip().splitlines()[-1].removeprefix('data:'))
status, result = plain_call(['7'])   # the class alone: n 4, w 3, 20 steps, seed 0, dpm++, as above
test_eq((status, httpx.get(result[0]['url']).content), (200, png_bytes))
status, refusal = plain_call([])
test_eq(status, 422); assert 'got 0 values; the class is needed' in refusal['error'] and "sampler 'dpm++'" in refusal['error'], refusal
status, result = plain_call(['5', 2], 'sample')   # the page's endpoint fills in the same way
assert status == 200 and '2 × class' in result[2], result
status, refusal = plain_call(['7', 4, 3.0, 20, 0, 'dpm++', 'extra'])   # a value too many is a mistake, not a default
test_eq(status, 422); assert 'got 7 values' in refusal['error'], refusal
for body in ('3', {'data': '3'}):   # not {"data": [...]}
    posted = httpx.post(f"{url}gradio_api/call/png", **({'content': body} if isinstance(body, str) else {'json': body}))
    assert posted.status_code == 422 and '/png takes {"data": [class, n, w, steps, seed, sampler]}' in posted.json()['error'], posted.text
app.close(); app.batcher.close()


# %% [markdown]
# On Colab a server on the notebook's machine cannot be reached from your browser, so the next cell asks for a
# public link (valid for a week) and keeps the cell running (`debug=True`) so that errors show below it. Stop it
# with the stop button.

# %%
#| colab
demo_app().launch(share=True, debug=True)

# %%
print(f"this lesson ran in {time.perf_counter() - started:.0f} s")

# %% [markdown]
# ## Exercises
#
# Write each function in place of its `...` and run its cell: `check` prints ✓, or where your answer differs and a hint
# ([how the checks work](exercises.ipynb)). Keep the stub's parameter names (`check` passes its inputs by name) and
# return the inputs' dtype unless the stub asks for another. Solutions: `tests/solutions/` in the course's repository.
#
# 1. **Which requests share the next loop.** Given the waiting requests in order of arrival, as two lists, their
#    loops (each a tuple (sampler, steps, w)) and their rows (network rows each costs), and the batcher's `max_rows`,
#    return the indices of the requests the batcher samples together next, ascending, by the rule under "Batching
#    requests that arrive together". Then: eight requests of 4 guided images each (8 rows) wait together, at the
#    default `max_rows` of 128; the oldest asks for DDIM and the other seven for DPM-Solver++. How many loops does the
#    batcher run for the eight, and which requests share each?

# %%
def next_batch(loops, rows, max_rows):   # a list of tuples, a list of ints (same length), an int
    ...                                   # return a list of ints

check(next_batch)

# %% [markdown]
# 2. **A call's fixed cost.** The cost per image above falls with the batch because each call has a fixed cost. Given
#    the batch sizes, (n,), and the measured ms per image at each, (n,), both float64 tensors, fit the line
#    `fixed + per_image × batch` to the calls' times (ms per image × batch) by least squares, and return
#    `(fixed_ms, per_image_ms)`, a tuple of two floats. Then fit this lesson's `cost['eager fp32']` at `batches` (lists:
#    make them float64 tensors first): the fixed cost is worth how many images (fixed / per image)? Run the timing cell
#    again and refit: how much does that figure move between two runs on one machine, and why is a fit of a few noisy
#    timings no better than its noisiest point?

# %%
def call_cost(batches, ms_per_image):   # (n,) float64, (n,) float64
    ...                                  # return a tuple (fixed_ms, per_image_ms) of floats

check(call_cost)
