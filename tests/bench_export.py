"""Benchmark: latency per image of one guided network call against batch size, on this CPU: the eager network in fp32,
the torch.export graph (a .pt2 file) in fp32, and each in bf16 where the CPU has bf16 instructions (eager: weights cast
once; graph: autocast). Median of repeats in one process, after a warm-up.

    python tests/bench_export.py                       # the shipped model; prints a table
    python tests/bench_export.py --plot latency.png    # also draws it

Not a test: it prints figures."""
import argparse, statistics, tempfile, time
from importlib import resources
from pathlib import Path

import torch

from minddpm.conditioning import guided_eps
from minddpm.data import cpu_has_bf16
from minddpm.sampling import _network
from minddpm.training import export_model, load_model

p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('--model', help='a checkpoint or exported model (default: the shipped one)')
p.add_argument('--batches', type=int, nargs='*', default=[1, 4, 16, 64, 256])
p.add_argument('--repeats', type=int, default=7)
p.add_argument('--plot', metavar='PNG')
a = p.parse_args()
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 instructions: {cpu_has_bf16()}")

source = a.model or resources.files('minddpm.assets') / 'digits_tiny.pt'
eager, graph = load_model(source), load_model(export_model(source, Path(tempfile.mkdtemp())/'model.pt2'))
nets = {'eager fp32': _network(eager.model, 'fp32', torch.device('cpu')), 'exported fp32': _network(graph.model, 'fp32', torch.device('cpu'))}
if cpu_has_bf16():
    nets['eager bf16'] = _network(eager.model, 'bf16', torch.device('cpu'))
    nets['exported bf16'] = _network(graph.model, 'bf16', torch.device('cpu'))
rows = {}
for name, net in nets.items():
    for b in a.batches:
        x, t, y = torch.randn(b, *eager.shape), torch.randint(0, 1000, (b,)), torch.arange(b) % len(eager.classes)
        with torch.no_grad():
            guided_eps(net, x, t, y, 3.0)
            times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter(); guided_eps(net, x, t, y, 3.0); times.append(time.perf_counter() - t0)
        rows[name, b] = statistics.median(times) / b * 1e3
    print(f"{name:14s} " + '  '.join(f"batch {b}: {rows[name, b]:6.2f} ms/image" for b in a.batches), flush=True)
if a.plot:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3), dpi=60)
    for name in nets: ax.plot(a.batches, [rows[name, b] for b in a.batches], 'o-', label=name)
    ax.set(xscale='log', yscale='log', xlabel='images per call (guided: twice that through the network)',
           ylabel='ms per image per call', title='one guided call of the network on this CPU')
    ax.legend(fontsize=7); fig.tight_layout(); fig.savefig(a.plot)
    print(f"wrote {a.plot}")
