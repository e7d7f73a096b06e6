"""Domain-randomised PVC examples and the out-of-distribution PVC bench's independent simulator."""

from __future__ import annotations

import numpy as np
import pytest

from qmri.physics.pet import FWHM_TO_SIGMA, cerebellar_gm_mask


@pytest.fixture(scope="module")
def volume():
    from qmri.models.pvcnet.data import make_volume

    return make_volume(30001, 4.0)


def test_independent_scanner_blur_has_the_stated_psf():
    """An impulse blurred by the OOD scanner keeps its total and has, per axis, the second moment of
    the 92 % core + 8 % tail mixture: 0.92 s^2 + 0.08 (3 s)^2 with s = FWHM / 2.3548 (f, f, 1.15 f)."""
    from qmri.bench.pvc_ood import AXIAL_FACTOR, TAIL_FACTOR, TAIL_WEIGHT, scanner_blur

    n = 81
    imp = np.zeros((n, n, n))
    imp[40, 40, 40] = 1.0
    vox = (2.0, 2.0, 1.0)
    out = scanner_blur(imp, vox, 6.0)
    assert out.sum() == pytest.approx(1.0, abs=1e-6)
    x = np.arange(n) - 40.0
    for axis, fwhm in enumerate((6.0, 6.0, 6.0 * AXIAL_FACTOR)):
        profile = out.sum(axis=tuple(a for a in range(3) if a != axis))
        m2 = float((profile * (x * vox[axis]) ** 2).sum())
        s = fwhm * FWHM_TO_SIGMA
        assert m2 == pytest.approx((1 - TAIL_WEIGHT) * s**2 + TAIL_WEIGHT * (TAIL_FACTOR * s) ** 2, rel=0.02)


def test_independent_noise_is_poisson_level_and_correlated():
    from qmri.bench.pvc_ood import poisson_noise

    rng = np.random.default_rng(0)
    flat = np.full((64, 64, 64), 1.0)
    noisy = poisson_noise(flat, rng)
    d = noisy - flat
    assert d.std() == pytest.approx(0.05, rel=0.05)  # 5 % at SUV 1, variance kept by the filter
    assert abs(d.mean()) < 0.002
    lag1 = float(np.corrcoef(d[1:].ravel(), d[:-1].ravel())[0, 1])
    assert lag1 > 0.3  # a reconstruction's noise texture, not white noise
    assert poisson_noise(np.full((32, 32, 32), 4.0), rng).std() == pytest.approx(0.05 * 2.0, rel=0.1)  # sd ~ sqrt(signal)


def test_independent_activity_reference_sites_and_lesions(volume):
    from qmri.anatomy.labels import LABEL
    from qmri.bench.pvc_ood import INDEPENDENT_SUVR, independent_activity
    from qmri.physics.pet import suvr

    vox = (volume.voxel_size_mm,) * 3
    pos, sites, cereb, hot, cold = independent_activity(volume.probseg, volume.labels, vox, True, np.random.default_rng(1))
    neg, *_ = independent_activity(volume.probseg, volume.labels, vox, False, np.random.default_rng(1))
    assert cereb.any() and sites.any() and cold.any() and all(h.any() for h in hot)
    assert not (cold & (hot[0] | hot[1])).any() and not (hot[0] & hot[1]).any()
    # the SUVR reference: cerebellar voxels are the table's partial-volume mixture with GM at exactly 1.0
    table = np.zeros(volume.probseg.shape[-1])
    for name, v in INDEPENDENT_SUVR.items():
        table[LABEL[name]] = v
    table[LABEL["cortical_gm"]] = 1.0
    ref = cereb & ~cold & ~hot[0] & ~hot[1]
    assert ref.sum() > 20 and np.allclose(pos[ref], (volume.probseg @ table)[ref], atol=1e-5)
    assert suvr(pos, sites, cereb) > suvr(neg, sites, cereb) + 0.3
    assert np.median(pos[cold]) < 0.6 * np.median(neg[~cold & volume.mask])  # cold lesion x 0.35


