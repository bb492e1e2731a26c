"""The UNet at the sizes users train: the seed layout (the originals' parameter count, forward and
backward at 32×32 on the CPU, with labels), and the tiny one at every supported size and channel count."""
import pytest
import torch

from minddpm.conditioning import NULL_LABEL, ConditionalUNet, drop_labels, guided_eps
from minddpm.unet import ConvBlock, Down, SelfAttention, UNet, Up, timestep_embedding, unet_preset

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

def test_timestep_embedding_gives_every_step_its_own_vector():
    emb = timestep_embedding(torch.arange(1000), 256)
    assert emb.shape == (1000, 256)
    torch.testing.assert_close(emb[0, :128], torch.zeros(128))   # t = 0: every sine is 0 ...
    torch.testing.assert_close(emb[0, 128:], torch.ones(128))    # ... and every cosine 1
    assert len({tuple(r) for r in emb.round(decimals=4).tolist()}) == 1000

def test_blocks_change_channels_and_resolution_as_documented():
    x, e = torch.randn(2, 64, 16, 16), torch.randn(2, 256)
    assert ConvBlock(64, 128)(x).shape == (2, 128, 16, 16)
    assert ConvBlock(64, 64, residual=True)(x).shape == x.shape
    assert n_params(ConvBlock(64, 128)) == 9 * 64 * 128 + 9 * 128 * 128 + 2 * 2 * 128   # bias-free convs, two GroupNorms
    d = Down(64, 128, 256)(x, e)
    assert d.shape == (2, 128, 8, 8)
    assert Up(128 + 64, 64, 256)(d, x, e).shape == (2, 64, 16, 16)

def test_tiny_takes_any_multiple_of_4_and_every_parameter_learns():
    model = UNet(**unet_preset('tiny', in_channels=1))
    assert model(torch.randn(1, 1, 12, 20), torch.tensor([3])).shape == (1, 1, 12, 20)
    model(torch.randn(4, 1, 16, 16), torch.randint(0, 1000, (4,))).pow(2).mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []

@pytest.mark.parametrize('make, message', [
    (lambda: UNet(**unet_preset('seed'))(torch.randn(1, 1, 32, 32), torch.tensor([1])), 'takes 3-channel images, got 1'),
    (lambda: UNet(**unet_preset('seed'))(torch.randn(3, 32, 32), torch.tensor([1])), 'expected images (B, C, H, W)'),
    (lambda: SelfAttention(30, heads=4), 'cannot be split into 4 attention heads'),
    (lambda: unet_preset('huge'), 'use one of seed, tiny'),
    (lambda: UNet(mults=(1,)), 'mults needs at least two entries'),
    (lambda: ConvBlock(3, 8, residual=True), 'needs c_in == c_out')])
def test_bad_input_names_what_would_work(make, message):
    with pytest.raises(ValueError) as e: make()
    assert message in str(e.value)

@pytest.mark.parametrize('y, message', [
    ([3, 7, 3, 10], 'labels must be in [0, 10) or NULL_LABEL (-1); got [10]'), ([3, -2, 3, 1], 'got [-2]'),
    ([3., 7., 3., 1.], 'integer tensor of shape (4,)'), ([3, 7], 'integer tensor of shape (4,)')])
def test_bad_labels_say_what_is_allowed(y, message):
    model = ConditionalUNet(10, **unet_preset('tiny', in_channels=1))
    with pytest.raises(ValueError) as e: model(torch.randn(4, 1, 16, 16), torch.tensor([10, 10, 500, 500]), torch.tensor(y))
    assert message in str(e.value)

@pytest.mark.parametrize('network', ['tiny', 'dit-tiny'])
def test_timesteps_one_per_image_or_one_for_all_and_nothing_else(network):
    from minddpm.dit import denoiser
    model, x, y = denoiser(network, 10, 1).eval(), torch.randn(4, 1, 16, 16), torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        each = model(x, torch.full((4,), 500), y)
        assert torch.equal(model(x, 500, y), each) and torch.equal(model(x, torch.tensor(500), y), each)
    for t in (torch.full((3,), 500), torch.full((4, 1), 500), torch.ones(4, dtype=torch.bool)):
        with pytest.raises(ValueError, match=r't must hold one timestep per image, a tensor of shape \(4,\), or one number for all 4; got'):
            model(x, t, y)

def test_no_label_is_the_null_label():
    model = ConditionalUNet(10, **unet_preset('tiny', in_channels=1)).eval()
    x, t = torch.randn(4, 1, 16, 16), torch.tensor([10, 10, 500, 500])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), model(x, t, torch.full((4,), NULL_LABEL)))
        assert not torch.allclose(model(x, t), model(x, t, torch.tensor([3, 7, 3, 7])))
