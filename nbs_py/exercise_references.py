# %%
#| default_exp exercise_references

# %% [markdown]
# # Exercise references
# > Every exercise of the lessons: its reference answer, the inputs it is checked on and a hint, registered in `EXERCISES`; the answers are hidden from this page so that it gives no solution away

# %% [markdown]
# Each exercise is an `Exercise` in `EXERCISES`: the lesson that asks it, a reference answer, the inputs it is checked
# on and a hint. `exercise` registers a reference answer as it is defined; [`check`](exercises.ipynb) looks the
# exercise up by the student's function's name. The answers themselves are hidden here; they are in the package's
# source, `minddpm/exercise_references.py`, for instructors and for students who are stuck.

# %%
#| export
from __future__ import annotations
import math
from dataclasses import dataclass
from typing import Callable

import torch

# %%
#| hide
from fastcore.test import *
from nbdev.showdoc import show_doc

# %%
#| export
@dataclass
class Exercise:
    "One exercise: the lesson that asks it, the reference answer, the inputs it is checked on, and a hint."
    lesson: str                       # the lesson's notebook, e.g. '01_schedule'
    reference: Callable               # the right answer, as a function
    cases: Callable[[], list[dict]]   # makes the keyword arguments to check on (random and edge cases), the same every call
    hint: str                         # what to look at when an answer differs
    atol: float = 1e-5                # absolute tolerance on each number
    rtol: float = 1e-4                # relative tolerance on each number

EXERCISES: dict[str, Exercise] = {}   # name of the function to write → its exercise

def exercise(lesson: str,               # the lesson's notebook, e.g. '01_schedule'
             name: str,                 # the name of the function the student writes
             hint: str,                 # what to look at when an answer differs
             cases: Callable,           # makes the keyword arguments to check on
             atol: float = 1e-5,        # absolute tolerance
             rtol: float = 1e-4):       # relative tolerance
    "Register the decorated function as the reference answer of exercise `name`, in `EXERCISES`."
    def register(fn):
        EXERCISES[name] = Exercise(lesson, fn, cases, hint, atol, rtol)
        return fn
    return register

# %%
show_doc(Exercise)

# %%
show_doc(exercise)

# %%
#| hide
#| export
def _gen(seed: int = 0) -> torch.Generator: return torch.Generator().manual_seed(seed)

def _betas_cases():
    b = torch.rand(20, generator=_gen(), dtype=torch.float64) * 0.05
    return [dict(betas=torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)), dict(betas=b), dict(betas=torch.tensor([0.5]))]

@exercise('01_schedule', 'alpha_bars_from_betas', 'ᾱ_t is the running product of α_s = 1 − β_s for s = 0 … t, the step t itself included (torch.cumprod).',
          _betas_cases)
def _alpha_bars_from_betas(betas): return torch.cumprod(1 - betas, 0)

@exercise('01_schedule', 'cosine_alpha_bars', "ᾱ_t = f(t + 1) / f(0) with f(u) = cos²((u/T + s)/(1 + s) · π/2), for t = 0 … T−1: the offset s "
          "is inside the cosine, every value is divided by f(0), and nothing is clipped (the lesson's β are, at 0.999).",
          lambda: [dict(T=1000, s=0.008), dict(T=10, s=0.008), dict(T=4, s=0.1), dict(T=2, s=0.0)])
def _cosine_alpha_bars(T, s=0.008):
    f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
    return f[1:] / f[0]

@exercise('01_schedule', 'snr', 'the signal-to-noise ratio is the signal\'s share over the noise\'s: ᾱ / (1 − ᾱ).',
          lambda: [dict(alpha_bars=torch.linspace(0.999, 0.001, 50, dtype=torch.float64)), dict(alpha_bars=torch.tensor([0.5, 0.9]))])
def _snr(alpha_bars): return alpha_bars / (1 - alpha_bars)

def _noise_cases():
    g = _gen(1)
    x0, eps = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1, torch.randn(4, 1, 8, 8, generator=g)
    return [dict(x0=x0, eps=eps, alpha_bars_t=torch.tensor([0.9999, 0.5, 0.1, 4e-5])),
            dict(x0=x0[:2].expand(2, 3, 8, 8).clone(), eps=torch.randn(2, 3, 8, 8, generator=g), alpha_bars_t=torch.tensor([0.3, 0.7]))]

