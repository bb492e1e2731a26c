"Solutions to lesson 01's exercises, and classic mistakes the checks must catch."
import math
import torch

def alpha_bars_from_betas(betas):
    return torch.cumprod(1 - betas, dim=0)

def cosine_alpha_bars(T, s=0.008):
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    return f[1:] / f[0]

def snr(alpha_bars):
    return alpha_bars / (1 - alpha_bars)

SOLUTIONS = {f.__name__: f for f in (alpha_bars_from_betas, cosine_alpha_bars, snr)}

WRONG = [
    ('alpha_bars_from_betas', lambda betas: torch.cumprod(betas, 0), 'at index'),                       # β for α
    ('alpha_bars_from_betas', lambda betas: torch.cat([torch.ones(1, dtype=betas.dtype), torch.cumprod(1 - betas, 0)[:-1]]),
     'at index'),                                                                                          # off by one: ᾱ_{t−1}
    ('cosine_alpha_bars', lambda T, s=0.008: torch.cos((torch.arange(1, T + 1, dtype=torch.float64) / T) * math.pi / 2) ** 2,
     'at index'),                                                                                          # no offset s, no f(0)
    ('cosine_alpha_bars', lambda T, s=0.008: (torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2)[:-1],
     'at index'),                                                                                          # f(t) for f(t + 1), unnormalised
    ('snr', lambda alpha_bars: (1 - alpha_bars) / alpha_bars, 'at index'),                              # upside down
    ('snr', lambda alpha_bars: alpha_bars.sqrt() / (1 - alpha_bars).sqrt(), 'at index'),                # amplitudes, not powers
]
