"""The UNet at the sizes users train: the seed layout (the originals' parameter count, forward and
backward at 32×32 on the CPU, with labels), and the tiny one at every supported size and channel count."""
import pytest
import torch

from minddpm.conditioning import NULL_LABEL, ConditionalUNet, drop_labels, guided_eps
from minddpm.unet import UNet, unet_preset

def n_params(m): return sum(p.numel() for p in m.parameters())

def test_seed_parameter_count_matches_the_originals():
    # the originals: 15.66 M with the two-conv 256 bottleneck; 10 class embeddings (+ null) add 2,816
    assert abs(n_params(UNet(**unet_preset('seed'))) / 15.66e6 - 1) < 0.01
    assert abs(n_params(ConditionalUNet(10, **unet_preset('seed'))) / 15.66e6 - 1) < 0.01

def test_seed_forward_and_backward_at_32px_reach_every_parameter():
    torch.manual_seed(0)
    model = ConditionalUNet(10, **unet_preset('seed'))
    x, t, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 999]), torch.tensor([3, NULL_LABEL])
    out = model(x, t, drop_labels(y, 0.0))
    assert out.shape == x.shape and torch.isfinite(out).all()
    (out - torch.randn_like(out)).pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == [], missing
    # the label table gets gradient only in the rows this batch used: class 3 and the null row
    used = model.label_emb.weight.grad.abs().sum(1) > 0
    assert used.nonzero().flatten().tolist() == [3, 10]

@pytest.mark.parametrize('size', [16, 32, 64])
@pytest.mark.parametrize('channels', [1, 3])
def test_any_size_and_channel_count(size, channels):
    model = ConditionalUNet(10, **unet_preset('tiny', in_channels=channels))
    x = torch.randn(2, channels, size, size)
    assert model(x, torch.tensor([5, 6]), torch.tensor([1, 2])).shape == x.shape

def test_sizes_that_do_not_fit_name_the_valid_ones():
    model = UNet(**unet_preset('seed'))
    for bad in (30, 33, 4):
        with pytest.raises(ValueError, match=r'multiples of 8 .*valid sizes: 8, 16, 24, 32'):
            model(torch.randn(1, 3, bad, 32), torch.tensor([1]))

def test_batched_guidance_equals_two_passes():
    torch.manual_seed(0)
    model = ConditionalUNet(10, **unet_preset('tiny', in_channels=3)).eval()
    x, t, y = torch.randn(3, 3, 16, 16), torch.tensor([1, 400, 999]), torch.tensor([0, 5, 9])
    with torch.no_grad():
        eps_c, eps_u = model(x, t, y), model(x, t, None)
        for w in (0.0, 0.5, 1.0, 3.0):
            torch.testing.assert_close(guided_eps(model, x, t, y, w), eps_u + w * (eps_c - eps_u), rtol=1e-4, atol=1e-5)

def test_label_dropout_rate():
    y = torch.randint(0, 10, (200_000,), generator=torch.Generator().manual_seed(0))
    dropped = int((drop_labels(y, 0.1, generator=torch.Generator().manual_seed(1)) == NULL_LABEL).sum())
    assert abs(dropped - 20_000) < 5 * (200_000 * 0.1 * 0.9) ** 0.5  # within 5 binomial standard deviations
    kept = drop_labels(y, 0.1, generator=torch.Generator().manual_seed(1)) != NULL_LABEL
    assert torch.equal(drop_labels(y, 0.1, generator=torch.Generator().manual_seed(1))[kept], y[kept])