@exercise('02_forward', 'add_noise', 'x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε: square roots of ᾱ, not ᾱ itself, and one ᾱ per image, shaped (B, 1, 1, 1) '
          'so it broadcasts over C, H and W.', _noise_cases)
def _add_noise(x0, eps, alpha_bars_t):
    a = alpha_bars_t.view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps

@exercise('02_forward', 'v_target', 'v = √ᾱ_t · ε − √(1 − ᾱ_t) · x0 (Salimans & Ho 2022): ε\'s weight is the signal\'s scale, and x0 is '
          'subtracted.', _noise_cases)
def _v_target(x0, eps, alpha_bars_t):
    a = alpha_bars_t.view(-1, 1, 1, 1)
    return a.sqrt() * eps - (1 - a).sqrt() * x0

def _x0_cases():
    return [dict(xt=c['x0'] * 0.3 + c['eps'], eps_hat=c['eps'], alpha_bars_t=c['alpha_bars_t']) for c in _noise_cases()]

@exercise('02_forward', 'x0_from_eps', 'solve x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε for x0: subtract the noise part, then divide by √ᾱ_t.', _x0_cases,
          rtol=1e-3)
def _x0_from_eps(xt, eps_hat, alpha_bars_t):
    a = alpha_bars_t.view(-1, 1, 1, 1)
    return (xt - (1 - a).sqrt() * eps_hat) / a.sqrt()

@exercise('03_unet', 'sinusoidal_embedding', 'dim/2 frequencies ω_i = 10000^(−i/(dim/2)) for i = 0 … dim/2 − 1; the sines of t·ω first, then the cosines.',
          lambda: [dict(t=torch.tensor([0, 1, 10, 999]), dim=8), dict(t=torch.arange(0, 1000, 37), dim=64), dict(t=torch.tensor([5]), dim=2)],
          atol=1e-3)   # float32 angles up to 999 radians: ways of computing ω that are equally right differ by about 1e-4
def _sinusoidal_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)

@exercise('03_unet', 'conv_block_params', 'a 3×3 conv from c_in to c_out channels without bias has 9·c_in·c_out weights; the block has two convs '
          '(c_in → c_out, c_out → c_out) and two GroupNorms, each with a scale and a shift per channel.',
          lambda: [dict(c_in=64, c_out=128), dict(c_in=1, c_out=32), dict(c_in=3, c_out=3)])
def _conv_block_params(c_in, c_out): return 9 * c_in * c_out + 9 * c_out * c_out + 2 * 2 * c_out

def _pair_cases():
    g = _gen(2)
    a, b = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    return [dict(eps_c=a, eps_u=b, w=3.0), dict(eps_c=a, eps_u=b, w=0.0), dict(eps_c=a, eps_u=b, w=1.0), dict(eps_c=b, eps_u=a, w=7.5),
            dict(eps_c=a.double(), eps_u=b.double(), w=3.0)]   # float64 in, float64 out

@exercise('04_conditioning', 'guided_mix', 'ε̂ = ε_u + w·(ε_c − ε_u): start from the unconditional branch and move w times the way '
          'the label points; w = 0 is unconditional, w = 1 conditional.', _pair_cases)
def _guided_mix(eps_c, eps_u, w): return eps_u + w * (eps_c - eps_u)

def _drop_cases():
    g = _gen(3)
    return [dict(y=torch.randint(0, 10, (64,), generator=g), u=torch.rand(64, generator=g), p=0.1),
            dict(y=torch.arange(5), u=torch.tensor([0.0, 0.05, 0.1, 0.5, 0.99]), p=0.1), dict(y=torch.arange(3), u=torch.rand(3, generator=g), p=1.0)]

@exercise('04_conditioning', 'drop_with', 'a label is dropped (becomes NULL_LABEL, −1) where its own draw u < p, each sample on '
          'its own: about a share p of them, and the rest keep their class.', _drop_cases)
def _drop_with(y, u, p): return torch.where(u < p, torch.full_like(y, -1), y)

def _ddim_cases():
    g = _gen(4)
    x, e = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    return [dict(xt=x, eps_hat=e, alpha_bar_t=0.05, alpha_bar_s=0.3), dict(xt=x, eps_hat=e, alpha_bar_t=0.9, alpha_bar_s=0.999),
            dict(xt=x, eps_hat=e, alpha_bar_t=0.5, alpha_bar_s=0.5)]

