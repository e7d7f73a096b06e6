"""Cramer-Rao bounds of OEF for the QQ model (qmri.physics.qq_crb)."""

import numpy as np
import pytest

from qmri.physics.qq import QQNET_TE_S, YA, qbold_magnitude, qq_susceptibility
from qmri.physics.qq_crb import (
    crb_table,
    fisher_information,
    oef_crb_region,
    oef_crb_voxel,
    protocol_needed,
    qq_jacobian,
    region_voxels,
    schur_information,
    tissue_draws,
    tissue_mean,
    tissue_sigma,
)

# GM- and WM-like voxels, one with the dephasing bracket negative (chi_nb large), one deep in the
# asymptotic f_s regime (Y low), one in the quadratic regime (Y high, small dw)
P = np.array(
    [
        [0.85, 12.0, 0.6, 0.04, 0.1],
        [0.75, 17.0, 0.55, 0.02, -0.1],
        [1.1, 25.0, 0.7, 0.05, 0.6],
        [0.9, 20.0, 0.1, 0.06, -0.3],
        [0.8, 10.0, 0.95, 0.03, 0.0],
    ]
)


def _model(p, te):
    S = qbold_magnitude(*p.T, te_s=te)
    chi = qq_susceptibility(p[:, 2], p[:, 3], p[:, 4])
    return np.concatenate([S, np.asarray(chi)[:, None]], axis=1)


def test_jacobian_matches_central_differences():
    te = np.asarray(QQNET_TE_S)
    S, JS, jc = qq_jacobian(P, te)
    np.testing.assert_allclose(S, qbold_magnitude(*P.T, te_s=te), rtol=1e-12)
    J = np.concatenate([JS, jc[:, None]], axis=1)  # (N, E+1, 5)
    h = np.array([1e-5, 1e-4, 1e-6, 1e-7, 1e-6])
    Jn = np.empty_like(J)
    for k in range(5):
        dp = np.zeros(5)
        dp[k] = h[k]
        Jn[:, :, k] = (_model(P + dp, te) - _model(P - dp, te)) / (2 * h[k])
    scale = np.abs(J).max(axis=1, keepdims=True)  # per-parameter column scale
    assert np.all(np.abs(J - Jn) <= 1e-5 * scale + 1e-12)
    # Fisher = J^T C^-1 J
    F = fisher_information(P, te, sigma_signal=0.01, qsm_sd_ppm=0.005)
    W = np.r_[np.full(len(te), 1 / 0.01**2), 1 / 0.005**2]
    np.testing.assert_allclose(F, np.einsum("nei,e,nej->nij", Jn, W, Jn), rtol=1e-5, atol=1e-6 * np.abs(F).max())


def test_voxel_crb_equals_inverse_fisher():
    F = fisher_information(P, sigma_signal=0.005)
    ref = 100 / YA * np.sqrt(np.linalg.inv(F)[:, 2, 2])
    np.testing.assert_allclose(oef_crb_voxel(P, sigma_signal=0.005), ref, rtol=1e-6)


def test_region_of_identical_voxels_and_sharing_v():
    p = tissue_mean("GM", 0.6)
    sig = tissue_sigma("GM", 100)
    cv = oef_crb_voxel(p, sigma_signal=sig)[0]
    for n in (1, 7, 400):
        cr = oef_crb_region(np.repeat(p, n, 0), sigma_signal=sig)
        assert cr == pytest.approx(cv / np.sqrt(n), rel=1e-8)
        # the sample form (n_voxels) gives the same
        assert oef_crb_region(p, sigma_signal=sig, n_voxels=n) == pytest.approx(cr, rel=1e-10)
    # identical voxels: sharing v as well changes nothing ([(N S)^-1]_YY = [S^-1]_YY / N) ...
    pr = np.repeat(p, 50, 0)
    assert oef_crb_region(pr, sigma_signal=sig, shared=("Y", "v")) == pytest.approx(cv / np.sqrt(50), rel=1e-6)
    # ... voxels differing in R2 / chi_nb: the shared v adds information, bound clearly smaller
    ph = tissue_draws("GM", 0.6, 50, np.random.default_rng(3))
    ph[:, 3] = p[0, 3]
    assert oef_crb_region(ph, sigma_signal=sig, shared=("Y", "v")) < 0.8 * oef_crb_region(ph, sigma_signal=sig)


def test_singular_voxels_are_robust():
    # v = 0: Y is not seen in that voxel (zero information), the rest of the region still counts
    p = np.repeat(tissue_mean("GM", 0.6), 10, 0)
    p0 = p.copy()
    p0[:5, 3] = 0.0
    assert np.isinf(oef_crb_voxel(p0[:1], sigma_signal=0.01)[0])
    assert np.all(np.isfinite(schur_information(fisher_information(p0, sigma_signal=0.01))))
    r_all = oef_crb_region(p, sigma_signal=0.01)
    r_half = oef_crb_region(p0, sigma_signal=0.01)
    assert r_half == pytest.approx(r_all * np.sqrt(2), rel=1e-6)
    assert np.isinf(oef_crb_region(p0[:5], sigma_signal=0.01))


