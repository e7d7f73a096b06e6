"""Amyloid PET forward model: PSF width and normalisation, tracer activity, noise, PVC masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.layers import separable_filtering
from monai.networks.layers.convutils import gaussian_1d
from scipy.optimize import curve_fit

from qmri.anatomy.labels import LABEL, LESION_CODE, N_CLASSES
from qmri.physics import pet

VOX = 2.0


# ------------------------------------------------------------------------------------------
# PSF
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fwhm, vox", [((5.0, 6.0, 7.0), (2.0, 1.5, 1.0)), ((8.0, 4.0, 6.0), (1.0, 2.0, 2.5))])
def test_psf_fwhm_on_point_source_matches_request(fwhm, vox):
    n = 41
    v = np.zeros((n, n, n), np.float32)
    v[20, 20, 20] = 1.0
    b = pet.gaussian_psf(v, fwhm, vox)
    assert b.sum() == pytest.approx(1.0, abs=1e-5)
    for ax in range(3):
        pos = (np.arange(n) - 20) * vox[ax]  # mm
        # second moment of the projected profile
        prof = b.sum(axis=tuple(i for i in range(3) if i != ax))
        fwhm_moment = 2.3548200 * np.sqrt((prof * pos**2).sum() / prof.sum())
        # Gaussian fit of the line profile through the peak
        line = np.take(b[tuple(slice(None) if i == ax else slice(20, 21) for i in range(3))].squeeze(), range(n))
        popt, _ = curve_fit(lambda x, a, s: a * np.exp(-0.5 * x**2 / s**2), pos, line, p0=(line.max(), 2.0))
        fwhm_fit = 2.3548200 * abs(popt[1])
        assert fwhm_moment == pytest.approx(fwhm[ax], rel=0.02)
        assert fwhm_fit == pytest.approx(fwhm[ax], rel=0.02)


def test_psf_preserves_total_activity_and_constants():
    rng = np.random.default_rng(1)
    v = np.zeros((40, 44, 36), np.float32)
    v[12:28, 14:30, 10:26] = rng.uniform(0.5, 2.0, (16, 16, 16))  # >= 4 sigma from every edge
    b = pet.gaussian_psf(v, (6.0, 6.0, 6.0), VOX)
    assert b.sum() == pytest.approx(v.sum(), rel=1e-5)
    assert b.max() < v.max()
    const = np.full((20, 22, 24), 3.5, np.float32)
    # replicate boundary (PETPVC/ITK zero-flux Neumann): constant everywhere, borders included
    np.testing.assert_allclose(pet.gaussian_psf(const, 7.0, VOX), 3.5, rtol=1e-6)
    # zero padding: constant only away from the borders (> 4 sigma = 4.8 voxels)
    z = pet.gaussian_psf(const, 7.0, VOX, boundary="zeros")
    np.testing.assert_allclose(z[6:-6, 6:-6, 6:-6], 3.5, rtol=1e-6)
    assert z[0, 0, 0] < 3.5 * 0.3  # corner keeps ~0.63^3 of the mass


@pytest.mark.parametrize("boundary", ["replicate", "zeros", "reflect", "circular"])
def test_psf_equals_monai_separable_filtering(boundary):
    x = torch.rand(2, 20, 23, 26, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fwhm, vox = (5.0, 6.0, 7.0), (2.0, 1.5, 1.0)
    kernels = [k.double() for k in pet.gaussian_kernels_1d(fwhm, vox)]
    ref = separable_filtering(x[:, None], kernels, mode=boundary)[:, 0]
    out = pet.gaussian_psf(x, fwhm, vox, boundary=boundary)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    # channel-first 4D == per-channel 3D; numpy in -> numpy out
    np.testing.assert_allclose(pet.gaussian_psf(x[1].numpy(), fwhm, vox, boundary=boundary), ref[1].numpy(), atol=1e-12)


@pytest.mark.parametrize("fwhm, vox", [(5.0, 2.0), (6.0, 1.0), (7.0, 1.5), (2.0, 2.5)])
def test_kernels_equal_monai_sampled_gaussian(fwhm, vox):
    sigma = fwhm / 2.3548200450309493 / vox
    ref = gaussian_1d(torch.tensor(sigma), truncated=4.0, approx="sampled", normalize=True)
    k = pet.gaussian_kernels_1d(fwhm, vox)[0]
    assert k.shape == ref.shape
    torch.testing.assert_close(k.float(), ref, rtol=0, atol=1e-6)


def test_psf_zero_fwhm_axis_and_bad_input():
    v = np.random.default_rng(2).random((10, 11, 12)).astype(np.float32)
    b = pet.gaussian_psf(v, (0.0, 0.0, 0.0), VOX)
    np.testing.assert_array_equal(b, v)
    with pytest.raises(ValueError, match="fwhm_mm"):
        pet.gaussian_psf(v, (1.0, 2.0), VOX)
    with pytest.raises(ValueError, match="voxel_size_mm"):
        pet.gaussian_psf(v, 6.0, 0.0)
    with pytest.raises(ValueError, match="3D"):
        pet.gaussian_psf(v[0], 6.0, VOX)


# ------------------------------------------------------------------------------------------
# Tracer activity
# ------------------------------------------------------------------------------------------


def head_phantom(n=(56, 60, 56), vox=VOX):
    """Nested-ellipsoid head: scalp, skull, CSF, cortex, WM, ventricle, caudate, thalamus, dentate."""
    idx = np.indices(n).astype(float)
    x, y, z = ((idx[i] - n[i] / 2 + 0.5) * vox for i in range(3))  # mm, RAS
    r = np.sqrt((x / 54) ** 2 + (y / 58) ** 2 + (z / 52) ** 2)
    lab = np.zeros(n, np.int64)
    lab[r < 1.0] = LABEL["soft_tissue"]
    lab[r < 0.93] = LABEL["bone"]
    lab[r < 0.86] = LABEL["csf"]
    lab[r < 0.82] = LABEL["cortical_gm"]
    lab[r < 0.72] = LABEL["wm"]
    lab[np.sqrt((x / 8) ** 2 + (y / 16) ** 2 + (z / 8) ** 2) < 1] = LABEL["csf"]
    for sx in (-1, 1):
        lab[np.sqrt((x - sx * 12) ** 2 + (y - 10) ** 2 + (z - 6) ** 2) < 5] = LABEL["caudate"]
        lab[np.sqrt((x - sx * 9) ** 2 + (y + 6) ** 2 + z**2) < 6] = LABEL["thalamus"]
        lab[np.sqrt((x - sx * 12) ** 2 + (y + 26) ** 2 + (z + 20) ** 2) < 4] = LABEL["dentate"]
    return lab, (x, y, z)


@pytest.fixture(scope="module")
def head():
    return head_phantom()


def _cortex_masks(lab):
    ref = pet.cerebellar_gm_mask(lab, VOX)
    cortex = (lab == LABEL["cortical_gm"]) & ~ref
    return cortex, ref


def test_amyloid_negative_vs_positive_suvr(head):
    lab, _ = head
    cortex, ref = _cortex_masks(lab)
    assert ref.sum() > 50 and cortex.sum() > 10 * ref.sum() / 2
    neg = pet.amyloid_activity(lab, amyloid_positive=False, rng=7)
    posi = pet.amyloid_activity(lab, amyloid_positive=True, rng=7)
    # reference region is exactly SUV 1
    np.testing.assert_allclose(neg[ref], 1.0, atol=1e-6)
    np.testing.assert_allclose(posi[ref], 1.0, atol=1e-6)
    s_neg, s_pos = pet.suvr(neg, cortex, ref), pet.suvr(posi, cortex, ref)
    assert s_neg == pytest.approx(1.0, abs=0.05)
    assert s_pos == pytest.approx(2.0, abs=0.2)
    assert 0.02 < neg[cortex].std() < 0.08  # regional variation +- 0.05
    assert 0.1 < posi[cortex].std() < 0.3  # +- 0.2
    wm = lab == LABEL["wm"]
    assert 1.6 * 0.9 < neg[wm].mean() < 2.0 * 1.1 and np.all(neg[wm] > neg[cortex].mean())
    np.testing.assert_allclose(neg[lab == LABEL["csf"]], 0.05, atol=1e-6)
    np.testing.assert_allclose(neg[lab == LABEL["caudate"]], 1.1, atol=1e-6)
    assert neg[lab == LABEL["bone"]].max() < 0.5 and neg[lab == LABEL["soft_tissue"]].max() < 0.5
    # WM binding does not depend on amyloid status for the same seed
    np.testing.assert_array_equal(neg[wm], posi[wm])


def test_amyloid_activity_reproducible_for_seed(head):
    lab, _ = head
    a = pet.amyloid_activity(lab, amyloid_positive=True, rng=3)
    b = pet.amyloid_activity(lab, amyloid_positive=True, rng=np.random.default_rng(3))
    c = pet.amyloid_activity(lab, amyloid_positive=True, rng=4)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.05
    assert a.dtype == np.float32 and a.shape == lab.shape


def test_amyloid_lesion_code_4_limits_elevation(head):
    lab, (x, y, z) = head
    cortex, ref = _cortex_masks(lab)
    lesions = np.zeros_like(lab)
    lesions[cortex & (z > 25)] = LESION_CODE["amyloid_positive_cortex"]
    lesions[(lab == LABEL["wm"]) & (np.sqrt((x - 20) ** 2 + y**2 + z**2) < 5)] = LESION_CODE["infarct"]
    act = pet.amyloid_activity(lab, lesions=lesions, amyloid_positive=True, rng=11)
    hot = lesions == LESION_CODE["amyloid_positive_cortex"]
    far = cortex & (z < 5)  # > 2 voxels from the code-4 band
    assert pet.suvr(act, hot, ref) == pytest.approx(2.0, abs=0.2)
    assert pet.suvr(act, far, ref) == pytest.approx(1.0, abs=0.05)
    infarct = lesions == LESION_CODE["infarct"]
    wm_ok = (lab == LABEL["wm"]) & ~infarct
    assert act[infarct].mean() == pytest.approx(0.3 * act[wm_ok].mean(), rel=0.05)
    # a negative subject ignores code 4
    neg = pet.amyloid_activity(lab, lesions=lesions, amyloid_positive=False, rng=11)
    assert pet.suvr(neg, hot, ref) == pytest.approx(1.0, abs=0.05)


def test_amyloid_partial_volume_is_linear_mixture(head):
    lab, _ = head
    onehot = np.eye(N_CLASSES, dtype=np.float32)[lab]
    shifted = np.eye(N_CLASSES, dtype=np.float32)[np.roll(lab, 1, axis=0)]
    mix = 0.3 * onehot + 0.7 * shifted
    a1 = pet.amyloid_activity(lab, onehot, amyloid_positive=True, rng=5)
    a2 = pet.amyloid_activity(lab, shifted, amyloid_positive=True, rng=5)
    am = pet.amyloid_activity(lab, mix, amyloid_positive=True, rng=5)
    np.testing.assert_allclose(am, 0.3 * a1 + 0.7 * a2, atol=1e-5)
    with pytest.raises(ValueError, match="probseg"):
        pet.amyloid_activity(lab, onehot[..., :4], rng=5)


def test_suvr_closed_form():
    a = np.zeros((4, 4, 4))
    a[:2] = 3.0
    a[2:] = 1.5
    region = np.zeros(a.shape, bool)
    region[:2] = True
    assert pet.suvr(a, region, ~region) == pytest.approx(2.0)
    w = np.where(region, 0.5, 0.0)
    assert pet.suvr(torch.as_tensor(a), w, ~region) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="empty"):
        pet.suvr(a, np.zeros_like(region), region)


# ------------------------------------------------------------------------------------------
# Scanner simulation and segmentation masks
# ------------------------------------------------------------------------------------------


def test_simulate_pet_blur_and_noise_model():
    act = np.zeros((40, 40, 40), np.float32)
    act[:, :20] = 1.0
    act[:, 20:] = 4.0
    clean = pet.simulate_pet(act, VOX, 6.0, rng=0, noise_level=0.0)
    np.testing.assert_allclose(clean, pet.gaussian_psf(act, 6.0, VOX), atol=1e-6)
    noisy = pet.simulate_pet(act, VOX, 6.0, rng=0, noise_level=0.1)
    np.testing.assert_array_equal(noisy, pet.simulate_pet(act, VOX, 6.0, rng=0, noise_level=0.1))
    r1 = (noisy - clean)[:, :12]  # SUV 1 region, away from the step
    r4 = (noisy - clean)[:, 28:]  # SUV 4 region
    assert r1.std() == pytest.approx(0.1, rel=0.03)  # relative sd noise_level at SUV 1
    assert r4.std() == pytest.approx(0.2, rel=0.03)  # sigma ~ sqrt(signal)
    assert abs(r1.mean()) < 0.005


def test_segmentation_probabilities_petpvc_layout(head):
    lab, _ = head
    onehot = np.eye(N_CLASSES, dtype=np.float32)[lab]
    probseg = 0.5 * onehot + 0.5 * np.roll(onehot, 1, axis=1)
    seg = pet.segmentation_probabilities(probseg)
    assert seg.shape == (*lab.shape, 4) and pet.PVC_REGIONS == ("gm", "wm", "csf", "other")
    np.testing.assert_allclose(seg.sum(-1), 1.0, atol=1e-6)
    hard = pet.segmentation_probabilities(lab)
    np.testing.assert_array_equal(hard[..., 0] == 1, np.isin(lab, [2, 4, 5, 6, 7, 8, 9, 10]))
    np.testing.assert_array_equal(hard[..., 3] == 1, np.isin(lab, [0, 11, 12, 13, 14]))
    first = pet.segmentation_probabilities(probseg, channel_last=False)
    np.testing.assert_array_equal(np.moveaxis(first, 0, -1), seg)
