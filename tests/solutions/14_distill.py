"Solutions to lesson 14's exercises, and classic mistakes the checks must catch."
import math

def v_from_x0(z_t, x0, alpha_bar_t):
    alpha, sigma = math.sqrt(alpha_bar_t), math.sqrt(1 - alpha_bar_t)
    eps = (z_t - alpha * x0) / sigma              # the noise this x0 implies at z_t
    return alpha * eps - sigma * x0

def distill_v_target(z_t, z_s, alpha_bar_t, alpha_bar_s):
    a_t, s_t = math.sqrt(alpha_bar_t), math.sqrt(1 - alpha_bar_t)
    a_s, s_s = math.sqrt(alpha_bar_s), math.sqrt(1 - alpha_bar_s)
    ratio = s_s / s_t
    x_tilde = (z_s - ratio * z_t) / (a_s - ratio * a_t)
    return v_from_x0(z_t, x_tilde, alpha_bar_t)

SOLUTIONS = {'v_from_x0': v_from_x0, 'distill_v_target': distill_v_target}

def _ratio_left_out_below(z_t, z_s, alpha_bar_t, alpha_bar_s):   # (σ_s/σ_t) dropped from the denominator
    a_t, s_t, a_s, s_s = (math.sqrt(v) for v in (alpha_bar_t, 1 - alpha_bar_t, alpha_bar_s, 1 - alpha_bar_s))
    return v_from_x0(z_t, (z_s - s_s / s_t * z_t) / (a_s - a_t), alpha_bar_t)

WRONG = [
    ('v_from_x0', lambda z_t, x0, alpha_bar_t: math.sqrt(alpha_bar_t) * (z_t - math.sqrt(alpha_bar_t) * x0)
                                               - math.sqrt(1 - alpha_bar_t) * x0, 'at index'),    # ε not divided by σ_t
    ('v_from_x0', lambda z_t, x0, alpha_bar_t: math.sqrt(1 - alpha_bar_t) * x0 - math.sqrt(alpha_bar_t)
                                               * (z_t - math.sqrt(alpha_bar_t) * x0) / math.sqrt(1 - alpha_bar_t), 'at index'),   # −v
    ('distill_v_target', _ratio_left_out_below, 'at index'),
    ('distill_v_target', lambda z_t, z_s, alpha_bar_t, alpha_bar_s: v_from_x0(z_t, z_s, alpha_bar_t), 'at index'),   # z̃_s taken for x̃
]
