"Solutions to lesson 12's exercises, and classic mistakes the checks must catch."
import numpy as np

def next_batch(loops, rows, max_rows):
    taken, used = [0], rows[0]
    for i in range(1, len(loops)):
        if loops[i] == loops[0] and used + rows[i] <= max_rows:
            taken.append(i)
            used += rows[i]
    return taken

def call_cost(batches, ms_per_image):
    b = np.asarray(batches, dtype=float)
    per_image, fixed = np.polyfit(b, np.asarray(ms_per_image, dtype=float) * b, 1)
    return (float(fixed), float(per_image))

SOLUTIONS = {'next_batch': next_batch, 'call_cost': call_cost}

def _stops_at_first_misfit(loops, rows, max_rows):
    taken, used = [0], rows[0]
    for i in range(1, len(loops)):
        if loops[i] != loops[0] or used + rows[i] > max_rows: break
        taken.append(i); used += rows[i]
    return taken

def _per_image_fit(batches, ms_per_image):   # the line fitted to the per-image times
    per_image, fixed = np.polyfit(np.asarray(batches, dtype=float), np.asarray(ms_per_image, dtype=float), 1)
    return (float(fixed), float(per_image))

def _busiest_loop(loops, rows, max_rows):   # serves the loop most requests wait for, not the oldest request's
    loop = max(set(loops), key=loops.count)
    taken, used = [], 0
    for i, l in enumerate(loops):
        if l == loop and used + rows[i] <= max_rows: taken.append(i); used += rows[i]
    return taken

def _smallest_first(loops, rows, max_rows):   # packs the smallest requests first
    taken, used = [0], rows[0]
    for i in sorted(range(1, len(loops)), key=lambda i: rows[i]):
        if loops[i] == loops[0] and used + rows[i] <= max_rows: taken.append(i); used += rows[i]
    return sorted(taken)

WRONG = [
    ('next_batch', _busiest_loop, 'it returned'),
    ('next_batch', _smallest_first, 'in item 2'),
    ('next_batch', _stops_at_first_misfit, 'it returned'),
    ('next_batch', lambda loops, rows, max_rows: [i for i in range(len(loops)) if loops[i] == loops[0]], 'it returned'),   # no ceiling
    ('call_cost', _per_image_fit, 'in item'),
]
