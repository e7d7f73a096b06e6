"""Tests of the head CT and T2w MR forward models (qmri.physics.ct_mr)."""

from __future__ import annotations

import numpy as np
import pytest

from qmri.anatomy.labels import LABEL, LESION_CODE, N_CLASSES
from qmri.physics import ct_mr


def make_head(n: int = 64, voxel_mm: float = 2.0, supersample: int = 2):
    """Nested-ellipsoid head (scalp 5 mm, skull 7 mm, CSF 3 mm, cortex 4 mm, WM, ventricle,
    thalami, frontal sinus, superior sagittal sinus, three lesions); probseg by supersampling."""
    m = n * supersample
    h = voxel_mm / supersample
    ax = (np.arange(m) - m / 2 + 0.5) * h
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
    A = np.array([56.0, 60.0, 54.0])

    def inside(shrink, c=(0, 0, 0), a=None):
        a = (A - shrink) if a is None else np.asarray(a, float)
        return ((x - c[0]) / a[0]) ** 2 + ((y - c[1]) / a[1]) ** 2 + ((z - c[2]) / a[2]) ** 2 <= 1.0

    lab = np.full((m, m, m), LABEL["air"], np.int8)
    lab[inside(0)] = LABEL["soft_tissue"]
    lab[inside(5)] = LABEL["bone"]
    lab[inside(12)] = LABEL["csf"]
    lab[inside(15)] = LABEL["cortical_gm"]
    lab[inside(19)] = LABEL["wm"]
    for sx in (-1, 1):
        lab[inside(0, (sx * 11, -6, 2), (7, 10, 7))] = LABEL["thalamus"]
    lab[inside(0, (0, 4, 8), (6, 16, 7))] = LABEL["csf"]
    lab[inside(0, (0, 52, 12), (8, 5, 6)) & (lab == LABEL["bone"])] = LABEL["sinus_air"]
    lab[(np.abs(x) < 3) & (z > 10) & (lab == LABEL["csf"]) & ~inside(13)] = LABEL["venous_blood"]
    prob = np.zeros((n, n, n, N_CLASSES), np.float32)
    for c in range(N_CLASSES):
        prob[..., c] = (lab == c).reshape(n, supersample, n, supersample, n, supersample).mean((1, 3, 5))
    labels = prob.argmax(-1).astype(np.int16)
    axl = (np.arange(n) - n / 2 + 0.5) * voxel_mm
    X, Y, Z = np.meshgrid(axl, axl, axl, indexing="ij")
    les = np.zeros((n, n, n), np.int16)
    for code, c, r in (
        (LESION_CODE["infarct"], (20, 10, 12), 6),
        (LESION_CODE["haemorrhage"], (-20, 10, 12), 5),
        (LESION_CODE["calcification"], (0, -25, -8), 3),
    ):
        les[(X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2 <= r * r] = code
    return labels, prob, les


@pytest.fixture(scope="module")
def head():
    return make_head()


def _pure(labels, prob, les, name):
    return (labels == LABEL[name]) & (prob.max(-1) > 0.99) & (les == 0)


def test_ct_tissue_hu_in_published_ranges(head):
    labels, prob, les = head
    ct = ct_mr.ct_hu(labels, prob, les, rng=3, noise_sd_hu=0.0)
    ranges = {  # REFERENCE.md section 4
        "air": (-1000.5, -999.5),
        "csf": (10, 20),
        "wm": (20, 30),
        "cortical_gm": (37, 45),
        "thalamus": (34, 45),
        "bone": (700, 2000),
    }
    for name, (lo, hi) in ranges.items():
        v = ct[_pure(labels, prob, les, name)]
        assert v.size > 40, name
        assert lo <= v.min() and v.max() <= hi, (name, v.min(), v.max())
    # scalp: between fat (-100..-50) and skin/muscle (~45)
    scalp = ct[_pure(labels, prob, les, "soft_tissue")]
    assert -100 <= scalp.min() and scalp.max() <= 55 and scalp.min() < -10
    # lesions (cores, away from partial volume): infarct 15-20, haemorrhage 60-80, calcification 200-600
    for code, (lo, hi) in ((1, (15, 20)), (2, (60, 80)), (3, (200, 600))):
        v = ct[les == code]
        assert lo <= v.min() and v.max() <= hi, (code, v.min(), v.max())


def test_ct_skull_has_dense_tables_and_diploe(head):
    labels, prob, les = head
    ct = ct_mr.ct_hu(labels, prob, les, rng=0, noise_sd_hu=0.0)
    cort, _ = ct_mr.compartment_fractions(labels, prob, 2.0)
    bone = _pure(labels, prob, les, "bone")
    # outer/inner table voxels (>= 85 % cortical) vs mid-shell voxels (<= 20 % cortical)
    tables, diploe = ct[bone & (cort >= 0.85)], ct[bone & (cort <= 0.2)]
    assert tables.size > 100 and diploe.size > 100
    assert tables.mean() - diploe.mean() > 500.0  # cortical ~1800 vs diploe ~800 HU


def test_ct_partial_volume_is_linear_and_noise_and_clip(head):
    labels, prob, les = head
    means = {k: p.hu for k, p in ct_mr.TISSUE_PROPERTIES.items()}
    ct0 = ct_mr.ct_hu(labels, prob, None, rng=0, noise_sd_hu=0.0, hu_values=means)
    # voxels holding only CSF and cortex: HU = p_csf * 15 + p_gm * 40
    pc, pg = prob[..., LABEL["csf"]], prob[..., LABEL["cortical_gm"]]
    mix = (pc > 0.2) & (pg > 0.2) & (np.abs(pc + pg - 1) < 1e-6)
    assert mix.sum() > 50
    np.testing.assert_allclose(ct0[mix], 15.0 * pc[mix] + 40.0 * pg[mix], atol=1e-3)
    ct = ct_mr.ct_hu(labels, prob, None, rng=0, noise_sd_hu=5.0, hu_values=means)
    wm = _pure(labels, prob, les, "wm")
    assert abs((ct - ct0)[wm].std() - 5.0) < 0.3
    assert ct.min() >= -1024.0 and ct.max() <= 3071.0 and ct.dtype == np.float32


def test_t2w_signal_closed_form_and_ordering(head):
    gm = ct_mr.t2w_signal(0.8, 1820.0, 99.0, 4000.0, 90.0)
    assert gm == pytest.approx(0.8 * (1 - np.exp(-4000 / 1820)) * np.exp(-90 / 99), rel=1e-12)
    labels, prob, les = head
    r = ct_mr.t2w_mr(labels, prob, les, rng=5, return_all=True)
    names = ("csf", "cortical_gm", "wm", "bone", "air")
    mean = {n: r.tissue[_pure(labels, prob, les, n)].mean() for n in names}
    assert mean["csf"] > 1.5 * mean["cortical_gm"] > 1.5 * 1.2 * mean["wm"]
    assert mean["wm"] > 4 * mean["bone"] and mean["bone"] > mean["air"] == 0.0
    fat = ct_mr.tissue_t2w_intensity("fat")
    assert ct_mr.tissue_t2w_intensity("cortical_gm") < fat < ct_mr.tissue_t2w_intensity("csf")


def test_t2w_bias_bounded_smooth_and_rician_noise(head):
    labels, prob, les = head
    r = ct_mr.t2w_mr(labels, prob, les, rng=7, snr=25.0, bias_amplitude=0.15, return_all=True)
    b = r.bias_field
    assert b.min() >= 1 / 1.15 - 1e-5 and b.max() <= 1.15 + 1e-5
    assert min(abs(b.max() - 1.15), abs(b.min() - 1 / 1.15)) < 1e-4  # reaches one bound
    assert np.abs(np.diff(np.log(b), axis=0)).max() < 0.02  # smooth: < 2 % per voxel
    np.testing.assert_allclose(r.noiseless, r.tissue * b, rtol=1e-5)
    air = prob[..., LABEL["air"]] == 1.0
    # Rician with zero signal is Rayleigh: mean sigma * sqrt(pi/2)
    assert r.image[air].mean() == pytest.approx(r.noise_sigma * np.sqrt(np.pi / 2), rel=0.03)
    wm = _pure(labels, prob, les, "wm")
    assert r.noiseless[wm].mean() / r.noise_sigma == pytest.approx(25.0, rel=0.05)
    flat = ct_mr.t2w_mr(labels, prob, les, rng=7, bias_field=False, snr=None, return_all=True)
    assert np.all(flat.bias_field == 1.0) and np.array_equal(flat.image, flat.tissue)


def test_reproducible_for_a_seed_and_validation(head):
    labels, prob, les = head
    a = ct_mr.t2w_mr(labels, prob, les, rng=11)
    b = ct_mr.t2w_mr(labels, prob, les, rng=np.random.default_rng(11))
    c = ct_mr.t2w_mr(labels, prob, les, rng=12)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(ct_mr.ct_hu(labels, None, les, rng=4), ct_mr.ct_hu(labels, None, les, rng=4))
    with pytest.raises(ValueError, match="3D"):
        ct_mr.ct_hu(labels[0], None, None, rng=0)
    with pytest.raises(ValueError, match="probseg"):
        ct_mr.t2w_mr(labels, prob[..., :5], None, rng=0)
    with pytest.raises(ValueError, match="voxel_size_mm"):
        ct_mr.ct_hu(labels, None, None, rng=0, voxel_size_mm=0.0)
