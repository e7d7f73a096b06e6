"""Classical voxelwise QQ fit (qmri.classical.qq_fit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qmri.classical.qq_fit import OEF_REF_DEFAULT, fit_qq
from qmri.physics import qq


def _voxels(n, rng):
    S0 = rng.uniform(0.7, 1.0, n)
    R2 = rng.uniform(8, 25, n)
    Y = np.clip(rng.normal(0.6, 0.08, n), 0.3, 0.9)
    v = rng.uniform(0.01, 0.06, n)
    cnb = rng.normal(0.0, 0.08, n)
    return S0, R2, Y, v, cnb


def test_noiseless_recovery_up_to_mirror_ambiguity():
    """Without noise and without prior (lam=0) the fit finds an exact solution for every voxel.

    The QQ model has one exact two-fold ambiguity (dw uses |bracket|, and for each (Y, chi_nb)
    a mirror with the opposite bracket sign has the same chi): the fit returns the branch whose
    OEF is closer to OEF_REF_DEFAULT (0.388), so voxels whose truth lies on the far branch come
    back as that mirror. Everything else is recovered exactly.
    """
    rng = np.random.default_rng(1)
    n = 800
    S0, R2, Y, v, cnb = _voxels(n, rng)
    te = qq.QQNET_TE_S
    S = qq.qbold_magnitude(S0, R2, Y, v, cnb, te)
    chi = qq.qq_susceptibility(Y, v, cnb)
    r = fit_qq(S, chi, te, np.ones(n, bool), lam=0.0, n_iter=200, device="cpu")
    err = r["OEF"] - qq.oef_from_y(Y)
    assert np.median(np.abs(err)) < 1e-3  # < 0.1 %-point on the median voxel
    assert np.mean(np.abs(err) < 0.02) > 0.99  # > 99 % of voxels within 2 %-points
    assert np.median(np.abs(r["R2"] - R2)) < 1e-3
    assert np.median(np.abs(r["v"] - v)) < 1e-4
    assert np.median(np.abs(r["chi_nb"] - cnb)) < 1e-4
    np.testing.assert_allclose(np.median(r["S0"] / S0), 1.0, atol=1e-4)
    # every voxel's fit reproduces the data exactly; the misses are non-identifiable voxels:
    # exact mirrors (same |bracket|, truth farther from the reference OEF), or voxels whose decay
    # stays in the quadratic regime (dw * TE_max < 1, f_s ~ 0.3 x^2) where only v dw^2 is seen
    assert np.all(r["cost"] < 1e-9)  # rms residual < 1e-5 of echo 1
    bad = np.abs(err) > 0.02
    k1 = qq.HCT * qq.DCHI0
    br_t = k1 * (1 - Y) + qq.CHI_BA - cnb
    br_f = k1 * (1 - r["Y"]) + qq.CHI_BA - r["chi_nb"]
    mirror = (np.abs(np.abs(br_f) - np.abs(br_t)) < 2e-3) & (np.abs(qq.oef_from_y(Y) - OEF_REF_DEFAULT) > np.abs(r["OEF"] - OEF_REF_DEFAULT))
    quadratic = qq.delta_omega(Y, cnb) * max(te) < 1.0
    assert np.all(mirror[bad] | quadratic[bad])


def test_noisy_snr100_oef_rmse():
    """SNR 100 (echo-1 mean / sigma, Rician) and 0.005 ppm QSM noise.

    The per-voxel Cramer-Rao bound for OEF here is ~65 %-points (Y and v are identified only by
    the short-echo curvature), so without the prior the fit is far off and with the mean-OEF
    prior (default lam) it shrinks to about the spread of the truth (~8 %-points).
    """
    rng = np.random.default_rng(2)
    n = 1500
    S0, R2, Y, v, cnb = _voxels(n, rng)
    te = qq.QQNET_TE_S
    S = qq.add_noise(qq.qbold_magnitude(S0, R2, Y, v, cnb, te), 100.0, rng)
    chi = qq.qq_susceptibility(Y, v, cnb) + rng.normal(0, 0.005, n)
    oef = qq.oef_from_y(Y)
    r = fit_qq(S, chi, te, np.ones(n, bool), device="cpu")
    rmse = 100 * np.sqrt(np.mean((r["OEF"] - oef) ** 2))
    r0 = fit_qq(S, chi, te, np.ones(n, bool), lam=0.0, device="cpu")
    rmse0 = 100 * np.sqrt(np.mean((r0["OEF"] - oef) ** 2))
    print(f"SNR 100 OEF RMSE: {rmse:.2f} %-points (lam default), {rmse0:.2f} (lam=0); truth sd {100 * oef.std():.2f}")
    assert rmse < 10.0
    assert rmse0 > rmse
    assert abs(100 * np.mean(r["OEF"] - oef)) < 5.0  # mean OEF bias (measured 3.2 %-points)
    assert np.median(np.abs(r["R2"] - R2)) < 4.0  # R2 + v*dw is well determined; R2 alone roughly


def test_volume_api_arbitrary_echoes_and_torch_input():
    rng = np.random.default_rng(3)
    shape = (6, 5, 4)
    n = int(np.prod(shape))
    S0, R2, Y, v, cnb = (a.reshape(shape) for a in _voxels(n, rng))
    S0 = S0 * 250.0  # absolute units: fitted S0 must come back in them
    te = [0.003, 0.006, 0.011, 0.02, 0.032, 0.05]  # non-uniform, 6 echoes
    S = qq.qbold_magnitude(S0, R2, Y, v, cnb, te)
    chi = qq.qq_susceptibility(Y, v, cnb)
    mask = np.ones(shape, bool)
    mask[0] = False
    r = fit_qq(S, chi, te, mask, lam=0.0, n_iter=150, device="cpu")
    assert set(r) >= {"S0", "R2", "Y", "v", "chi_nb", "OEF", "cost"}
    for k in ("S0", "R2", "Y", "v", "chi_nb", "OEF"):
        assert r[k].shape == shape and r[k].dtype == np.float32
        assert np.all(r[k][~mask] == 0)
    np.testing.assert_allclose(np.median(r["S0"][mask] / S0[mask]), 1.0, atol=1e-3)
    assert np.median(np.abs(r["R2"][mask] - R2[mask])) < 0.05
    assert np.median(np.abs(r["OEF"][mask] - qq.oef_from_y(Y[mask]))) < 0.005
    rt = fit_qq(torch.as_tensor(S), torch.as_tensor(chi), te, torch.as_tensor(mask), lam=0.0, n_iter=150)
    assert isinstance(rt["OEF"], torch.Tensor)
    np.testing.assert_allclose(rt["OEF"].numpy(), r["OEF"], atol=1e-6)
    with pytest.raises(ValueError):
        fit_qq(S, chi, te[:5], mask)
