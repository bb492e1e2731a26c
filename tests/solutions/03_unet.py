"Solutions to lesson 03's exercises, and classic mistakes the checks must catch."
import math
import torch

def sinusoidal_embedding(t, dim):
    half = dim // 2
    freqs = 10000.0 ** (-torch.arange(half, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=1)

def conv_block_params(c_in, c_out):
    convs = 3 * 3 * c_in * c_out + 3 * 3 * c_out * c_out
    norms = 2 * (c_out + c_out)
    return convs + norms

SOLUTIONS = {f.__name__: f for f in (sinusoidal_embedding, conv_block_params)}

def _cos_first(t, dim):
    angles = t.float()[:, None] * 10000.0 ** (-torch.arange(dim // 2) / (dim // 2))
    return torch.cat([angles.cos(), angles.sin()], dim=1)

def _frequencies_over_dim(t, dim):
    angles = t.float()[:, None] * 10000.0 ** (-torch.arange(dim // 2) / dim)
    return torch.cat([angles.sin(), angles.cos()], dim=1)

WRONG = [
    ('sinusoidal_embedding', _cos_first, 'at index'),                                   # cosines first
    ('sinusoidal_embedding', _frequencies_over_dim, 'at index'),                        # i/dim instead of i/(dim/2)
    ('sinusoidal_embedding', lambda t, dim: t.float()[:, None].repeat(1, dim), 'at index'),
    ('conv_block_params', lambda c_in, c_out: 9 * c_in * c_out + 9 * c_out * c_out, 'it gives'),   # the norms forgotten
    ('conv_block_params', lambda c_in, c_out: 9 * c_in * c_out + 9 * c_out * c_out + 2 * c_out, 'it gives'),   # one norm
]
