"Solutions to lesson 02's exercises, and classic mistakes the checks must catch."
import torch

def add_noise(x0, eps, alpha_bars_t):
    a = alpha_bars_t[:, None, None, None]
    return a.sqrt() * x0 + (1 - a).sqrt() * eps

def v_target(x0, eps, alpha_bars_t):
    a = alpha_bars_t[:, None, None, None]
    return a.sqrt() * eps - (1 - a).sqrt() * x0

def x0_from_eps(xt, eps_hat, alpha_bars_t):
    a = alpha_bars_t[:, None, None, None]
    return (xt - (1 - a).sqrt() * eps_hat) / a.sqrt()

SOLUTIONS = {f.__name__: f for f in (add_noise, v_target, x0_from_eps)}

WRONG = [
    ('add_noise', lambda x0, eps, alpha_bars_t: alpha_bars_t[:, None, None, None] * x0 + (1 - alpha_bars_t[:, None, None, None]) * eps,
     'at index'),                                                                                   # no square roots
    ('add_noise', lambda x0, eps, alpha_bars_t: alpha_bars_t.sqrt() * x0 + (1 - alpha_bars_t).sqrt() * eps,
     'raised RuntimeError'),                                                                        # ᾱ not broadcast per image
    ('v_target', lambda x0, eps, alpha_bars_t: alpha_bars_t[:, None, None, None].sqrt() * x0 - (1 - alpha_bars_t[:, None, None, None]).sqrt() * eps,
     'at index'),                                                                                   # x0 and ε swapped
    ('x0_from_eps', lambda xt, eps_hat, alpha_bars_t: (xt - (1 - alpha_bars_t[:, None, None, None]) * eps_hat) / alpha_bars_t[:, None, None, None],
     'at index'),                                                                                   # missing square roots
]
