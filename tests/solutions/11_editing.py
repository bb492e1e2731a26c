"Solutions to lesson 11's exercises, and classic mistakes the checks must catch."
import math

def sdedit_start(strength, T):
    return round(strength * T) - 1

def renoise_by_hand(x_s, alpha_bar_s, alpha_bar_t, z):
    r = alpha_bar_t / alpha_bar_s
    return math.sqrt(r) * x_s + math.sqrt(1 - r) * z

def repaint_calls(steps, jump, resample):
    jump_points = len(range(jump, steps, jump))     # where the walk goes back up: step jump, 2·jump, … below steps
    return steps + jump_points * (resample - 1) * jump

SOLUTIONS = {'sdedit_start': sdedit_start, 'renoise_by_hand': renoise_by_hand, 'repaint_calls': repaint_calls}

WRONG = [
    ('sdedit_start', lambda strength, T: round(strength * T), 'it gives'),             # off by one: strength 1 gives T
    ('sdedit_start', lambda strength, T: int(strength * T) - 1, 'it gives'),           # floor, not round
    ('renoise_by_hand', lambda x_s, alpha_bar_s, alpha_bar_t, z:                        # as if x_s were clean: add_noise
        math.sqrt(alpha_bar_t) * x_s + math.sqrt(1 - alpha_bar_t) * z, 'at index'),
    ('renoise_by_hand', lambda x_s, alpha_bar_s, alpha_bar_t, z:                        # the ratio without its square root
        alpha_bar_t / alpha_bar_s * x_s + math.sqrt(1 - alpha_bar_t / alpha_bar_s) * z, 'at index'),
    ('repaint_calls', lambda steps, jump, resample: steps * resample, 'it gives'),      # every step resampled
    ('repaint_calls', lambda steps, jump, resample: steps + len(range(jump, steps, jump)) * resample * jump, 'it gives'),  # one walk down too many
]