@exercise('05_sampling', 'ddim_step_by_hand', 'first x̂0 = (x_t − √(1 − ᾱ_t)·ε̂) / √ᾱ_t; then x_s = √ᾱ_s·x̂0 + √(1 − ᾱ_s)·ε̂, with the '
          'earlier step\'s ᾱ_s in both terms (η = 0, no clipping).', _ddim_cases, rtol=1e-3)
def _ddim_step(xt, eps_hat, alpha_bar_t, alpha_bar_s):
    x0 = (xt - math.sqrt(1 - alpha_bar_t) * eps_hat) / math.sqrt(alpha_bar_t)
    return math.sqrt(alpha_bar_s) * x0 + math.sqrt(1 - alpha_bar_s) * eps_hat

@exercise('05_sampling', 'posterior_variance', 'β̃_t = β_t · (1 − ᾱ_{t−1}) / (1 − ᾱ_t), with ᾱ_{−1} = 1 before the first step, so '
          'β̃_0 = 0: at the last step down nothing is left to add.', _betas_cases)
def _posterior_variance(betas):
    ab = torch.cumprod(1 - betas, 0)
    prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    return betas * (1 - prev) / (1 - ab)

def _ema_cases():
    g = _gen(5)
    return [dict(avg=torch.randn(10, generator=g), new=torch.randn(10, generator=g), beta=0.995),
            dict(avg=torch.zeros(3), new=torch.ones(3), beta=0.9), dict(avg=torch.ones(2), new=torch.zeros(2), beta=0.0)]

@exercise('06_ema', 'ema_update', 'the average keeps a share β of itself and takes 1 − β of the new weights: β·avg + (1 − β)·new.',
          _ema_cases)
def _ema_update(avg, new, beta): return beta * avg + (1 - beta) * new

@exercise('06_ema', 'ema_weights', 'after n updates starting from w_0, the average is Σ_k c_k·w_k with c_0 = β^n and '
          'c_k = (1 − β)·β^(n − k) for k = 1 … n; the n + 1 coefficients sum to 1.',
          lambda: [dict(n=10, beta=0.9), dict(n=1, beta=0.5), dict(n=500, beta=0.995), dict(n=3, beta=0.0)])
def _ema_weights(n, beta):
    k = torch.arange(n + 1, dtype=torch.float64)
    c = (1 - beta) * beta ** (n - k)
    c[0] = beta ** n
    return c

@exercise('06_ema', 'ema_half_life', 'the starting weights keep a share β^n after n updates; find the least whole n with β^n ≤ 1/2 '
          '(n = ⌈log ½ / log β⌉), an int.', lambda: [dict(beta=0.995), dict(beta=0.9), dict(beta=0.5), dict(beta=0.9999)])
def _ema_half_life(beta): return math.ceil(math.log(0.5) / math.log(beta))

def _loss_cases():
    g = _gen(6)
    p, y = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    return [dict(pred=p, target=y, weights=torch.tensor([5.0, 1.0, 0.1, 0.01])), dict(pred=p, target=y, weights=torch.ones(4)),
            dict(pred=p[:2].expand(2, 3, 8, 8).clone(), target=y[:2].expand(2, 3, 8, 8).clone(), weights=torch.tensor([0.0, 2.0]))]

@exercise('07_training', 'weighted_mse', "each image's squared error is averaged over its C·H·W pixels first, multiplied by that "
          "image's weight, and only then averaged over the batch: a number.", _loss_cases)
def _weighted_mse(pred, target, weights): return ((pred - target).square().flatten(1).mean(1) * weights).mean()

@exercise('07_training', 'min_snr_v_weights', "min-SNR-γ weighs the x0 error by min(SNR, γ); a v-network's error is (SNR + 1) "
          "times its x0 error, so its weight is min(SNR, γ) / (SNR + 1).",
          lambda: [dict(snr=torch.logspace(-4, 4, 30, dtype=torch.float64), gamma=5.0), dict(snr=torch.tensor([0.5, 5.0, 50.0]), gamma=1.0)])
def _min_snr_v_weights(snr, gamma): return snr.clamp(max=gamma) / (snr + 1)