def test_signal_only_bound_halves_when_snr_doubles():
    rng = np.random.default_rng(1)
    p = tissue_draws("WM", 0.6, 30, rng)
    for shared in (("Y",), ("Y", "v")):
        a = oef_crb_region(p, sigma_signal=0.01, qsm_sd_ppm=np.inf, shared=shared)
        b = oef_crb_region(p, sigma_signal=0.005, qsm_sd_ppm=np.inf, shared=shared)
        assert b == pytest.approx(a / 2, rel=1e-6)
    a = oef_crb_voxel(P, sigma_signal=0.01, qsm_sd_ppm=np.inf)
    np.testing.assert_allclose(oef_crb_voxel(P, sigma_signal=0.005, qsm_sd_ppm=np.inf), a / 2, rtol=1e-6)
    # with QSM the bound is lower than without
    assert np.all(oef_crb_voxel(P, sigma_signal=0.01) <= a * (1 + 1e-9))


def test_monte_carlo_shared_y_known_nuisance():
    """Y shared by 200 voxels, all else known: 1-parameter CRB vs Gauss-Newton LS estimates."""
    rng = np.random.default_rng(7)
    n_vox, n_trials, te = 200, 200, np.asarray(QQNET_TE_S)
    Y0 = 0.6
    p = tissue_draws("GM", Y0, n_vox, rng)
    sig, qsd = tissue_sigma("GM", 50), 0.005
    F = fisher_information(p, te, sig, qsd)
    crb_y = 1.0 / np.sqrt(F[:, 2, 2].sum())
    clean = _model(p, te)
    w = np.r_[np.full(len(te), 1 / sig**2), 1 / qsd**2]
    data = clean + rng.standard_normal((n_trials,) + clean.shape) * np.sqrt(1 / w)
    Y = np.full(n_trials, Y0 + 0.02)
    for _ in range(6):
        q = np.repeat(p[None], n_trials, 0).reshape(-1, 5)
        q[:, 2] = np.repeat(Y, n_vox)
        S, JS, jc = qq_jacobian(q, te)
        m = np.concatenate([S, qq_susceptibility(q[:, 2], q[:, 3], q[:, 4])[:, None]], 1)
        jy = np.concatenate([JS[:, :, 2], jc[:, 2:3]], 1)
        r = data.reshape(-1, len(w)) - m
        num = (jy * w * r).sum(1).reshape(n_trials, n_vox).sum(1)
        den = (jy * w * jy).sum(1).reshape(n_trials, n_vox).sum(1)
        Y = Y + num / den
    assert abs(Y.mean() - Y0) < 4 * crb_y / np.sqrt(n_trials) + 0.1 * crb_y
    assert Y.std(ddof=1) == pytest.approx(crb_y, rel=0.2)


def test_region_voxels():
    assert region_voxels(20, 2) == pytest.approx(4 / 3 * np.pi * 10**3 / 8, rel=0.05)
    assert region_voxels(20, 2, method="volume") == 524
    assert region_voxels(40, 2) == pytest.approx(4 / 3 * np.pi * 20**3 / 8, rel=0.02)
    assert region_voxels(1, 2) == 1


def test_table_and_protocols():
    rows = crb_table(snrs=(50, 100), diameters_mm=(8, 20), oef_percent=(37,), n_draws=300)
    assert len(rows) == 4
    for r in rows:
        assert r["crb_region_Yv_pp"] < r["crb_region_Y_pp"] < r["crb_voxel_median_pp"]
    # larger regions and higher SNR give lower bounds
    assert rows[1]["crb_region_Y_pp"] < rows[0]["crb_region_Y_pp"]
    assert rows[2]["crb_region_Y_pp"] < rows[0]["crb_region_Y_pp"]
    out = protocol_needed(5.0, 20.0, n_draws=300)
    assert len(out) == 3
    for r in out:
        assert 1 < r["snr_needed"] < 1e4
    # at the SNR found, the bound equals the target
    one = {out[0]["protocol"]: QQNET_TE_S}
    need = protocol_needed(5.0, 20.0, protocols=one, n_draws=300)[0]["snr_needed"]
    rows = crb_table(snrs=(need,), diameters_mm=(20,), oef_percent=(37,), n_draws=300)
    assert rows[0]["crb_region_Y_pp"] == pytest.approx(5.0, rel=1e-3)


def test_less_blood_volume_means_less_information_about_a_lesions_oef():
    """v_factor scales the region's v: 1 reproduces the tissue's table; an infarct core whose v fell
    (0.3-0.7 in the phantoms) has a larger bound, so its OEF is harder to see than at normal v."""
    kw = dict(snrs=(100,), diameters_mm=(20,), oef_percent=(12.5,), n_draws=300)
    base, same, less = crb_table(**kw), crb_table(**kw, v_factor=1.0), crb_table(**kw, v_factor=0.3)
    assert base[0]["crb_region_Y_pp"] == same[0]["crb_region_Y_pp"] and same[0]["v_factor"] == 1.0
    assert less[0]["crb_region_Y_pp"] > 2 * base[0]["crb_region_Y_pp"]
    assert less[0]["crb_region_Yv_pp"] > 2 * base[0]["crb_region_Yv_pp"]


def test_the_oef_bench_states_what_the_bound_allows_per_lesion_type():
    from qmri.bench.oef import _lesion_crb_rows

    rows = _lesion_crb_rows(diameters_mm=(8, 40))
    assert {r["lesion"] for r in rows} >= {"infarct core", "penumbra"}
    for small, large in zip(rows[::2], rows[1::2]):  # the same lesion at 8 and 40 mm
        for k in ("P(C >= 0.7), Y shared", "P(ROI error within 5), Y shared"):
            assert 0.0 <= float(small[k]) <= float(large[k]) <= 1.0, (small["lesion"], k)
