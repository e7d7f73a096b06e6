"""Realistic PVC segmentations (class errors + rigid PET-MR misregistration) on a small folded phantom."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from qmri.classical import pvc
from qmri.physics.pet import simulate_pet
from qmri.physics.pet_segmentation import SegmentationErrors, dice, realistic_segmentation, rotation_matrix

VOX = 2.0  # mm
N = 48  # voxels per axis (96 mm)
NO_CLASS_ERRORS = SegmentationErrors(gm_wm_shift_sd_mm=0.0, pial_shift_sd_mm=0.0, blur_weight_max=0.0, mislabel_fraction=0.0)
VALUES = np.array([2.0, 1.0, 0.05, 0.3])  # SUV of GM, WM, CSF, other (amyloid-positive-like contrast)


def folded_phantom(n=N, vox=VOX, sub=3):
    """(x, y, z, 4) GM/WM/CSF/other partial volumes of a 'brain': a WM core whose surface is folded
    (radius 28 +- 5 mm), a 3.5 mm GM ribbon, 4 mm of CSF, background outside. Partial volumes by
    ``sub``^3 supersampling."""
    h = vox / sub
    ax = (np.arange(n * sub) - n * sub / 2 + 0.5) * h
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij", sparse=True)
    r = np.sqrt(x**2 + y**2 + z**2) + 1e-9
    theta, phi = np.arccos(z / r), np.arctan2(y, x)
    wm_r = 28.0 + 5.0 * np.sin(5 * theta) * np.sin(4 * phi)
    lab = np.full(r.shape, 3, np.int8)
    lab[r < wm_r + 7.5] = 2
    lab[r < wm_r + 3.5] = 0
    lab[r < wm_r] = 1
    onehot = np.eye(4, dtype=np.float32)[lab]
    return onehot.reshape(n, sub, n, sub, n, sub, 4).mean(axis=(1, 3, 5))


@pytest.fixture(scope="module")
def truth():
    return folded_phantom()


def gm_centroid_mm(seg):
    return np.array(ndimage.center_of_mass(seg[..., 0])) * VOX


def test_reproducible_from_seed(truth):
    a = realistic_segmentation(truth, VOX, np.random.default_rng(7))
    b = realistic_segmentation(truth, VOX, np.random.default_rng(7))
    c = realistic_segmentation(truth, VOX, np.random.default_rng(8))
    np.testing.assert_array_equal(a.seg, b.seg)
    np.testing.assert_array_equal(a.translation_mm, b.translation_mm)
    assert a.rotation_deg == b.rotation_deg
    assert np.abs(a.seg - c.seg).max() > 0.1
    assert not np.allclose(a.translation_mm, c.translation_mm)


def test_probabilities_stay_valid(truth):
    r = realistic_segmentation(truth, VOX, np.random.default_rng(1))
    assert r.seg.shape == truth.shape and r.seg.dtype == np.float32
    assert r.seg.min() >= 0.0
    np.testing.assert_allclose(r.seg.sum(-1), 1.0, atol=1e-5)
    # the drawn misregistration lies in the documented ranges
    e = SegmentationErrors()
    assert e.translation_mm[0] - 1e-9 <= np.linalg.norm(r.translation_mm) <= e.translation_mm[1] + 1e-9
    assert e.rotation_deg[0] - 1e-9 <= abs(r.rotation_deg) <= e.rotation_deg[1] + 1e-9
    assert r.mislabelled_voxels > 0


def test_identity_without_errors_or_motion(truth):
    r = realistic_segmentation(truth, VOX, np.random.default_rng(3), NO_CLASS_ERRORS, translation_mm=(0, 0, 0), rotation_deg=0.0)
    np.testing.assert_allclose(r.seg, truth, atol=1e-5)
    assert dice(r.seg, truth) == pytest.approx(1.0)


@pytest.mark.parametrize("t", [(1.5, 0.0, 0.0), (0.0, -1.0, 1.2), (1.0, 1.0, -1.0)])
def test_gm_moves_by_the_requested_translation(truth, t):
    t = np.array(t)
    before = gm_centroid_mm(truth)
    pure = realistic_segmentation(truth, VOX, np.random.default_rng(5), NO_CLASS_ERRORS, translation_mm=t, rotation_deg=0.0)
    np.testing.assert_allclose(gm_centroid_mm(pure.seg) - before, t, atol=0.05)
    # with the class errors (the same draws, whatever the motion) and a 1.5 deg rotation about the
    # brain centroid, the GM still moves by ~ t relative to the unmoved erroneous segmentation
    still = realistic_segmentation(truth, VOX, np.random.default_rng(5), translation_mm=(0, 0, 0), rotation_deg=0.0)
    full = realistic_segmentation(truth, VOX, np.random.default_rng(5), translation_mm=t, rotation_deg=1.5)
    assert np.linalg.norm(gm_centroid_mm(full.seg) - gm_centroid_mm(still.seg) - t) < 0.3


def test_rotation_about_the_centroid_matches_the_rotation_matrix(truth):
    """A blob ~20 mm from the rotation centre moves by |(R - I) d| = 2 * 20 mm * sin(1 deg) = 0.7 mm for 2 deg."""
    blob = np.zeros(truth.shape[:3])
    blob[22:27, 22:27, 37:42] = 1.0  # small cube about 30 mm above the centre along z
    seg = np.stack([blob, np.zeros_like(blob), np.zeros_like(blob), 1 - blob], -1)
    seg[22:26, 22:26, 8:12, 2] = 1.0  # a CSF blob below, so the brain centroid is between them
    seg[22:26, 22:26, 8:12, 3] = 0.0
    r = realistic_segmentation(seg, VOX, np.random.default_rng(0), NO_CLASS_ERRORS, translation_mm=(0, 0, 0), rotation_deg=2.0, rotation_axis=(1, 0, 0))
    c = r.centre_mm
    before = np.array(ndimage.center_of_mass(seg[..., 0])) * VOX
    expected = c + rotation_matrix((1, 0, 0), 2.0) @ (before - c)
    after = np.array(ndimage.center_of_mass(r.seg[..., 0])) * VOX
    assert np.linalg.norm(expected - before) > 0.5
    np.testing.assert_allclose(after, expected, atol=0.1)


def test_realistic_segmentation_differs_measurably_from_the_truth(truth):
    dices = []
    for seed in range(3):
        r = realistic_segmentation(truth, VOX, np.random.default_rng(seed))
        dices.append(dice(r.seg, truth))
    assert all(0.6 < d < 0.98 for d in dices), dices
    # class errors alone (no motion) also lower the overlap
    still = realistic_segmentation(truth, VOX, np.random.default_rng(0), translation_mm=(0, 0, 0), rotation_deg=0.0)
    assert 0.6 < dice(still.seg, truth) < 0.99


@pytest.mark.parametrize("fwhm", [5.0, 8.0])
def test_rbv_with_a_realistic_segmentation_is_worse_against_the_truth(truth, fwhm):
    act = (truth * VALUES).sum(-1)
    pet = simulate_pet(act, VOX, fwhm, np.random.default_rng(11), noise_level=0.05)
    brain = truth[..., :3].sum(-1) > 0.5

    def err(seg):
        out = pvc.rbv(pet, seg, fwhm, VOX, mask_layout="last")
        return float(np.sqrt(np.mean((out - act)[brain] ** 2)))

    ideal = err(truth)
    real = err(realistic_segmentation(truth, VOX, np.random.default_rng(2)).seg)
    blurred = float(np.sqrt(np.mean((pet - act)[brain] ** 2)))
    assert ideal < 0.6 * blurred  # the perfect segmentation corrects most of the partial volume
    assert real > 1.3 * ideal and real > ideal + 0.03, (ideal, real, blurred)
