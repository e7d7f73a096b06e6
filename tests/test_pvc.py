"""Classical PET partial-volume correction (PETPVC conventions) on known piecewise-constant phantoms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from qmri.classical import pvc
from qmri.physics.pet import gaussian_psf

N = 64
VALUES = np.array([0.2, 1.0, 2.5, 0.5], np.float32)  # background, body, hot shell + sphere, cold box


def _grid(n=N):
    return np.indices((n, n, n)) - n / 2 + 0.5  # voxel units


def nested_phantom(n=N):
    """Regions (voxel units): background 0.2, sphere r<24 at 1.0, hot shell 19<=r<24 and hot sphere
    at 2.5, cold box at 0.5. Returns (labels, channel-last binary masks incl. background, truth)."""
    x, y, z = _grid(n)
    r = np.sqrt(x**2 + y**2 + z**2)
    lab = np.zeros((n, n, n), np.int64)
    lab[r < 24] = 1
    lab[(r < 24) & (r >= 19)] = 2
    lab[np.sqrt((x + 8) ** 2 + (y - 4) ** 2 + (z - 6) ** 2) < 5] = 2
    lab[(abs(x - 5) < 5) & (abs(y) < 6) & (abs(z + 3) < 4)] = 3
    masks = np.eye(4, dtype=np.float32)[lab]
    return lab, masks, VALUES[lab]


@pytest.fixture(scope="module")
def phantom():
    return nested_phantom()


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))


# ------------------------------------------------------------------------------------------
# PETPVC's regression criterion: RBV / IY recover a blurred piecewise-constant phantom
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vox", [2.0, 1.0])
def test_gtm_recovers_region_values(phantom, vox):
    _, masks, truth = phantom
    fwhm = (5.0, 6.0, 7.0)
    g = gaussian_psf(truth, fwhm, vox)
    res = pvc.gtm(g, masks, fwhm, vox)
    np.testing.assert_allclose(res.values, VALUES, atol=1e-3)
    assert res.matrix.shape == (4, 4)
    np.testing.assert_allclose(res.matrix.sum(1), 1.0, atol=1e-4)  # rows: spill fractions sum to 1
    assert np.abs(res.observed - VALUES).max() > 0.1  # the uncorrected means are biased
    # channel-first masks give the same table
    np.testing.assert_allclose(pvc.gtm(g, np.moveaxis(masks, -1, 0), fwhm, vox).values, res.values, atol=1e-6)


@pytest.mark.parametrize("vox, iy_iter", [(2.0, 10), (1.0, 50)])
def test_rbv_and_iterative_yang_petpvc_regression(phantom, vox, iy_iter):
    _, masks, truth = phantom
    fwhm = (5.0, 6.0, 7.0)
    g = gaussian_psf(truth, fwhm, vox)
    assert np.abs(g - truth).max() > 1.0
    f_rbv = pvc.rbv(g, masks, fwhm, vox)
    assert np.abs(f_rbv - truth).max() < 0.01
    # PETPVC default of 10 iterations suffices at 2 mm; at 1 mm the same FWHM spans twice as many
    # voxels and IY converges more slowly (max diff 0.10 after 10, 0.017 after 20 iterations).
    f_iy = pvc.iterative_yang(g, masks, fwhm, vox, n_iter=iy_iter)
    assert np.abs(f_iy - truth).max() < 0.01


def test_rbv_probabilistic_masks_and_torch_io():
    """Partial-volume masks (3x supersampled) are handled exactly; torch in -> torch out."""
    n, vox, fwhm = 48, 2.0, 6.0
    x, y, z = _grid(n)
    off = (np.arange(3) + 0.5) / 3 - 0.5
    inner = np.zeros((n, n, n))
    outer = np.zeros((n, n, n))
    for a in off:
        for b in off:
            for c in off:
                r = np.sqrt((x + a) ** 2 + ((y + b) / 1.2) ** 2 + (z + c) ** 2)
                inner += (r < 9.3) / 27
                outer += (r < 16.6) / 27
    masks = np.stack([1 - outer, outer - inner, inner], -1).astype(np.float32)
    assert ((masks > 0.05) & (masks < 0.95)).any()
    vals = np.array([0.1, 1.0, 3.0], np.float32)
    truth = masks @ vals
    g = torch.as_tensor(gaussian_psf(truth, fwhm, vox))
    np.testing.assert_allclose(pvc.gtm(g, masks, fwhm, vox).values, vals, atol=1e-3)
    f = pvc.rbv(g, torch.as_tensor(masks), fwhm, vox)
    assert isinstance(f, torch.Tensor)
    assert float((f - torch.as_tensor(truth)).abs().max()) < 0.01
    f_iy = pvc.iterative_yang(g.numpy(), masks, fwhm, vox, n_iter=10)  # with PETPVC's fuzzy correction
    assert isinstance(f_iy, np.ndarray)
    assert np.abs(f_iy - truth).max() < 0.02


# ------------------------------------------------------------------------------------------
# Muller-Gartner
# ------------------------------------------------------------------------------------------


def test_muller_gartner_uniform_wm():
    """GM shell 2.5 around uniform WM 1.0, CSF/background 0 (MG's assumptions), 3x supersampled.

    Bound: the only error is C_WM from the eroded WM (GM spill-over into the WM core), so
    |f - 2.5 GM| <= 0.005 everywhere and the GM concentration is within 0.2 % where GM > 0.2.
    """
    n, vox = N, 2.0
    x, y, z = _grid(n)
    off = (np.arange(3) + 0.5) / 3 - 0.5
    brain = np.zeros((n, n, n))
    core = np.zeros((n, n, n))
    for a in off:
        for b in off:
            for c in off:
                r = np.sqrt(((x + a) * vox / 50) ** 2 + ((y + b) * vox / 55) ** 2 + ((z + c) * vox / 45) ** 2)
                brain += (r < 1.0) / 27
                core += (r < 0.84) / 27
    gm, wm = (brain - core).astype(np.float32), core.astype(np.float32)
    truth = 2.5 * gm + 1.0 * wm
    for fwhm in [(5.0, 6.0, 7.0), 8.0]:
        g = gaussian_psf(truth, fwhm, vox)
        f = pvc.muller_gartner(g, gm, wm, fwhm, vox)  # PETPVC erosion: 4 voxels at 2 mm
        assert np.abs(f - 2.5 * gm).max() < 0.005
        assert np.abs(g - 2.5 * gm - wm)[gm > 0.5].mean() > 0.3  # the input was far off
        conc = pvc.muller_gartner(g, gm, wm, fwhm, vox, wm_erosion_mm=10.0, concentration=True)
        np.testing.assert_allclose(conc[gm > 0.2], 2.5, rtol=2e-3)
        assert np.all(conc[gm == 0] == 0)
    with pytest.raises(ValueError, match="eroded WM mask is empty"):
        pvc.muller_gartner(g, gm, wm, 6.0, vox, wm_erosion_mm=200.0)
    with pytest.raises(ValueError, match="gm \\+ wm"):
        pvc.muller_gartner(g, gm + 0.5 * wm, wm, 6.0, vox)


def test_petpvc_erosion_radius_rule():
    assert [pvc.petpvc_wm_erosion_radius_voxels(v) for v in (0.8, 1.0, 1.5, 2.0, 2.5, 4.0)] == [6, 6, 5, 4, 3, 3]
    wm = np.zeros((30, 30, 30), np.float32)
    wm[5:25, 5:25, 5:25] = 1
    core = pvc.eroded_wm_mask(wm, 2.0)  # ball radius 4 voxels -> 20 - 2*4 = 12 voxels wide
    assert core.sum() == 12**3
    i, j, k = np.indices((9, 9, 9)) - 4
    ball = i**2 + j**2 + k**2 <= 16
    np.testing.assert_array_equal(core, ndimage.binary_erosion(wm > 0, ball))
    # explicit radius in mm on an anisotropic grid: 6 mm = 3 voxels along x (2 mm), 6 along z (1 mm)
    core_mm = pvc.eroded_wm_mask(wm, (2.0, 2.0, 1.0), wm_erosion_mm=6.0)
    assert core_mm[15, 15].sum() == 20 - 2 * 6 and core_mm[:, 15, 15].sum() == 20 - 2 * 3


# ------------------------------------------------------------------------------------------
# Deconvolution and sharpening
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fwhm, vox", [((5.0, 6.0, 7.0), 2.0), (6.0, 1.0)])
def test_rl_and_rvc_improve_rmse(phantom, fwhm, vox):
    _, _, truth = phantom
    g = gaussian_psf(truth, fwhm, vox)
    e0 = rmse(g, truth)
    e_rl = rmse(pvc.richardson_lucy(g, fwhm, vox, n_iter=10), truth)
    e_rvc = rmse(pvc.reblurred_van_cittert(g, fwhm, vox), truth)
    assert e_rl < 0.9 * e0  # measured: 0.198 vs 0.237 (2 mm), 0.255 vs 0.355 (1 mm)
    assert e_rvc < 0.9 * e0  # measured: 0.200 vs 0.237, 0.268 vs 0.355
    assert pvc.richardson_lucy(g, fwhm, vox).min() >= 0
    # more RL iterations keep improving on noiseless data
    assert rmse(pvc.richardson_lucy(g, fwhm, vox, n_iter=20), truth) < e_rl


def test_sharpen_increases_contrast_and_matches_classic_kernel(phantom):
    lab, _, truth = phantom
    g = gaussian_psf(truth, (5.0, 6.0, 7.0), 2.0)
    hot, cold = lab == 2, lab == 3
    for method in ("laplacian", "unsharp"):
        s = pvc.sharpen(g, method)
        assert s[hot].mean() / s[cold].mean() > 1.1 * g[hot].mean() / g[cold].mean()
    k = np.zeros((3, 3, 3))
    k[1, 1, 1] = 7
    for idx in [(0, 1, 1), (2, 1, 1), (1, 0, 1), (1, 2, 1), (1, 1, 0), (1, 1, 2)]:
        k[idx] = -1
    ref = ndimage.convolve(g.astype(np.float64), k, mode="nearest")
    np.testing.assert_allclose(pvc.sharpen(g), ref, atol=1e-5)
    np.testing.assert_allclose(pvc.sharpen(np.full((8, 8, 8), 2.0)), 2.0, atol=1e-6)
    with pytest.raises(ValueError, match="method"):
        pvc.sharpen(g, "median")


# ------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------


def test_mask_validation_messages(phantom):
    _, masks, truth = phantom
    with pytest.raises(ValueError, match="sum to 1"):
        pvc.rbv(truth, masks[..., 1:], 6.0, 2.0)  # background left out
    with pytest.raises(ValueError, match="does not match pet shape"):
        pvc.gtm(truth[:-1], masks, 6.0, 2.0)
    with pytest.raises(ValueError, match="4D"):
        pvc.gtm(truth, masks[..., 0], 6.0, 2.0)
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        pvc.gtm(truth, masks * 2 - 0.5, 6.0, 2.0)
    empty = np.concatenate([masks, np.zeros_like(masks[..., :1])], -1)
    with pytest.raises(ValueError, match="empty"):
        pvc.gtm(truth, empty, 6.0, 2.0)
    cube = np.full((4, 4, 4, 4), 0.25, np.float32)
    with pytest.raises(ValueError, match="ambiguous"):
        pvc.gtm(np.ones((4, 4, 4)), cube, 6.0, 2.0)
    lab4 = np.arange(64).reshape(4, 4, 4) % 4
    onehot4 = np.eye(4, dtype=np.float32)[lab4]
    res = pvc.gtm(np.ones((4, 4, 4)), onehot4, 2.0, 2.0, mask_layout="last")
    np.testing.assert_allclose(res.values, 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="not \\(R,x,y,z\\)"):
        pvc.gtm(truth, masks, 6.0, 2.0, mask_layout="first")
    with pytest.raises(ValueError, match="NaN"):
        pvc.rbv(np.where(truth > 2, np.nan, truth), masks, 6.0, 2.0)
    with pytest.raises(ValueError, match="n_iter"):
        pvc.iterative_yang(truth, masks, 6.0, 2.0, n_iter=0)
    with pytest.raises(ValueError, match="fwhm_mm"):
        pvc.richardson_lucy(truth, (6.0, 6.0), 2.0)
