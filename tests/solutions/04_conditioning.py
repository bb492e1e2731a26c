"Solutions to lesson 04's exercises, and classic mistakes the checks must catch."
import torch

def guided_mix(eps_c, eps_u, w):
    return (1 - w) * eps_u + w * eps_c

def drop_with(y, u, p):
    return torch.where(u < p, -1, y)

SOLUTIONS = {f.__name__: f for f in (guided_mix, drop_with)}

WRONG = [
    ('guided_mix', lambda eps_c, eps_u, w: eps_c + w * (eps_u - eps_c), 'at index'),               # the branches swapped
    ('guided_mix', lambda eps_c, eps_u, w: eps_c + w * (eps_c - eps_u), 'at index'),               # from the conditional branch
    ('drop_with', lambda y, u, p: torch.where(u > p, -1, y), 'at index'),                          # keeps p, drops 1 − p
    ('drop_with', lambda y, u, p: torch.where(u[0] < p, -1, y), 'at index'),                       # one coin for the batch
]
