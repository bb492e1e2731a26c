"Solutions to lesson 07's exercises, and classic mistakes the checks must catch."
import torch

def weighted_mse(pred, target, weights):
    per_image = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    return (weights * per_image).mean()

def min_snr_v_weights(snr, gamma):
    return torch.minimum(snr, torch.full_like(snr, gamma)) / (snr + 1)

SOLUTIONS = {f.__name__: f for f in (weighted_mse, min_snr_v_weights)}

WRONG = [
    ('weighted_mse', lambda pred, target, weights: (pred - target).square().mean() * weights.mean(), 'it gives'),   # weights averaged apart
    ('weighted_mse', lambda pred, target, weights: ((pred - target).square().flatten(1).sum(1) * weights).mean(), 'it gives'),   # summed pixels
    ('min_snr_v_weights', lambda snr, gamma: snr.clamp(max=gamma) / snr, 'at index'),                   # ε's weights
    ('min_snr_v_weights', lambda snr, gamma: snr.clamp(max=gamma), 'at index'),                         # x0's weights
]
