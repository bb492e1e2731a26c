"Solutions to lesson 06's exercises, and classic mistakes the checks must catch."
import math
import torch

def ema_update(avg, new, beta):
    return avg.lerp(new, 1 - beta)

def ema_weights(n, beta):
    coefs = [beta ** n] + [(1 - beta) * beta ** (n - k) for k in range(1, n + 1)]
    return torch.tensor(coefs, dtype=torch.float64)

def ema_half_life(beta):
    n = 0
    while beta ** n > 0.5: n += 1
    return n

SOLUTIONS = {f.__name__: f for f in (ema_update, ema_weights, ema_half_life)}

WRONG = [
    ('ema_update', lambda avg, new, beta: (1 - beta) * avg + beta * new, 'at index'),              # the weights swapped
    ('ema_weights', lambda n, beta: torch.tensor([(1 - beta) * beta ** (n - k) for k in range(n + 1)], dtype=torch.float64),
     'at index (0,)'),                                                                               # w_0 weighed like the rest
    ('ema_half_life', lambda beta: math.floor(math.log(0.5) / math.log(beta)), 'it gives'),        # one update short
]
