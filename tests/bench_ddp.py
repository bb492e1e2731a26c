"""Data parallelism on this machine's CPU: 2 processes × 1 thread (torchrun, gloo) against 1 process × 2 threads at the same
global batch, for the tiny and the seed UNet, and the share of a step that one all-reduce of the gradients takes.

    python tests/bench_ddp.py              # prints one table; about 1 minute on 2 cores
    python tests/bench_ddp.py --out tests/results/ddp.json   # and keeps every figure (lesson 10 draws them)
    python tests/bench_ddp.py --one cuda   # on a GPU: `torchrun --nproc-per-node 1` against the plain process

Both sides run `train_step` on the bundled digits, measured in the same run of this script, so the ratio is what counts.
The all-reduce is timed alone, on a buffer the size of the gradients: DDP overlaps it with the backward pass in buckets,
so this is an upper bound on the time communication adds to a step.
"""
import json, os, statistics, subprocess, sys, time
from pathlib import Path

CASES = [('tiny', 64, 16, 30), ('seed', 32, 32, 8)]   # UNet, global batch, image side, timed steps

def worker(unet: str, batch: int, size: int, steps: int, device: str = 'cpu'):
    "Time `steps` training steps (after 3 warm-up steps) here, on one rank or as one process; rank 0 prints a JSON line."
    import torch, torch.distributed as dist
    from minddpm.distributed import leave
    from minddpm.training import Run, TrainConfig, train_step
    run = Run(TrainConfig(unet=unet, img_size=size, batch_size=batch, steps=steps + 10, sample_every=0, device=device))
    x, y = next(iter(run.train_dl))   # this rank's share of one global batch
    sync = torch.cuda.synchronize if run.device.type == 'cuda' else lambda: None
    losses = [train_step(run, x, y) for _ in range(3)]
    times = []
    for _ in range(steps):
        run.place.barrier(); sync(); t0 = time.perf_counter()
        losses.append(train_step(run, x, y))
        sync(); run.place.barrier(); times.append(time.perf_counter() - t0)
    step_s, comm_s = statistics.median(times), None
    if run.place.parallel:
        g = torch.zeros(sum(p.numel() for p in run.model.parameters()))
        for _ in range(3): dist.all_reduce(g)
        comm = []
        for _ in range(10):
            t0 = time.perf_counter(); dist.all_reduce(g); comm.append(time.perf_counter() - t0)
        comm_s = statistics.median(comm)
    if run.place.main:
        print(json.dumps(dict(step_s=step_s, images_s=batch / step_s, comm_s=comm_s, losses=losses,
                              params=sum(p.numel() for p in run.model.parameters()))), flush=True)
    leave()

def launch(args, processes: int, threads: int, torchrun: bool | None = None) -> dict:
    "Run `worker(*args)` on `processes` ranks under torchrun (or, for one process unless `torchrun`, plainly)."
    cmd = ([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', str(processes)]
           if processes > 1 or torchrun else [sys.executable])
    r = subprocess.run(cmd + [__file__, '--worker', *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, 'OMP_NUM_THREADS': str(threads)})
    if r.returncode: sys.exit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])

if __name__ == '__main__':
    if sys.argv[1:2] == ['--worker']:
        unet, batch, size, steps, device = sys.argv[2], *map(int, sys.argv[3:6]), sys.argv[6]
        worker(unet, batch, size, steps, device)
    elif sys.argv[1:2] == ['--one']:   # on a GPU the colab preset's UNet, batch and size (on a CPU, a rehearsal with tiny's)
        args = ('seed', 128, 32, 30, 'cuda') if sys.argv[2] == 'cuda' else ('tiny', 64, 16, 10, sys.argv[2])
        plain, one = launch(args, 1, 4), launch(args, 1, 4, torchrun=True)
        diff = max(abs(a - b) / a for a, b in zip(plain['losses'], one['losses']))
        print(f"{args[0]} UNet, batch {args[1]}, {args[2]} px on {args[4]}: plain {plain['images_s']:.0f} images/s, "
              f"torchrun --nproc-per-node 1 {one['images_s']:.0f} images/s ({one['images_s'] / plain['images_s']:.2f}×); "
              f"largest relative difference of the {len(one['losses'])} losses: {diff:.1e}")
    else:
        out, cases = sys.argv[sys.argv.index('--out') + 1] if '--out' in sys.argv else None, []
        print(f"{'UNet':<6}{'params':>9}{'batch':>7}{'px':>5}{'1×2 threads':>14}{'2×1 thread':>13}{'ratio':>8}{'all-reduce':>12}{'share':>8}")
        for unet, batch, size, steps in CASES:
            one, two = launch((unet, batch, size, steps, 'cpu'), 1, 2), launch((unet, batch, size, steps, 'cpu'), 2, 1)
            print(f"{unet:<6}{one['params'] / 1e6:>8.2f}M{batch:>7}{size:>5}{one['images_s']:>10.0f} im/s{two['images_s']:>9.0f} im/s"
                  f"{two['images_s'] / one['images_s']:>8.2f}{1000 * two['comm_s']:>9.1f} ms{two['comm_s'] / two['step_s']:>8.1%}")
            cases.append(dict(unet=unet, batch=batch, size=size, steps=steps, one_process_two_threads=one, two_processes_one_thread=two))
        if out:
            import torch
            Path(out).write_text(json.dumps(dict(torch=torch.__version__, cpus=os.cpu_count(), cases=cases), indent=1) + '\n')
