"""Profile likelihood of OEF (qmri.classical.qq_profile): exact on noiseless data, pooled over space."""

import numpy as np
import torch

from qmri.classical import qq_profile as qp
from qmri.physics.qq import QQNET_TE_S, YA, add_noise, qbold_magnitude, qq_susceptibility


def _voxels(oef, n, rng, v=0.04, snr=None):
    """n GM-like voxels sharing one OEF (other parameters vary voxel by voxel)."""
    Y = YA * (1 - oef)
    S0 = rng.uniform(0.7, 0.9, n)
    R2 = rng.uniform(8, 20, n)
    vv = np.clip(rng.normal(v, 0.008, n), 0.01, 0.08)
    cnb = rng.normal(0.0, 0.05, n)
    s = qbold_magnitude(S0, R2, np.full(n, Y), vv, cnb, QQNET_TE_S)
    if snr:
        s = add_noise(s, snr, rng, sigma=0.8 / snr)
    chi = qq_susceptibility(np.full(n, Y), vv, cnb)
    return torch.from_numpy(s), torch.from_numpy(chi)


def test_noiseless_profile_is_smallest_at_the_true_oef():
    rng = np.random.default_rng(0)
    for oef in (0.11, 0.39, 0.67):
        # v on the profile's grid: noiseless data are then fitted (almost) exactly at the true OEF
        s, chi = _voxels(oef, 50, rng, v=0.04)
        sse = qp.profile_sse(s, chi, QQNET_TE_S, oef_grid=(oef - 0.14, oef, oef + 0.14), v_grid=qp.V_GRID + (0.04,))
        curve = sse.sum(0)
        assert int(torch.argmin(curve)) == 1, (oef, curve)


def test_region_pooled_curve_moves_with_the_region_oef_and_noise_variance_is_estimated():
    rng = np.random.default_rng(3)
    minima = []
    for oef in (0.15, 0.40, 0.70):
        s, chi = _voxels(oef, 400, rng, snr=100)
        sse = qp.profile_sse(s, chi, QQNET_TE_S)
        assert sse.shape == (400, len(qp.OEF_GRID))
        minima.append(qp.OEF_GRID[int(torch.argmin(sse.sum(0)))])
        var = qp.noise_variance(sse, 8)
        assert 0.3 < var / (0.8 / 100) ** 2 < 3.0  # the echo noise variance, within a factor of 3
    assert minima[0] < minima[1] < minima[2], minima


def test_pooled_features_shape_and_zero_at_the_minimum():
    rng = np.random.default_rng(5)
    mask = np.zeros((10, 10, 10), bool)
    mask[2:8, 2:8, 2:8] = True
    s, chi = _voxels(0.4, int(mask.sum()), rng, snr=100)
    S = np.zeros(mask.shape + (8,))
    S[mask] = s.numpy()
    C = np.zeros(mask.shape)
    C[mask] = chi.numpy()
    f = qp.pooled_profile_features(S, C, mask, QQNET_TE_S)
    k = len(qp.OEF_GRID)
    assert f.shape == (mask.sum(), k * len(qp.POOL_SIGMAS)) and f.dtype == np.float32
    for j in range(len(qp.POOL_SIGMAS)):
        block = f[:, j * k : (j + 1) * k]
        assert np.allclose(block.min(1), 0.0) and np.all(block >= 0)
