# %%
#| default_exp device

# %% [markdown]
# # Device and precision
# > The device every lesson runs on, the preset that fits it, and the precision of its forward pass, chosen once

# %%
#| export
from __future__ import annotations
import contextlib, os, re, warnings
from pathlib import Path

import torch

# %%
#| hide
from fastcore.test import *
import matplotlib.pyplot as plt

# %%
#| hide
plt.rcParams['figure.dpi'] = 60  # small committed images; Jupyter's retina display doubles it
torch.manual_seed(0);

# %% [markdown]
# Every lesson runs on a laptop CPU and in CI in seconds, and on a Colab GPU at full size, without a line
# changed. The device is chosen once: CUDA, then Apple's MPS, then the CPU; a device named by hand must be
# one torch can use here, else it is refused with what torch sees (`_usable`, in a hidden cell). The preset
# follows the device: `tiny` off CUDA (the bundled digits at 16 px), `colab` on a CUDA GPU such as Colab's
# free T4 (CIFAR-10 at 32 px, as in the DDPM paper); `MINDDPM_PRESET=colab` (or `full`, the originals'
# 64×64 setting) overrides it. This module imports nothing else of minddpm: every other module may use it.

# %%
#| hide
#| export
def _usable(device: str) -> torch.device:
    "The `torch.device` named `device` if torch can use it here, else `ValueError` saying what is."
    try: d = torch.device(device)
    except (RuntimeError, TypeError): raise ValueError(f"Unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if d.type == 'cuda' and (d.index or 0) >= n_cuda:
        raise ValueError(f"device {device!r} is not available: torch sees {n_cuda or 'no'} CUDA GPU{'s' * (n_cuda != 1)} here; "
                         f"use auto or cpu")
    if d.type == 'mps' and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} is not available: torch sees no Apple GPU here; use auto or cpu")
    return d

def cpu_has_bf16() -> bool:
    "Does this CPU have bf16 matrix instructions (AMX-BF16 or AVX512-BF16)? Read from /proc/cpuinfo (Linux; False elsewhere)."
    try: flags = Path('/proc/cpuinfo').read_text()
    except OSError: return False
    return bool(re.search(r'\b(amx_bf16|avx512_bf16)\b', flags))


# %%
#| export
PRESETS = ('tiny', 'colab', 'full')

def pick_device(device: str = 'auto', # 'auto', or any name `torch.device` takes: 'cpu', 'cuda', 'cuda:1', 'mps'
                ) -> torch.device:
    "`'auto'` picks CUDA, then Apple's MPS, then the CPU. A named device must be usable here, else `ValueError` says what is."
    if device != 'auto': return _usable(device)
    if torch.cuda.is_available(): return torch.device('cuda')
    if torch.backends.mps.is_available(): return torch.device('mps')
    return torch.device('cpu')

def pick_preset(device: str = 'auto', # as for `pick_device`; CUDA gives 'colab'; unused if $MINDDPM_PRESET is set
                ) -> str:
    "`$MINDDPM_PRESET` if set, else `'colab'` on a CUDA GPU and `'tiny'` anywhere else (CPU, CI, MPS)."
    preset = os.environ.get('MINDDPM_PRESET') or ('colab' if pick_device(device).type == 'cuda' else 'tiny')
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r} in $MINDDPM_PRESET; use one of {', '.join(PRESETS)}")
    return preset


# %%
#| export
def cpu_has_bf16() -> bool:
    "Does this CPU have bf16 matrix instructions (AMX-BF16 or AVX512-BF16)? Read from /proc/cpuinfo (Linux; False elsewhere)."
    try: flags = Path('/proc/cpuinfo').read_text()
    except OSError: return False
    return bool(re.search(r'\b(amx_bf16|avx512_bf16)\b', flags))


# %%
device = pick_device()
print(f"device: {device}; preset: {pick_preset()}; bf16 instructions in this CPU: {cpu_has_bf16()}")

# %% [markdown]
# The precision is chosen with the device. On a CUDA GPU the forward pass runs under `torch.autocast`
# in bf16 (fp16 on GPUs without bf16), which halves the memory of activations and uses the tensor cores;
# elsewhere it stays in fp32 unless asked. `autocast` is entered in a `with` of its own: the originals
# wrote `torch.autocast(...) and nullcontext()`, which evaluates to the `nullcontext` and never turns
# autocast on.

# %%
#| exports
def resolve_precision(device: torch.device,  # where the model runs: only CUDA gets autocast under 'auto'
                      precision: str = 'auto', # 'auto', 'bf16', 'fp16' or 'fp32'
                      ) -> torch.dtype | None:
    """The autocast dtype for `device`: bf16 where CUDA supports it, fp16 on other CUDA GPUs, None (fp32) elsewhere.
    Raises `ValueError` for an unknown precision; warns when asked for fp16 on a CPU, where it is many times slower."""
    if precision not in ('auto', 'bf16', 'fp16', 'fp32'):
        raise ValueError(f"Unknown precision {precision!r}; use auto, bf16, fp16 or fp32")
    if precision == 'fp16' and device.type == 'cpu':
        warnings.warn("fp16 on a CPU is slow: most CPUs have no fast fp16 kernels (a tiny-preset step took 2.5 s against "
                      "0.16 s in fp32 on a 2-core CPU); use bf16 or fp32 there")
    if precision == 'auto':
        if device.type != 'cuda': return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': None}[precision]

def autocast(device: torch.device,      # where the forward pass runs; its type picks the autocast backend
             dtype: torch.dtype | None): # bf16 or fp16, as `resolve_precision` gives; None: fp32, no autocast
    "The autocast context for one forward pass, or a no-op for fp32."
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# %% [markdown]
# bf16 keeps fp32's range with 8 bits of mantissa instead of 24. Under autocast the inputs of a matrix
# product are rounded to bf16 and the sums kept in fp32, so the product differs from fp32 by a few parts
# in a thousand, which training tolerates:

# %%
a, b, cpu = torch.randn(256, 256), torch.randn(256, 256), torch.device('cpu')
with autocast(cpu, resolve_precision(cpu, 'bf16')): low = a @ b
err = ((low.float() - a @ b) / (a @ b).abs().mean()).flatten()
fig, ax = plt.subplots(figsize=(5, 1.8))
ax.hist(err, bins=80)
ax.set(xlabel='error of a bf16 product, relative to its mean size', ylabel='entries', title=f'{low.dtype}: mean |error| {err.abs().mean():.1e}');

# %%
#| hide
with autocast(cpu, resolve_precision(cpu, 'bf16')): assert torch.is_autocast_enabled('cpu')
with autocast(cpu, None): assert not torch.is_autocast_enabled('cpu')
test_eq(resolve_precision(cpu), None)
test_fail(lambda: resolve_precision(cpu, 'fp8'), contains='use auto, bf16, fp16 or fp32')
os.environ['MINDDPM_PRESET'] = 'huge'
test_fail(pick_preset, contains="use one of tiny, colab, full")
del os.environ['MINDDPM_PRESET']
test_eq(pick_device('cpu'), torch.device('cpu'))
test_fail(lambda: pick_device('gpu'), contains="Unknown device 'gpu'")
if not torch.cuda.is_available(): test_fail(lambda: pick_device('cuda'), contains="'cuda' is not available")
