"""Inception FID's features, run on the CPU: the network is torch-fidelity's port of the FID Inception, here with
random weights in its architecture (the real ones are a download), so what is checked is everything around them."""
import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as tfi

from minddpm.metrics import frechet_distance, inception_features, precision_recall

@pytest.fixture(scope='module')
def random_weights(tmp_path_factory):
    "A weights file of the FID Inception's architecture, randomly initialised."
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tfi, 'load_state_dict_from_url', lambda *a, **k: {})
        mp.setattr(tfi.FeatureExtractorInceptionV3, 'load_state_dict', lambda self, sd, *a, **k: None)
        torch.manual_seed(0)
        net = tfi.FeatureExtractorInceptionV3('inception-v3-compat', ['2048'])
    path = tmp_path_factory.mktemp('inception')/'weights.pth'
    torch.save(net.state_dict(), path)
    return path

def test_features_of_uint8_float_and_grey_images_agree(random_weights):
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    f = inception_features(x, batch_size=2, weights=random_weights)
    assert f.shape == (5, 2048) and f.dtype == torch.float32 and torch.isfinite(f).all() and f.std() > 0
    assert torch.allclose(inception_features(x, batch_size=5, weights=random_weights), f, atol=1e-4)  # batching changes nothing
    as_float = x.float() / 127.5 - 1                                         # the same pixels in [-1, 1]
    assert torch.allclose(inception_features(as_float, weights=random_weights), f, atol=1e-4)
    grey = x[:, :1]
    assert torch.allclose(inception_features(grey, weights=random_weights),
                          inception_features(grey.repeat(1, 3, 1, 1), weights=random_weights), atol=1e-4)
    assert frechet_distance(f, f) == pytest.approx(0, abs=1e-3)

@pytest.mark.parametrize('shape', [(3, 32, 32), (0, 3, 32, 32), (2, 4, 32, 32)])
def test_bad_images_are_refused_before_any_download(shape):
    with pytest.raises(ValueError, match=r'shape \(N, 3, H, W\) or \(N, 1, H, W\)'):
        inception_features(torch.zeros(shape, dtype=torch.uint8))

def test_precision_recall_in_chunks_is_the_whole_matrix_computation():
    "Chunked rows give exactly what the full (N, N) distance matrices give, so 50,000 CIFAR-10 features fit in memory."
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(300, 8, generator=g), torch.randn(200, 8, generator=g) * 1.3 + 0.2
    radius = lambda f: torch.cdist(f, f).kthvalue(4, dim=1).values
    d = torch.cdist(fake.double(), real.double())
    expected = ((d <= radius(real.double())[None]).any(1).double().mean().item(),
                (d.T <= radius(fake.double())[None]).any(1).double().mean().item())
    assert precision_recall(real, fake, k=3, chunk=7) == precision_recall(real, fake, k=3) == expected
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1
