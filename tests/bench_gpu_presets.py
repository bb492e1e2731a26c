"""Benchmark: training steps per second of the GPU presets' model and batch, per precision, with and without
torch.compile, on random 3-channel images (no download needed). Run on a CUDA machine:

    python tests/bench_gpu_presets.py

It prints one line per setting and, for each preset, how long its `steps` take at that speed."""
import dataclasses, time

import torch

from minddpm.conditioning import ConditionalUNet
from minddpm.ema import EMA
from minddpm.training import TRAIN_PRESETS, Run, train_step
from minddpm.unet import unet_preset

def steps_per_second(preset: str, precision: str, compile: bool, warmup: int = 15, n: int = 40) -> tuple[float, float]:
    "(steps/s, peak GiB) of `train_step` for `preset` at its batch and image size."
    cfg = dataclasses.replace(TRAIN_PRESETS[preset], dataset='digits', precision=precision, compile=compile, device='cuda')
    run = Run(cfg)   # the bundled digits stand in for the dataset; the model is rebuilt for 3 channels below
    run.model = ConditionalUNet(10, **unet_preset(cfg.unet, in_channels=3)).cuda().to(memory_format=torch.channels_last)
    run.forward = torch.compile(run.model) if compile else run.model
    run.ema = EMA(run.model, cfg.ema_beta, cfg.ema_start)
    run.opt = torch.optim.AdamW(run.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-5)
    run.sched = torch.optim.lr_scheduler.OneCycleLR(run.opt, max_lr=cfg.lr, total_steps=cfg.steps)
    run.scaler = torch.amp.GradScaler('cuda', enabled=run.dtype == torch.float16)
    x = torch.rand(cfg.batch_size, 3, cfg.img_size, cfg.img_size, device='cuda') * 2 - 1
    y = torch.randint(0, 10, (cfg.batch_size,), device='cuda')
    for _ in range(warmup): train_step(run, x, y)
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(n): train_step(run, x, y)
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t0), torch.cuda.max_memory_allocated() / 2**30

if __name__ == '__main__':
    print(torch.cuda.get_device_name(), 'torch', torch.__version__)
    for preset, precision, compile in [('colab', 'fp16', False), ('colab', 'bf16', False), ('colab', 'bf16', True),
                                       ('colab', 'fp32', False), ('full', 'bf16', False), ('full', 'bf16', True)]:
        cfg = TRAIN_PRESETS[preset]
        sps, gib = steps_per_second(preset, precision, compile)
        print(f"{preset:5s} {cfg.img_size}×{cfg.img_size} batch {cfg.batch_size:3d} {precision}{' compiled' if compile else '         '}: "
              f"{sps:6.1f} steps/s, {sps * cfg.batch_size:7.0f} images/s, peak {gib:5.2f} GiB; "
              f"{cfg.steps} steps in {cfg.steps / sps / 60:5.1f} min", flush=True)
