"""The refusals of lesson 10's helpers, in one process and without a GPU: the device a rank may take, the global batch's
split, and `Place.first`'s errors. (tests/test_distributed.py launches real process groups; this file launches none.)"""
import pytest
import torch

from minddpm.distributed import Place, _rank_device, local_batch_size, rank_failure

def test_a_gpu_index_under_torchrun_is_refused():
    with pytest.raises(ValueError, match=r"device 'cuda:1' names one GPU.*use --device cuda \(or auto\)"):
        _rank_device(Place(1, 2, 1, True), 'cuda:1', torch.device('cuda', 1))

def test_a_rank_beyond_the_nodes_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    with pytest.raises(RuntimeError, match=r'local rank 2 has no GPU of its own: torch sees 2 .*--nproc-per-node 2'):
        _rank_device(Place(2, 3, 2, True), 'cuda', torch.device('cuda'))

def test_several_ranks_cannot_share_apples_gpu():
    with pytest.raises(ValueError, match="cannot share Apple's MPS GPU"):
        _rank_device(Place(0, 2, 0, True), 'auto', torch.device('mps'))
    assert _rank_device(Place(), 'auto', torch.device('mps')) == torch.device('mps')   # one process may
    assert _rank_device(Place(0, 2, 0, True), 'cpu', torch.device('cpu')) == torch.device('cpu')

def test_an_uneven_global_batch_names_sizes_that_split():
    with pytest.raises(ValueError, match=r'batch_size 64 is the global batch .* 3 processes × 1 micro-batch = 3 equal parts; '
                                         r'use a multiple of 3, e.g. 63 or 66'):
        local_batch_size(64, 3, 1)
    assert local_batch_size(64, 2, 2) == 16

def test_first_returns_or_raises_in_one_process():
    place = Place()
    assert place.first(lambda a, b=0: a + b, 1, b=2) == 3
    def broken(): raise OSError('no such folder: data/x')
    with pytest.raises(OSError, match='no such folder'): place.first(broken)

def test_rank_failure_names_the_rank_the_step_and_what_is_kept():
    e = rank_failure(Place(1, 4, 1, True), 41, RuntimeError('[../gloo/transport/tcp/pair.cc:534] Connection closed by peer '
                                                           '[10.0.0.2]:4000. This is typically because …'), 'no checkpoint is kept')
    assert str(e) == ("rank 1 of 4 stopped in step 42: it lost touch with the other processes, most likely because one of "
                      "them stopped (torchrun's report names it) (Connection closed by peer [10.0.0.2]:4000); no checkpoint is kept")
    assert str(rank_failure(Place(), 0, ValueError('bad value'), 'nothing kept')) == 'rank 0 of 1 stopped in step 1: bad value; nothing kept'
