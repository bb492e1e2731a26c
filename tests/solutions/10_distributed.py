"Solutions to lesson 10's exercises, and classic mistakes the checks must catch."
import torch

def micro_batch_positions(batch_size, world_size, grad_accum, rank, micro):
    mine = torch.arange(rank, batch_size, world_size)          # rank, rank + W, …
    m = batch_size // (world_size * grad_accum)
    return mine[micro * m:(micro + 1) * m]

def ddp_gradient(per_sample_grads, world_size, grad_accum):
    B = len(per_sample_grads)
    m = B // (world_size * grad_accum)
    total = torch.zeros_like(per_sample_grads[0])
    for rank in range(world_size):
        grad = torch.zeros_like(per_sample_grads[0])             # this rank's .grad
        for micro in range(grad_accum):
            pos = micro_batch_positions(B, world_size, grad_accum, rank, micro)
            grad += per_sample_grads[pos].mean(0) / grad_accum   # backward() of loss / K adds to .grad
        total += grad                                            # the all-reduce: a sum over the ranks
    return total / world_size                                    # DDP divides by the world size

SOLUTIONS = {'micro_batch_positions': micro_batch_positions, 'ddp_gradient': ddp_gradient}

def _contiguous(batch_size, world_size, grad_accum, rank, micro):   # each rank a block of the batch, not every W-th image
    m = batch_size // (world_size * grad_accum)
    start = rank * batch_size // world_size + micro * m
    return torch.arange(start, start + m)

def _no_division_by_k(per_sample_grads, world_size, grad_accum):   # the micro-batches' losses not divided by K
    return ddp_gradient(per_sample_grads, world_size, grad_accum) * grad_accum

def _summed_ranks(per_sample_grads, world_size, grad_accum):       # the all-reduce's sum kept, never divided by W
    return ddp_gradient(per_sample_grads, world_size, grad_accum) * world_size

WRONG = [
    ('micro_batch_positions', _contiguous, 'at index'),
    ('micro_batch_positions', lambda batch_size, world_size, grad_accum, rank, micro:
        torch.arange(rank, batch_size, world_size)[micro::grad_accum], 'at index'),   # micro-batches interleaved, not consecutive
    ('ddp_gradient', _no_division_by_k, 'at index'),
    ('ddp_gradient', _summed_ranks, 'at index'),
]
