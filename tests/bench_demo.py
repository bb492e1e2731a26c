"""Benchmark: requests per second that `minddpm_demo` serves to 1, 4 and 16 clients sending at once, with its batcher
and with one sampling loop per request (`--no-batching`), each server started as the command on a loopback port. Every
request asks the `/png` API for four guided images (w = 3) of DPM-Solver++ at 20 steps, each with its own class and
seed; each client sends its next request when the last one is answered. The clients are threads of this process, on the
same CPU as the server. Both servers stay up, and the measurements alternate between them for `--rounds` rounds, so
that a slow spell of a shared machine falls on both; the table gives each one's median over the rounds.

    python tests/bench_demo.py                     # prints a table, writes tests/results/demo.json
    python tests/bench_demo.py --requests 2        # fewer requests per client

Not a test: it prints figures."""
import argparse, json, os, socket, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
from gradio_client import Client

p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('--clients', type=int, nargs='*', default=[1, 4, 16])
p.add_argument('--requests', type=int, default=2, help='requests per client (default: 2)')
p.add_argument('--rounds', type=int, default=3, help='alternating rounds (default: 3)')
p.add_argument('--threads', type=int, help="the server's torch threads (OMP_NUM_THREADS; default: torch's choice)")
p.add_argument('--out', default=str(Path(__file__).parent/'results'/'demo.json'))
a = p.parse_args()

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def serve(*options):
    "Start `minddpm_demo` with `options`; its URL and process once it answers."
    port = free_port()
    proc = subprocess.Popen([sys.executable, '-c', 'from minddpm.cli import minddpm_demo; minddpm_demo()', '--port', str(port),
                             *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **({'OMP_NUM_THREADS': str(a.threads)} if a.threads else {})})
    url = f'http://127.0.0.1:{port}/'
    for _ in range(240):
        try:
            if httpx.get(url, timeout=2).status_code == 200: return url, proc
        except httpx.HTTPError: time.sleep(0.5)
    proc.kill(); sys.exit(f"minddpm_demo {' '.join(options)} did not start")

def rate(url: str, clients: int) -> dict:
    "Requests per second and the median seconds a request took, with `clients` sending at once."
    conns = [Client(url, verbose=False) for _ in range(clients)]
    def one_client(i):
        took = []
        for k in range(a.requests):
            t0 = time.perf_counter()
            conns[i].predict(str((i + k) % 10), 4, 3.0, 20, 1000 * i + k, api_name='/png')
            took.append(time.perf_counter() - t0)
        return took
    conns[0].predict('0', 4, 3.0, 20, 0, api_name='/png')   # warm-up
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool: took = sorted(t for ts in pool.map(one_client, range(clients)) for t in ts)
    wall = time.perf_counter() - t0
    return dict(requests_per_s=len(took) / wall, median_s=took[len(took) // 2], requests=len(took))

results = dict(torch=torch.__version__, cpus=os.cpu_count(), server_threads=a.threads, requests_per_client=a.requests,
               rounds=a.rounds, runs={})
servers = {name: serve(*options) for name, options in (('one loop per request', ['--no-batching']), ('batched', []))}
try:
    for k in range(a.rounds):
        for c in a.clients:
            for name, (url, _) in servers.items():
                r = rate(url, c)
                results['runs'].setdefault(str(c), {}).setdefault(name, []).append(r)
                print(f"round {k + 1}: {name:21} {c:3} clients: {r['requests_per_s']:5.2f} requests/s, "
                      f"median {r['median_s']:5.2f} s a request", flush=True)
finally:
    for _, proc in servers.values(): proc.terminate(); proc.wait()

median = lambda rs: sorted(r['requests_per_s'] for r in rs)[len(rs) // 2]
print('\n| clients | one loop per request | batched | batched ÷ one loop |\n|--:|--:|--:|--:|')
for c, r in results['runs'].items():
    off, on = median(r['one loop per request']), median(r['batched'])
    print(f"| {c} | {off:.2f} requests/s | {on:.2f} requests/s | {on / off:.1f}× |")
Path(a.out).parent.mkdir(parents=True, exist_ok=True)
Path(a.out).write_text(json.dumps(results, indent=1) + '\n')
print(f"wrote {a.out}")
