"""Each metric against a direct computation on small inputs."""
import numpy as np
import pytest
import torch

from accel.metrics import FeatureStats, clipping, frechet_distance, psnr, ssim
from accel.metrics.features import CLASSIFIER_PATH


def test_frechet_of_identical_sets_is_zero_and_grows_with_noise():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(2000, 8))
    a = FeatureStats.of(f, "x")
    assert abs(frechet_distance(a.mu, a.sigma, a.mu, a.sigma)) < 1e-9
    d = [frechet_distance(a.mu, a.sigma, *(lambda s: (s.mu, s.sigma))(FeatureStats.of(f + rng.normal(size=f.shape) * k, "x")))
         for k in (0.1, 0.5, 1.0)]
    assert 0 < d[0] < d[1] < d[2]


def test_frechet_matches_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expect = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()  # = 5 + 1 + 1 + 4
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expect, abs=1e-9)


def test_frechet_matches_scipy_sqrtm_on_full_covariances():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + np.eye(5), b @ b.T + np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expect = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy_linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expect, rel=1e-8)


def test_stats_roundtrip(tmp_path):
    s = FeatureStats.of(np.random.default_rng(0).normal(size=(50, 4)), "x")
    s.save(tmp_path / "s.safetensors")
    t = FeatureStats.load(tmp_path / "s.safetensors")
    assert t.n == 50 and t.extractor == "x" and np.allclose(t.sigma, s.sigma, atol=1e-6)


def test_psnr_and_ssim_direct():
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert psnr(x + 0.1, x) == pytest.approx(20.0, abs=1e-6)  # mse 0.01
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-9)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert ssim(noisy, x) < ssim((x + noisy) / 2, x) < 1.0


def test_clipping_counts_pixels_at_the_range_limits():
    x = torch.full((1, 1, 10, 10), 0.5)
    x[0, 0, 0, :5] = 1.0
    x[0, 0, 1, :5] = 0.0
    c = clipping(x, reference=torch.full_like(x, 0.5))
    assert c["clipped"] == pytest.approx(0.10) and c["clipped_high"] == pytest.approx(0.05)
    assert c["mean_drift"] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.skipif(not CLASSIFIER_PATH.exists(), reason="classifier weights not trained yet")
def test_domain_classifier_recognises_real_test_images_and_fd_is_small_for_real_data():
    from accel.metrics import alignment, fd_domain
    from accel.pipelines.data import load_fashion_mnist

    x, y = load_fashion_mnist("test")
    imgs = (x[:1000] + 1) / 2
    assert alignment(imgs, y[:1000]) > 0.9
    from accel.metrics import class_probability

    p = class_probability(imgs, y[:1000])  # the prompted class's mean softmax probability, continuous
    wrong = class_probability(imgs, (y[:1000] + 1) % 10)
    assert 0.8 < p <= 1.0 and wrong < 0.1
    real = fd_domain(imgs)
    noisy = fd_domain((imgs + 0.3 * torch.randn(imgs.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1))
    assert real < noisy


def test_fid_says_why_it_cannot_run_offline():
    from accel.metrics import FIDUnavailableError, fid

    x = torch.rand(4, 1, 32, 32)
    with pytest.raises(FIDUnavailableError, match="fd_effnet"):  # no Inception weights on this machine
        fid(x, x)
