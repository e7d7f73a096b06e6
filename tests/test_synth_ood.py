"""The bias-field and noise options of the CT / T2w simulation used by the synthesis OOD bench."""

from types import SimpleNamespace

import numpy as np
import pytest

from qmri.anatomy.labels import LABEL
from qmri.physics.ct_mr import ct_hu, t2w_mr
from qmri.simulate.synthesis import simulate_synthesis


def _toy():
    """A small cylindrical head: scalp, skull, CSF, GM and a uniform WM core (one-hot, 2 mm)."""
    n = (40, 40, 10)
    idx = np.indices(n).astype(float)
    r = np.hypot(idx[0] - 19.5, idx[1] - 19.5)
    lab = np.zeros(n, np.uint8)
    for radius, name in ((18, "soft_tissue"), (16, "bone"), (14, "csf"), (13, "cortical_gm"), (11, "wm")):
        lab[r < radius] = LABEL[name]
    core = r < 9  # uniform WM away from partial volumes
    return SimpleNamespace(labels=lab, probseg=None, lesions=None, voxel_size_mm=2.0, subject_id="toy", seed=1), core


def test_defaults_reproduce_the_previous_simulation_bit_for_bit():
    s, _ = _toy()
    mr, ct = simulate_synthesis(s, np.random.default_rng(7))
    # the body simulate_synthesis had before the new keyword arguments
    rng = np.random.default_rng(7)
    ct_old = ct_hu(s.labels, s.probseg, s.lesions, rng, 2.0)
    mr_old = t2w_mr(s.labels, s.probseg, s.lesions, rng, 2.0, snr=30.0)
    assert np.array_equal(ct.image, ct_old) and np.array_equal(mr.image, mr_old)
    mr2, ct2 = simulate_synthesis(s, np.random.default_rng(7), 30.0, ct_noise_sd_hu=5.0, bias_amplitude=0.15, bias_order=2)
    assert np.array_equal(mr2.image, mr.image) and np.array_equal(ct2.image, ct.image)
    assert "bias_amplitude" not in mr.sidecar  # default sidecars unchanged
    assert ct.sidecar["noise_sd_hu"] == 5.0


@pytest.mark.parametrize("sd", [5.0, 10.0, 20.0])
def test_ct_noise_sd_in_a_uniform_region_follows_the_request(sd):
    s, core = _toy()
    _, ct = simulate_synthesis(s, np.random.default_rng(3), ct_noise_sd_hu=sd)
    assert ct.sidecar["noise_sd_hu"] == sd
    measured = float(ct.image[core].std())
    assert measured == pytest.approx(sd, rel=0.06)


def test_t2w_noise_sd_scales_with_the_requested_snr():
    s, core = _toy()
    sds = {}
    for snr in (30.0, 15.0):
        r = t2w_mr(s.labels, None, None, np.random.default_rng(4), 2.0, snr=snr, return_all=True)
        resid = (r.image - r.noiseless)[core]
        sds[snr] = float(resid.std())
        wm_mean = float(r.noiseless[s.labels == LABEL["wm"]].mean())
        assert r.noise_sigma == pytest.approx(wm_mean / snr, rel=1e-5)
        assert sds[snr] == pytest.approx(r.noise_sigma, rel=0.08)
    assert sds[15.0] / sds[30.0] == pytest.approx(2.0, rel=0.08)
    mr, _ = simulate_synthesis(s, np.random.default_rng(4), 15.0)
    assert mr.sidecar["snr"] == 15.0


