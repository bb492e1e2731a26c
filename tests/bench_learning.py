"""Benchmark: does the `tiny` preset learn the bundled digits on a CPU in at most 10 minutes?

    python tests/bench_learning.py --train runs/bench      # train with minddpm_train (timed), then evaluate
    python tests/bench_learning.py                         # evaluate the model shipped in minddpm (data/digits_tiny.pt)
    python tests/bench_learning.py --model runs/x/checkpoint.pt

An independent judge, an RBF support-vector classifier fitted on the real training split (16×16 pixels, the
held-out split gives its own accuracy), labels guided samples (w = 3, DDIM 50 steps, 100 per class, fixed seed);
the figure is the share labelled as the class they were drawn for. Not a test: it prints figures."""
import argparse, shlex, subprocess, sys, time

import numpy as np
import torch

from minddpm.data import get_datasets
from minddpm.sampling import sample
from minddpm.training import load_model

def pixels(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs).flatten(1).numpy(), np.array(ys)

def judge(size: int = 16):
    "An SVM fitted on the real training split; returns it and its accuracy on the held-out split."
    from sklearn.svm import SVC
    train, val = get_datasets('digits', size)
    (x, y), (xv, yv) = pixels(train), pixels(val)
    clf = SVC().fit(x, y)
    return clf, (clf.predict(xv) == yv).mean()

def guided_accuracy(model_path=None, per_class: int = 100, w: float = 3.0, steps: int = 50, eta: float = 0.0, seed: int = 0):
    m = load_model(model_path)
    clf, real_acc = judge(m.shape[-1])
    y = torch.arange(len(m.classes)).repeat(per_class)
    t0 = time.perf_counter()
    x = sample(m.model, m.diffusion, y, shape=m.shape, steps=steps, w=w, eta=eta, generator=torch.Generator().manual_seed(seed))
    secs = time.perf_counter() - t0
    pred = clf.predict(x.flatten(1).numpy())
    per = [(pred[y.numpy() == c] == c).mean() for c in range(len(m.classes))]
    return m, real_acc, (pred == y.numpy()).mean(), per, secs

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--train', metavar='OUT', help='first train the tiny preset into this run directory, timed')
    p.add_argument('--minutes', type=float, default=9.5, help='time budget of that training (default: 9.5)')
    p.add_argument('--model', help='a checkpoint or exported model (default: the shipped one)')
    p.add_argument('--eta', type=float, nargs='*', default=[0.0, 1.0], help='DDIM η values to evaluate (default: 0 1)')
    a = p.parse_args()
    path = a.model
    if a.train:
        cmd = ['minddpm_train', '--preset', 'tiny', '--minutes', str(a.minutes), '--out', a.train]
        print('$', shlex.join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
        print(f"trained in {(time.perf_counter() - t0) / 60:.2f} min (wall clock, the process start included)")
        path = f'{a.train}/checkpoint.pt'
    for eta in a.eta:
        m, real_acc, acc, per, secs = guided_accuracy(path, eta=eta)
        print(f"model: {path or 'shipped digits_tiny'} (step {m.step}); judge's accuracy on real held-out digits: {real_acc:.1%}")
        print(f"guided samples (w = 3, DDIM 50, η = {eta:g}, {100 * len(m.classes)} images, {secs:.0f} s): "
              f"{acc:.1%} labelled as their class; per class: {' '.join(f'{c}:{v:.0%}' for c, v in zip(m.classes, per))}",
              flush=True)
