"""Spatially regularised QQ fit (qmri.classical.qq_fit_spatial) against the voxelwise fit.

Phantom: a 2 mm box of GM-like tissue (S0 0.85, R2 12 +- 3 1/s, v 0.04 +- 0.01, chi_nb 0.1 +- 0.05
ppm, smooth fields of 4 mm sigma), background OEF 37 % (+- 2 smooth), a 20 mm cube with OEF 15 %
(infarct) and a 20 mm sphere with OEF 60 %; 8 echoes 4.5-39.5 ms, Rician noise at echo-1 SNR 100,
QSM + N(0, 0.005 ppm). The regularisation weights were tuned on seeds 1-4 of this phantom; the
tests use seed 7 (held out) and seed 11 (noiseless).

Measured on 24x24x12 voxels (tuning seeds 1-4 / held-out seed 7):
voxelwise fit_qq (default lam): C_low -0.01, C_high 0.03-0.05, background bias +8.3 to +9.5 %-points,
r 0.04-0.08, RMSE 14.4-15.3 %-points; spatial fit: C_low 0.47-0.67 (0.63), C_high 0.19-0.44 (0.37),
background bias +0.7 to +3.1 (+1.7), r 0.52-0.73 (0.65), RMSE 7.8-9.3 (8.3) %-points, ~4 s per fit
on one thread. The low-OEF lesion stays ~10 %-points too high (C < 0.7): with chi_nb 0.1 ppm an OEF
of 15 % puts the venous frequency shift near zero (dw = |1.21 (1 - Y) - 0.108 - chi_nb| ppm), where
the signal carries almost no information on Y or v; the high-OEF lesion is in the linear regime of
f_s where only v dw is seen. TV on OEF with v known exactly (oracle) gives the same (C_low 0.52,
C_high 0.26), so this is the physics at SNR 100, not the optimiser.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from qmri.classical.qq_fit import fit_qq
from qmri.classical.qq_fit_spatial import fit_qq_spatial
from qmri.physics import qq


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These fits are many small tensor ops: with 2 intra-op threads on a CPU shared with another job
    each op's thread barrier waits for a descheduled worker (measured: 608 s instead of 12 s for both
    test files), so the module runs single-threaded and restores the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _smooth(shape, rng, sigma_vox=2.0):
    f = gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="reflect")
    return f / f.std()


def box_phantom(shape=(24, 24, 12), seed=0, snr=100.0, noise=True, lesion_mm=20.0, v_sd=0.01, cnb_mean=0.1):
    """2 mm GM-like box, background OEF 37 % (+-2 smooth), a cube OEF 15 % and a sphere OEF 60 %."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    S0 = 0.85 + 0.03 * _smooth(shape, rng)
    R2 = 12.0 + 3.0 * _smooth(shape, rng)
    v = np.clip(0.04 + v_sd * _smooth(shape, rng), 0.005, 0.08)
    cnb = cnb_mean + 0.05 * _smooth(shape, rng)
    oef = 0.37 + 0.02 * _smooth(shape, rng)
    L = int(round(lesion_mm / 2.0))
    low = np.zeros(shape, bool)
    z0 = max((nz - L) // 2, 0)
    low[2 : 2 + L, 2 : 2 + L, z0 : z0 + L] = True
    x, y, z = np.meshgrid(*[np.arange(n) + 0.5 for n in shape], indexing="ij")
    cx, cy, cz = nx - 2 - L / 2, ny - 2 - L / 2, nz / 2
    high = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= (L / 2) ** 2
    oef[low] = 0.15
    oef[high] = 0.60
    Y = qq.y_from_oef(oef)
    te = np.array(qq.QQNET_TE_S)
    mag = qq.qbold_magnitude(S0, R2, Y, v, cnb, te)
    chi = qq.qq_susceptibility(Y, v, cnb)
    if noise:
        mag = qq.add_noise(mag, snr, rng, kind="rician")
        chi = chi + rng.normal(0, 0.005, shape)
    mask = np.ones(shape, bool)
    return dict(mag=mag, chi=chi, te=te, mask=mask, oef=oef, low=low, high=high, bg=~(low | high), S0=S0, R2=R2, v=v, chi_nb=cnb)


def contrast(est, ph, lesion):
    bg = ph["bg"]
    return (est[ph[lesion]].mean() - est[bg].mean()) / (ph["oef"][ph[lesion]].mean() - ph["oef"][bg].mean())


@pytest.fixture(scope="module")
def held_out():
    ph = box_phantom(seed=7)
    vox = fit_qq(ph["mag"], ph["chi"], ph["te"], ph["mask"], device="cpu")
    sp = fit_qq_spatial(ph["mag"], ph["chi"], ph["te"], ph["mask"], voxel_size_mm=2.0, return_info=True)
    return ph, vox, sp


def test_lesion_contrast_and_bias_beat_voxelwise(held_out):
    ph, vox, sp = held_out
    oef, m = ph["oef"], ph["mask"]
    c_sp, c_vox = contrast(sp["OEF"], ph, "low"), contrast(vox["OEF"], ph, "low")
    ch_sp, ch_vox = contrast(sp["OEF"], ph, "high"), contrast(vox["OEF"], ph, "high")
    bias_sp = 100 * (sp["OEF"][ph["bg"]].mean() - oef[ph["bg"]].mean())
    bias_vox = 100 * (vox["OEF"][ph["bg"]].mean() - oef[ph["bg"]].mean())
    rmse = lambda r: 100 * np.sqrt(np.mean((r["OEF"][m] - oef[m]) ** 2))  # noqa: E731
    r_sp = np.corrcoef(sp["OEF"][m], oef[m])[0, 1]
    r_vox = np.corrcoef(vox["OEF"][m], oef[m])[0, 1]
    print(f"C_low {c_sp:.2f} vs {c_vox:.2f}, C_high {ch_sp:.2f} vs {ch_vox:.2f}, bias {bias_sp:.1f} vs {bias_vox:.1f}, RMSE {rmse(sp):.1f} vs {rmse(vox):.1f}, r {r_sp:.2f} vs {r_vox:.2f}; {sp['info']['t_total_s']:.1f} s")
    # measured (seed 7): C_low 0.63 vs -0.01, C_high 0.37 vs 0.04, bias +1.7 vs +9.1, RMSE 8.3 vs 14.9, r 0.65 vs 0.07
    assert c_sp >= 0.45 and c_vox < 0.1
    assert ch_sp >= 0.2 and ch_vox < 0.1
    assert abs(bias_sp) < 4.0 < bias_vox
    assert rmse(sp) < rmse(vox) - 4.0
    assert r_sp > 0.5 > 0.2 > r_vox
    # the low-OEF cube's mean within 15 %-points (measured +9.5: the dw ~ 0 regime, see module docstring)
    assert abs(100 * (sp["OEF"][ph["low"]].mean() - 0.15)) < 15.0
    info = sp["info"]
    assert abs(info["sigma"] / (ph["mag"][..., 0].mean() / 100.0) - 1.0) < 0.05  # noise estimate


def test_oef_sd_coverage_held_out(held_out):
    """90-98 % of the voxels within 2 sd (calibration factor fitted on seeds 1-4; measured 96.5 %)."""
    ph, _, sp = held_out
    m = ph["mask"]
    cover = np.mean(np.abs(sp["OEF"][m] - ph["oef"][m]) <= 2 * sp["OEF_sd"][m])
    print(f"coverage {cover:.3f}, median sd {100 * np.median(sp['OEF_sd'][m]):.1f} %-points")
    assert 0.90 <= cover <= 0.98
    assert np.all(sp["OEF_sd"][m] > 0) and np.all(sp["OEF_sd"][m] <= 0.3)


def test_noiseless_recovered():
    """Noise-free data (v constant, chi_nb -0.05 ppm so that the 15 % lesion has dw > 0): near exact."""
    ph = box_phantom(shape=(16, 16, 10), seed=11, noise=False, lesion_mm=12.0, v_sd=0.0, cnb_mean=-0.05)
    r = fit_qq_spatial(ph["mag"], ph["chi"], ph["te"], ph["mask"], n_sd_samples=0)
    m = ph["mask"]
    err = np.abs(r["OEF"][m] - ph["oef"][m])
    print(f"noiseless: median {100 * np.median(err):.4f} %-points, within 1 %-point {np.mean(err < 0.01):.3f}")
    assert np.median(err) < 1e-3
    assert np.mean(err < 0.01) > 0.97
    for lesion in ("low", "high"):
        assert abs(contrast(r["OEF"], ph, lesion) - 1.0) < 0.05
    assert np.median(np.abs(r["R2"][m] - ph["R2"][m])) < 0.01
    assert np.median(np.abs(r["chi_nb"][m] - ph["chi_nb"][m])) < 1e-3
    np.testing.assert_allclose(np.median(r["S0"][m] / ph["S0"][m]), 1.0, atol=1e-3)


def test_shapes_mask_torch_and_errors():
    ph = box_phantom(shape=(10, 9, 6), seed=3, lesion_mm=8.0)
    mask = ph["mask"].copy()
    mask[0] = False
    mask[:, :, -1] = False
    mag = ph["mag"] * 300.0  # absolute units
    r = fit_qq_spatial(mag, ph["chi"], ph["te"], mask, n_iter=5, n_sd_samples=2)
    keys = {"S0", "S0_rel", "R2", "Y", "v", "chi_nb", "OEF", "OEF_sd", "cost"}
    assert set(r) == keys
    for k in keys:
        assert r[k].shape == mask.shape and r[k].dtype == np.float32
        assert np.all(r[k][~mask] == 0)
        assert np.all(np.isfinite(r[k]))
    assert np.all(r["OEF_sd"][mask] > 0)
    np.testing.assert_allclose(r["OEF"][mask], 1 - r["Y"][mask] / qq.YA, atol=1e-6)
    assert 0.5 < np.median(r["S0"][mask] / (ph["S0"][mask] * 300.0)) < 2.0
    mag_t, chi_t, mask_t = torch.as_tensor(mag), torch.as_tensor(ph["chi"]), torch.as_tensor(mask)
    rt = fit_qq_spatial(mag_t, chi_t, ph["te"], mask_t, n_iter=5, n_sd_samples=2)
    assert isinstance(rt["OEF"], torch.Tensor)
    np.testing.assert_allclose(rt["OEF"].numpy(), r["OEF"], atol=1e-5)  # deterministic (seeded)
    empty = fit_qq_spatial(mag, ph["chi"], ph["te"], np.zeros_like(mask))
    assert all(np.all(v == 0) for v in empty.values())
    with pytest.raises(ValueError):
        fit_qq_spatial(mag, ph["chi"], ph["te"][:5], mask)
