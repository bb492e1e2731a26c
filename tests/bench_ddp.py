"""Data parallelism on this machine's CPU: 2 processes × 1 thread (torchrun, gloo) against 1 process × 2 threads at the same
global batch, for the tiny and the seed UNet, and the share of a step that one all-reduce of the gradients takes.

    python tests/bench_ddp.py              # prints one table; about 2 minutes on 2 cores

Both sides run `train_step` on the bundled digits, measured in the same run of this script, so the ratio is what counts.
The all-reduce is timed alone, on a buffer the size of the gradients: DDP overlaps it with the backward pass in buckets,
so this is an upper bound on the time communication adds to a step.
"""
import json, os, statistics, subprocess, sys, time
from pathlib import Path

CASES = [('tiny', 64, 16, 30), ('seed', 32, 32, 8)]   # UNet, global batch, image side, timed steps

def worker(unet: str, batch: int, size: int, steps: int):
    "Time `steps` training steps (after 3 warm-up steps) here, on one rank or as one process; rank 0 prints a JSON line."
    import torch, torch.distributed as dist
    from minddpm.distributed import leave
    from minddpm.training import Run, TrainConfig, train_step
    run = Run(TrainConfig(unet=unet, img_size=size, batch_size=batch, steps=steps + 10, sample_every=0, device='cpu'))
    x, y = next(iter(run.train_dl))   # this rank's share of one global batch
    for _ in range(3): train_step(run, x, y)
    times = []
    for _ in range(steps):
        run.place.barrier(); t0 = time.perf_counter()
        train_step(run, x, y)
        run.place.barrier(); times.append(time.perf_counter() - t0)
    step_s, comm_s = statistics.median(times), None
    if run.place.parallel:
        g = torch.zeros(sum(p.numel() for p in run.model.parameters()))
        for _ in range(3): dist.all_reduce(g)
        comm = []
        for _ in range(10):
            t0 = time.perf_counter(); dist.all_reduce(g); comm.append(time.perf_counter() - t0)
        comm_s = statistics.median(comm)
    if run.place.main:
        print(json.dumps(dict(step_s=step_s, images_s=batch / step_s, comm_s=comm_s,
                              params=sum(p.numel() for p in run.model.parameters()))), flush=True)
    leave()

def launch(args, processes: int, threads: int) -> dict:
    cmd = ([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', str(processes)]
           if processes > 1 else [sys.executable])
    r = subprocess.run(cmd + [__file__, '--worker', *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, 'OMP_NUM_THREADS': str(threads)})
    if r.returncode: sys.exit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])

if __name__ == '__main__':
    if sys.argv[1:2] == ['--worker']:
        unet, batch, size, steps = sys.argv[2], *map(int, sys.argv[3:])
        worker(unet, batch, size, steps)
    else:
        print(f"{'UNet':<6}{'params':>9}{'batch':>7}{'px':>5}{'1×2 threads':>14}{'2×1 thread':>13}{'ratio':>8}{'all-reduce':>12}{'share':>8}")
        for unet, batch, size, steps in CASES:
            one, two = launch((unet, batch, size, steps), 1, 2), launch((unet, batch, size, steps), 2, 1)
            print(f"{unet:<6}{one['params'] / 1e6:>8.2f}M{batch:>7}{size:>5}{one['images_s']:>10.0f} im/s{two['images_s']:>9.0f} im/s"
                  f"{two['images_s'] / one['images_s']:>8.2f}{1000 * two['comm_s']:>9.1f} ms{two['comm_s'] / two['step_s']:>8.1%}")