def _stats_cases():
    g = _gen(7)
    def cov(d):
        a = torch.randn(d, d, generator=g, dtype=torch.float64)
        return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
    m = lambda d: torch.randn(d, generator=g, dtype=torch.float64)
    s = cov(6)
    return [dict(mu1=m(6), sigma1=cov(6), mu2=m(6), sigma2=cov(6)), dict(mu1=m(3), sigma1=cov(3), mu2=m(3), sigma2=cov(3)),
            dict(mu1=torch.zeros(6, dtype=torch.float64), sigma1=s, mu2=torch.zeros(6, dtype=torch.float64), sigma2=s.clone())]

@exercise('08_evaluation', 'fid_from_stats', 'FID = ‖μ1 − μ2‖² + Tr(Σ1) + Tr(Σ2) − 2·Tr((Σ1 Σ2)^½): the squared distance of the '
          'means, and the square root of the product of the covariances (its eigenvalues\' square roots, summed), not of each.',
          _stats_cases, atol=1e-6, rtol=1e-5)
def _fid_from_stats(mu1, sigma1, mu2, sigma2):
    w, v = torch.linalg.eigh(sigma1)
    r1 = v @ torch.diag(w.clamp(min=0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(r1 @ sigma2 @ r1).clamp(min=0).sqrt().sum()
    return ((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * cross).item()

def _logit_cases():
    g = _gen(8)
    return [dict(logits=torch.randn(50, 10, generator=g), labels=torch.randint(0, 10, (50,), generator=g)),
            dict(logits=torch.eye(4) * 3, labels=torch.arange(4)), dict(logits=torch.eye(4), labels=torch.tensor([1, 1, 2, 0]))]

@exercise('08_evaluation', 'judged_accuracy', "the judge's class for each sample is the index of its largest logit (argmax over the "
          "classes, dim 1); the accuracy is the share of samples whose judged class is the one asked for, a float in [0, 1].",
          _logit_cases)
def _judged_accuracy(logits, labels): return (logits.argmax(1) == labels).double().mean().item()

def _sizes_cases():
    return [dict(batch=16, height=32, width=32, bytes_per_value=4), dict(batch=1, height=64, width=64, bytes_per_value=2),
            dict(batch=8, height=16, width=16, bytes_per_value=4), dict(batch=2, height=8, width=4, bytes_per_value=4)]

@exercise('09_performance', 'attention_map_bytes', 'the map holds one weight for every pair of pixels: (H·W)² numbers per image, '
          '(B, HW, HW) in all (averaged over the heads), each bytes_per_value bytes; an int.', _sizes_cases)
def _attention_map_bytes(batch, height, width, bytes_per_value): return batch * (height * width) ** 2 * bytes_per_value

@exercise('09_performance', 'channels_last_strides', 'in channels-last order the C values of one pixel sit next to each other: C has stride 1, '
          'W stride C, H stride W·C and N stride H·W·C, returned in the order (N, C, H, W) of the shape; a tuple of 4 ints.',
          lambda: [dict(shape=(16, 64, 32, 32)), dict(shape=(2, 3, 4, 5)), dict(shape=(1, 1, 8, 8)), dict(shape=(4, 3, 1, 1))])
def _channels_last_strides(shape):
    N, C, H, W = shape
    return (H * W * C, 1, W * C, C)

@exercise('10_distributed', 'micro_batch_positions', 'rank r holds positions r, r + W, r + 2W, … of the global batch (W = world_size), '
          '(B/W of them, in that order), and cuts them into grad_accum consecutive micro-batches of B/(W·K); micro k is the k-th '
          'of those pieces. A LongTensor.',
          lambda: [dict(batch_size=16, world_size=4, grad_accum=2, rank=1, micro=1), dict(batch_size=16, world_size=1, grad_accum=1, rank=0, micro=0),
                   dict(batch_size=64, world_size=2, grad_accum=4, rank=1, micro=2), dict(batch_size=12, world_size=3, grad_accum=2, rank=2, micro=0)])
def _micro_batch_positions(batch_size, world_size, grad_accum, rank, micro):
    return torch.arange(rank, batch_size, world_size).chunk(grad_accum)[micro]

def _grad_cases():
    g = _gen(9)
    return [dict(per_sample_grads=torch.randn(16, 5, generator=g, dtype=torch.float64), world_size=2, grad_accum=2),
            dict(per_sample_grads=torch.randn(24, 3, generator=g, dtype=torch.float64), world_size=3, grad_accum=4),
            dict(per_sample_grads=torch.randn(8, 2, generator=g, dtype=torch.float64), world_size=1, grad_accum=1)]

@exercise('10_distributed', 'ddp_gradient', 'each micro-batch\'s loss is a mean over its images and is divided by grad_accum before '
          'backward(); the K micro-batches\' gradients add up in .grad; the all-reduce sums the ranks\' .grad and DDP divides by '
          'the world size. The result is one (P,) gradient, the same on every rank.', _grad_cases)
def _ddp_gradient(per_sample_grads, world_size, grad_accum): return per_sample_grads.mean(0)

@exercise('11_editing', 'sdedit_start', 'SDEdit noises to t0 = round(strength·T) − 1: strength 1 starts at the last step, T − 1, '
          'and strength 0 gives −1 (nothing to undo, the input comes back unchanged); an int.',
          lambda: [dict(strength=0.6, T=1000), dict(strength=1.0, T=1000), dict(strength=0.0, T=1000), dict(strength=0.3337, T=1000),
                   dict(strength=0.26, T=8), dict(strength=0.9, T=10)])
def _sdedit_start(strength, T): return round(strength * T) - 1

def _renoise_cases():
    g = _gen(10)
    x, z = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    return [dict(x_s=x, alpha_bar_s=1.0, alpha_bar_t=0.5, z=z), dict(x_s=x, alpha_bar_s=0.8, alpha_bar_t=0.2, z=z),
            dict(x_s=x, alpha_bar_s=0.05, alpha_bar_t=0.01, z=z)]

@exercise('11_editing', 'renoise_by_hand', 'from x_s (not from a clean image) the step to t keeps the ratio r = ᾱ_t/ᾱ_s: '
          'x_t = √r·x_s + √(1 − r)·z. Only when x_s is clean (ᾱ_s = 1) is that lesson 02\'s add_noise.', _renoise_cases)
def _renoise_by_hand(x_s, alpha_bar_s, alpha_bar_t, z):
    r = alpha_bar_t / alpha_bar_s
    return math.sqrt(r) * x_s + math.sqrt(1 - r) * z

@exercise('11_editing', 'repaint_calls', 'the plain walk down costs `steps` calls; after every `jump` steps down (at step jump, 2·jump, … '
          'below steps) the walk goes back up jump steps and down again, resample − 1 times, and each time down costs jump calls. '
          'Going up re-noises: no call. An int.',
          lambda: [dict(steps=50, jump=5, resample=5), dict(steps=50, jump=5, resample=1), dict(steps=20, jump=10, resample=3),
                   dict(steps=10, jump=3, resample=2), dict(steps=1, jump=1, resample=5)])
def _repaint_calls(steps, jump, resample): return steps + (resample - 1) * jump * ((steps - 1) // jump)

def _request_cases():
    A, B = ('dpm++', 20, 3.0), ('ddim', 50, 3.0)
    return [dict(loops=[A, A, A, A], rows=[8, 8, 8, 8], max_rows=32), dict(loops=[A, A, A, A], rows=[8, 8, 30, 8], max_rows=32),
            dict(loops=[A, B, A, B, A], rows=[4, 4, 8, 4, 32], max_rows=64), dict(loops=[B], rows=[32], max_rows=32),
            dict(loops=[B, A, B, B], rows=[16, 2, 32, 16], max_rows=40), dict(loops=[B, A, A, A], rows=[8, 8, 8, 8], max_rows=128),
            dict(loops=[A, A, A, A, A], rows=[16, 8, 8, 8, 4], max_rows=32)]

@exercise('12_deploy', 'next_batch', 'the oldest waiting request (index 0) is always taken; then every later request, in order of arrival, '
          'that shares its loop and still fits (the rows taken so far plus its own at most max_rows) joins, and one that does not fit '
          'is passed over, not a stop. A list of indices, ascending.', _request_cases)
def _next_batch(loops, rows, max_rows):
    taken, used = [0], rows[0]
    for i in range(1, len(loops)):
        if loops[i] == loops[0] and used + rows[i] <= max_rows: taken.append(i); used += rows[i]
    return taken

def _cost_cases():
    g, B = _gen(11), torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.float64)
    noisy = (6.0 + 0.25 * B) * (1 + 0.05 * torch.randn(8, generator=g, dtype=torch.float64)) / B
    return [dict(batches=B, ms_per_image=(5.0 + 0.3 * B) / B), dict(batches=B, ms_per_image=noisy),
            dict(batches=B[:3], ms_per_image=(20.0 + 2.0 * B[:3]) / B[:3])]

@exercise('12_deploy', 'call_cost', 'a call of b images takes fixed + per_image·b ms, and ms_per_image·b is that call\'s time: fit the line '
          '(least squares) to the call times against b, not to the per-image times. A tuple (fixed_ms, per_image_ms) of floats.',
          _cost_cases, rtol=1e-3, atol=1e-3)
def _call_cost(batches, ms_per_image):
    A = torch.stack([torch.ones_like(batches), batches], 1)
    fixed, per_image = torch.linalg.lstsq(A, (ms_per_image * batches)[:, None]).solution[:, 0].tolist()
    return (fixed, per_image)

def _euler_cases():
    g = _gen(12)
    x, v = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    return [dict(x=x, v_hat=v, t=1.0, t_next=0.75), dict(x=x, v_hat=v, t=0.5, t_next=0.0), dict(x=x, v_hat=v, t=0.3, t_next=0.3)]

@exercise('13_flow', 'flow_euler_step', 'along x_t = (1 − t)·x0 + t·ε the velocity dx/dt is ε − x0, and sampling runs t from 1 down '
          'to 0, so t_next − t is negative: x_next = x + (t_next − t)·v̂.', _euler_cases)
def _flow_euler_step(x, v_hat, t, t_next): return x + (t_next - t) * v_hat

@exercise('13_flow', 'flow_time', 'divide x_t = α·x0 + σ·ε by α + σ (α = √ᾱ, σ = √(1 − ᾱ)): the path\'s time is τ = σ / (α + σ), '
          'the noise\'s share of the two scales, not 1 − ᾱ.',
          lambda: [dict(alpha_bars=torch.linspace(0.9999, 4e-5, 40, dtype=torch.float64)), dict(alpha_bars=torch.tensor([0.5, 1.0]))])
def _flow_time(alpha_bars):
    a, s = alpha_bars.sqrt(), (1 - alpha_bars).sqrt()
    return s / (a + s)

def _linear_alpha_bars(): return torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)

def _distill_cases():
    g, ab = _gen(13), _linear_alpha_bars()
    z_t, z_s = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    return [dict(z_t=z_t, z_s=z_s, alpha_bar_t=ab[999].item(), alpha_bar_s=ab[749].item()),
            dict(z_t=z_t, z_s=z_s, alpha_bar_t=ab[499].item(), alpha_bar_s=ab[249].item()),
            dict(z_t=z_t, z_s=z_s, alpha_bar_t=ab[249].item(), alpha_bar_s=1.0)]

@exercise('14_distill', 'v_from_x0', 'with α_t = √ᾱ_t and σ_t = √(1 − ᾱ_t): the noise that x0 implies is ε = (z_t − α_t·x0)/σ_t, '
          'and v = α_t·ε − σ_t·x0 (lesson 02).',
          lambda: [dict(z_t=c['z_t'], x0=c['z_s'], alpha_bar_t=c['alpha_bar_t']) for c in _distill_cases()]
                  + [dict(z_t=_distill_cases()[1]['z_t'].double(), x0=_distill_cases()[1]['z_s'].double(), alpha_bar_t=0.5)], rtol=1e-3)
def _v_from_x0(z_t, x0, alpha_bar_t):
    a, s = math.sqrt(alpha_bar_t), math.sqrt(1 - alpha_bar_t)
    return a * (z_t - a * x0) / s - s * x0

@exercise('14_distill', 'distill_v_target', 'first x̃ = (z̃_s − (σ_s/σ_t)·z_t) / (α_s − (σ_s/σ_t)·α_t), with α = √ᾱ and σ = √(1 − ᾱ) '
          'of each step (at the clean image ᾱ_s = 1: α_s = 1, σ_s = 0); then read x̃ as v at (z_t, t), as v_from_x0 does.',
          _distill_cases, rtol=1e-3, atol=1e-4)
def _distill_v_target(z_t, z_s, alpha_bar_t, alpha_bar_s):
    a_t, s_t, a_s, s_s = math.sqrt(alpha_bar_t), math.sqrt(1 - alpha_bar_t), math.sqrt(alpha_bar_s), math.sqrt(1 - alpha_bar_s)
    x = (z_s - s_s / s_t * z_t) / (a_s - s_s / s_t * a_t)
    return _v_from_x0(z_t, x, alpha_bar_t)

@exercise('15_dit', 'dit_attention_size', 'a p×p patch is one token, so an image of side `size` gives (size/p)² tokens; each head scores '
          'every token against every token, tokens² numbers, and a block has `heads` of them. A tuple of two ints.',
          lambda: [dict(size=16, patch=2, heads=3), dict(size=32, patch=2, heads=6), dict(size=32, patch=4, heads=6), dict(size=8, patch=8, heads=1)])
def _dit_attention_size(size, patch, heads):
    tokens = (size // patch) ** 2
    return (tokens, heads * tokens ** 2)

def _modulate_cases():
    g = _gen(14)
    h = torch.randn(2, 5, 4, generator=g)
    return [dict(h=h, shift=torch.randn(2, 4, generator=g), scale=torch.randn(2, 4, generator=g)),
            dict(h=h, shift=torch.zeros(2, 4), scale=torch.zeros(2, 4)), dict(h=h, shift=torch.ones(2, 4), scale=-torch.ones(2, 4))]

@exercise('15_dit', 'modulate_by_hand', 'h·(1 + γ) + β, one γ and β per sample and channel: (B, D) made (B, 1, D) so they broadcast over '
          'the N tokens; γ = 0 and β = 0 leave h as it is.', _modulate_cases)
def _modulate_by_hand(h, shift, scale): return h * (1 + scale[:, None]) + shift[:, None]

# %%
#| hide
# the references agree with the lessons' own code where the package has it
from minddpm.exercise_references import _cosine_alpha_bars, _sinusoidal_embedding, _conv_block_params
from minddpm.schedule import cosine_betas
from minddpm.unet import ConvBlock, timestep_embedding
test_close(_cosine_alpha_bars(1000), torch.cumprod(1 - cosine_betas(1000, max_beta=1.0), 0), eps=1e-9)
test_eq(_sinusoidal_embedding(torch.arange(50), 16), timestep_embedding(torch.arange(50), 16))
test_eq(_conv_block_params(64, 128), sum(p.numel() for p in ConvBlock(64, 128).parameters()))
from minddpm.exercise_references import _channels_last_strides, _micro_batch_positions, _repaint_calls, _flow_time
from minddpm.distributed import Place, local_batch_size, rank_positions
from minddpm.editing import network_calls, repaint_walk
from minddpm.flow import flow_coordinates
from minddpm.forward import Diffusion
for shape in [(16, 64, 32, 32), (2, 3, 4, 5), (4, 3, 1, 1)]:
    test_eq(_channels_last_strides(shape), torch.empty(shape).to(memory_format=torch.channels_last).stride())
for B, W, K in [(16, 4, 2), (64, 2, 4), (12, 3, 2)]:
    m = local_batch_size(B, W, K)
    for r in range(W):
        test_eq(torch.cat([_micro_batch_positions(B, W, K, r, k) for k in range(K)]), rank_positions(Place(r, W), B))
        test_eq([len(_micro_batch_positions(B, W, K, r, k)) for k in range(K)], [m] * K)
for steps, jump, resample in [(50, 5, 5), (50, 5, 1), (20, 10, 3), (10, 3, 2), (1, 1, 5), (37, 4, 3)]:
    test_eq(_repaint_calls(steps, jump, resample), network_calls(repaint_walk(steps, jump, resample)))
from minddpm.dit import modulate
for c in _distill_cases():   # one DDIM step from z_t with the target's x0 lands where the teacher's two did
    a_t, s_t, a_s, s_s = (math.sqrt(v) for v in (c['alpha_bar_t'], 1 - c['alpha_bar_t'], c['alpha_bar_s'], 1 - c['alpha_bar_s']))
    x0 = a_t * c['z_t'] - s_t * _distill_v_target(**c)
    test_close(a_s * x0 + s_s * (c['z_t'] - a_t * x0) / s_t, c['z_s'], eps=1e-3)
d = Diffusion()
test_eq(_modulate_by_hand(*(c := _modulate_cases()[0]).values()), modulate(c['h'], c['shift'][:, None], c['scale'][:, None]))
test_close(_linear_alpha_bars().float(), d.alpha_bars, eps=1e-6)
test_close(_flow_time(d.alpha_bars.double())[[0, 500, 999]].float(), torch.tensor([flow_coordinates(d, torch.zeros(1), t)[1] for t in (0, 500, 999)]), eps=1e-6)
