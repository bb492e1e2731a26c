"""The EMA as training and checkpoints use it: the warm-up copies, buffers are copied rather than averaged, the copy is
frozen, a restored EMA continues the same average, and a β that would never move is refused."""
import pytest
import torch
from torch import nn

from minddpm.ema import EMA
from minddpm.forward import Diffusion

def test_warm_up_copies_the_weights():
    model = nn.Linear(3, 2)
    ema = EMA(model, beta=0.99, start_step=3)
    for _ in range(3):
        with torch.no_grad(): model.weight.add_(1.0)
        ema.update(model)
        torch.testing.assert_close(ema.model.weight, model.weight)    # still copying
    with torch.no_grad(): model.weight.add_(1.0)
    ema.update(model)
    assert not torch.allclose(ema.model.weight, model.weight)           # averaging now

def test_buffers_are_copied_not_averaged():
    d = Diffusion()                       # a module with buffers only
    ema = EMA(d, start_step=0)
    d.betas.mul_(2); ema.update(d)
    torch.testing.assert_close(ema.model.betas, d.betas)

def test_the_copy_is_frozen_and_in_eval_mode():
    ema = EMA(nn.Sequential(nn.Linear(3, 2), nn.Dropout()).train())
    assert not any(p.requires_grad for p in ema.model.parameters()) and not ema.model.training

def test_a_restored_ema_continues_the_same_average():
    model = nn.Linear(3, 2)
    ema = EMA(model, beta=0.9, start_step=1)
    for _ in range(3):
        with torch.no_grad(): model.weight.normal_()
        ema.update(model)
    restored = EMA(nn.Linear(3, 2), beta=0.5, start_step=100)
    restored.load_state_dict(ema.state_dict())
    assert (restored.step, restored.beta, restored.start_step) == (3, 0.9, 1)
    with torch.no_grad(): model.weight.normal_()
    ema.update(model); restored.update(model)
    torch.testing.assert_close(restored.model.weight, ema.model.weight)

@pytest.mark.parametrize('beta', [1.0, -0.1, 1.5])
def test_beta_outside_0_1_is_refused(beta):
    with pytest.raises(ValueError, match=r'beta must be in \[0, 1\)'): EMA(nn.Linear(2, 2), beta=beta)
