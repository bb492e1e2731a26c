"Solutions to lesson 13's exercises, and classic mistakes the checks must catch."

def flow_euler_step(x, v_hat, t, t_next):
    return x + (t_next - t) * v_hat

def flow_time(alpha_bars):
    alpha, sigma = alpha_bars.sqrt(), (1 - alpha_bars).sqrt()
    return sigma / (alpha + sigma)

SOLUTIONS = {'flow_euler_step': flow_euler_step, 'flow_time': flow_time}

WRONG = [
    ('flow_euler_step', lambda x, v_hat, t, t_next: x + (t - t_next) * v_hat, 'at index'),   # the step taken towards the noise
    ('flow_euler_step', lambda x, v_hat, t, t_next: x - t_next * v_hat, 'at index'),         # the step's size from 0, not from t
    ('flow_time', lambda alpha_bars: 1 - alpha_bars, 'at index'),                             # the noise's variance, not its share
    ('flow_time', lambda alpha_bars: (1 - alpha_bars).sqrt(), 'at index'),                    # σ alone, not divided by α + σ
]
