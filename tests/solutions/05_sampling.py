"Solutions to lesson 05's exercises, and classic mistakes the checks must catch."
import math
import torch

def ddim_step_by_hand(xt, eps_hat, alpha_bar_t, alpha_bar_s):
    x0 = (xt - (1 - alpha_bar_t) ** 0.5 * eps_hat) / alpha_bar_t ** 0.5
    return alpha_bar_s ** 0.5 * x0 + (1 - alpha_bar_s) ** 0.5 * eps_hat

def posterior_variance(betas):
    alpha_bars = torch.cumprod(1 - betas, 0)
    before = torch.nn.functional.pad(alpha_bars[:-1], (1, 0), value=1.0)
    return betas * (1 - before) / (1 - alpha_bars)

SOLUTIONS = {f.__name__: f for f in (ddim_step_by_hand, posterior_variance)}

def _noise_of_t(xt, eps_hat, alpha_bar_t, alpha_bar_s):
    x0 = (xt - math.sqrt(1 - alpha_bar_t) * eps_hat) / math.sqrt(alpha_bar_t)
    return math.sqrt(alpha_bar_s) * x0 + math.sqrt(1 - alpha_bar_t) * eps_hat      # the noise kept at t's level

def _shifted(betas):
    alpha_bars = torch.cumprod(1 - betas, 0)
    return betas * (1 - alpha_bars) / (1 - alpha_bars)                               # ᾱ_t where ᾱ_{t−1} belongs: β itself

WRONG = [
    ('ddim_step_by_hand', _noise_of_t, 'at index'),
    ('ddim_step_by_hand', lambda xt, eps_hat, alpha_bar_t, alpha_bar_s: xt - eps_hat, 'at index'),
    ('posterior_variance', _shifted, 'at index'),
]