def _quadratic_residual(log_field):
    """RMS of ``log_field`` minus its least-squares fit by a full quadratic polynomial in x, y, z."""
    axes = [np.linspace(-1, 1, n) for n in log_field.shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    terms = [np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z]
    a = np.stack([t.ravel() for t in terms], 1)
    coef, *_ = np.linalg.lstsq(a, log_field.ravel(), rcond=None)
    return float(np.sqrt(np.mean((a @ coef - log_field.ravel()) ** 2)))


def test_bias_amplitude_and_order_change_the_field_as_requested():
    s, _ = _toy()
    fields = {}
    for amp, order in ((0.15, 2), (0.30, 2), (0.30, 3)):
        r = t2w_mr(s.labels, None, None, np.random.default_rng(5), 2.0, snr=None, bias_amplitude=amp, bias_order=order, return_all=True)
        lf = np.log(r.bias_field.astype(np.float64))
        assert np.abs(lf).max() == pytest.approx(np.log1p(amp), rel=1e-4)  # the field reaches 1+a or 1/(1+a)
        fields[amp, order] = (lf, r.tissue)
    assert all(np.array_equal(t, fields[0.15, 2][1]) for _, t in fields.values())  # the tissue is untouched
    # same polynomial, twice the log-amplitude (log1p(0.30) / log1p(0.15))
    np.testing.assert_allclose(fields[0.30, 2][0], fields[0.15, 2][0] * np.log1p(0.30) / np.log1p(0.15), atol=1e-5)
    # order 2 is a quadratic exactly; order 3 has cubic terms a quadratic cannot fit (shorter spatial scale)
    assert _quadratic_residual(fields[0.30, 2][0]) < 1e-5
    assert _quadratic_residual(fields[0.30, 3][0]) > 0.02 * np.log1p(0.30)
    mr, _ = simulate_synthesis(s, np.random.default_rng(5), bias_amplitude=0.30, bias_order=3)
    assert (mr.sidecar["bias_amplitude"], mr.sidecar["bias_order"]) == (0.30, 3)


def test_randomised_synthesis_physics_is_reproducible_and_in_the_networks_units():
    """Domain-randomised variants (qmri.models.synthnet.data_randomised): physics within the stated
    ranges, reproducible from the seed, the T2w rescaled to the standard protocol's CSF level, the CT
    noise as drawn, and the tissue contrast varying between draws."""
    from qmri.anatomy.labels import N_CLASSES
    from qmri.models.synthnet.data_randomised import RANGES, draw_physics, randomised_images

    toy, core = _toy()
    toy.probseg = np.eye(N_CLASSES, dtype=np.float32)[toy.labels]
    standard = t2w_mr(toy.labels, toy.probseg, None, 0, 2.0, bias_field=False, snr=None, mr_cv=0.0)
    csf = toy.labels == LABEL["csf"]
    ratios = []
    for seed in range(6):
        p = draw_physics(np.random.default_rng(seed))
        for k in ("tr_ms", "te_ms", "snr", "bias_amplitude", "ct_noise_sd_hu"):
            assert RANGES[k][0] <= p[k] <= RANGES[k][1]
        mr, ct = randomised_images(toy, p, np.random.default_rng(100 + seed))
        mr2, ct2 = randomised_images(toy, p, np.random.default_rng(100 + seed))
        assert np.array_equal(mr, mr2) and np.array_equal(ct, ct2)
        assert np.median(mr[csf]) == pytest.approx(np.median(standard[csf]), rel=0.02)
        assert ct[core].std() == pytest.approx(p["ct_noise_sd_hu"], rel=0.2)
        ratios.append(np.median(mr[core]) / np.median(mr[csf]))
    assert max(ratios) - min(ratios) > 0.05  # WM/CSF contrast is drawn, not fixed


def test_randomised_synthesis_variants_are_cached_per_seed_and_variant(tmp_path):
    from qmri.models.synthnet.data_randomised import randomised_volumes

    a = randomised_volumes(50001, 2, 6.0, tmp_path)
    assert [v.name for v in a] == ["phantom-50001-random0", "phantom-50001-random1"]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["synth_50001_6mm_random0.npz", "synth_50001_6mm_random1.npz"]
    assert not np.array_equal(a[0].mr, a[1].mr) and a[0].mr.shape == a[1].mr.shape == a[0].head.shape
    b = randomised_volumes(50001, 2, 6.0, tmp_path)  # from the cache
    assert all(np.array_equal(x.mr, y.mr) and np.array_equal(x.ct, y.ct) for x, y in zip(a, b))