def test_ood_goals_need_both_metrics_against_both_deconvolutions():
    from qmri.bench.pvc_ood import _goals

    def rows(f, net_rmse, net_ssim):
        base = {"case": "2 mm", "FWHM_mm": f}
        return [
            dict(base, method="Van Cittert", RMSE_vs_truth=0.12, SSIM_vs_truth=0.83),
            dict(base, method="Richardson-Lucy", RMSE_vs_truth=0.13, SSIM_vs_truth=0.82),
            dict(base, method="PVCNet", RMSE_vs_truth=net_rmse, SSIM_vs_truth=net_ssim),
            dict(base, method="PVCNet-FWHM", RMSE_vs_truth=0.2, SSIM_vs_truth=0.5),
        ]

    g = _goals(rows(5.0, 0.11, 0.85) + rows(6.5, 0.11, 0.825) + rows(8.0, 0.125, 0.9))
    met = {(r["network"], r["FWHM_mm"]): r["met"] for r in g}
    assert met == {("PVCNet", 5.0): True, ("PVCNet", 6.5): False, ("PVCNet", 8.0): False, ("PVCNet-FWHM", 5.0): False, ("PVCNet-FWHM", 6.5): False, ("PVCNet-FWHM", 8.0): False}


def test_randomised_examples_are_reproducible_and_varied(volume):
    from qmri.models.pvcnet.data_randomised import AXIAL_RANGE, FWHM_RANGE_MM, random_example

    a = random_example(volume, np.random.default_rng(5))
    b = random_example(volume, np.random.default_rng(5))
    for x, y in zip(a[:2], b[:2]):
        assert np.array_equal(x, y)
    assert a[2] == b[2]
    ratios, fwhms = [], []
    wm, gm = volume.probseg[..., 3] > 0.95, (volume.probseg[..., 2] > 0.95) & cerebellar_gm_mask(volume.labels, volume.voxel_size_mm)
    for seed in range(8):
        pet, act, fwhm = random_example(volume, np.random.default_rng(seed))
        assert pet.shape == act.shape == volume.mask.shape and np.isfinite(pet).all() and act.min() >= 0
        fwhms.append(fwhm)
        ratios.append(np.median(act[wm]) / np.median(act[gm]))
    assert min(fwhms) >= FWHM_RANGE_MM[0] and max(fwhms) <= FWHM_RANGE_MM[1] * (2 + AXIAL_RANGE[1]) / 3
    assert max(ratios) - min(ratios) > 0.4  # the WM/GM contrast is drawn, not fixed


def test_randomised_rbv_target_and_recipe_validation(volume):
    from qmri.classical.pvc import rbv
    from qmri.models.pvcnet.data import PVCVolume
    from qmri.models.pvcnet.data_randomised import random_example
    from qmri.models.pvcnet.train import PVCRecipe

    pet, tgt, fwhm = random_example(volume, np.random.default_rng(3), target="rbv")
    # the RBV target uses the drawn per-axis PSF; recomputing with the mean FWHM differs only slightly
    approx = np.asarray(rbv(pet, volume.seg, fwhm, volume.voxel_size_mm, mask_layout="last"))
    m = volume.mask
    assert np.sqrt(np.mean((tgt[m] - approx[m]) ** 2)) < 0.1 * np.sqrt(np.mean(tgt[m] ** 2))
    study = PVCVolume(subject="s", voxel_size_mm=4.0, mask=volume.mask, seg=volume.seg, pet=pet, fwhm_mm=fwhm, target=tgt)
    with pytest.raises(ValueError, match="phantom validation"):
        PVCRecipe([volume], [study], patch=16, channels=(4, 8), strides=(2,), target="activity", randomised=0.5)
    with pytest.raises(ValueError, match="fraction"):
        PVCRecipe([volume], [volume], patch=16, channels=(4, 8), strides=(2,), target="activity", randomised=1.5)
    r = PVCRecipe([volume], [volume], patch=16, channels=(4, 8), strides=(2,), target="activity", randomised=1.0)
    assert len(r.val_random) == 2 and r.config()["fwhm_range_mm"] == [4.0, 9.0]
    batch = next(r.batches(np.random.default_rng(0), steps=1, batch_size=2))
    assert batch["x"].shape == (2, 1, 16, 16, 16) and batch["y"].shape == (2, 1, 16, 16, 16)
