"""Regional OEF (qmri.classical.qq_region): the tied-v region likelihood recovers a region's OEF where
the plain summed profile drifts (the Neyman-Scott problem), with an interval that covers it."""

import numpy as np
import pytest
import torch

from qmri.classical import qq_profile as qp
from qmri.classical import qq_region as qr
from qmri.physics.qq import QQNET_TE_S, YA, add_noise, qbold_magnitude, qq_susceptibility

SIGMA = 0.8 / 100  # echo noise sd: SNR 100 for an S0 of 0.8


def _phantom(rng, shape=(20, 20, 10), oef_in=0.65, oef_out=0.35, v_in_factor=1.0):
    """A box brain with a GM-like and a WM-like half (S0, R2 and v differ) and an 8-voxel cube lesion
    of OEF ``oef_in`` straddling both halves; OEF ``oef_out`` elsewhere. Echoes at SNR 100."""
    x = np.arange(shape[0])[:, None, None] * np.ones(shape)
    gm = x < shape[0] / 2
    lesion = np.zeros(shape, bool)
    lesion[6:14, 6:14, 1:9] = True
    S0 = np.where(gm, 0.85, 0.75) + rng.normal(0, 0.02, shape)
    R2 = np.where(gm, 12.0, 17.0) + rng.normal(0, 2.0, shape)
    v = np.clip(np.where(gm, 0.04, 0.02) * (1 + rng.normal(0, 0.2, shape)), 0.004, 0.08)
    v = np.where(lesion, v * v_in_factor, v)
    cnb = np.where(gm, 0.05, -0.05) + rng.normal(0, 0.03, shape)
    Y = YA * (1 - np.where(lesion, oef_in, oef_out))
    mag = add_noise(qbold_magnitude(S0, R2, Y, v, cnb, QQNET_TE_S), 100, rng, kind="gaussian", sigma=SIGMA)
    chi = qq_susceptibility(Y, v, cnb) + rng.normal(0, 0.005, shape)
    return mag, chi, np.ones(shape, bool), lesion


def _plain_profile_oef(mag, chi, region) -> float:
    """The region's OEF [%] by the plain summed profile (v free per voxel, no tie)."""
    sse = qp.profile_sse(torch.from_numpy(mag[region]), torch.from_numpy(chi[region]), QQNET_TE_S)
    return 100 * qp.OEF_GRID[int(torch.argmin(sse.sum(0)))]


def test_lesion_and_surround_recovered_where_the_plain_summed_profile_compresses_the_contrast():
    rng = np.random.default_rng(0)
    mag, chi, mask, lesion = _phantom(rng)
    res = {r.name: r for r in qr.region_oef(mag, chi, mask, QQNET_TE_S, {"lesion": lesion, "rest": ~lesion})}
    for name, true in (("lesion", 65.0), ("rest", 35.0)):
        r = res[name]
        assert abs(r.oef - true) < min(2 * r.sd, 5.0), (name, r)  # measured: 62.7 (sd 4.5), 33.9 (sd 2.8)
        assert r.ci95[0] <= true <= r.ci95[1], (name, r)
        assert r.informative and r.n_voxels == int((lesion if name == "lesion" else ~lesion).sum())
    contrast = (res["lesion"].oef - res["rest"].oef) / (65.0 - 35.0)
    assert contrast > 0.85, contrast  # measured 0.96
    # the plain summed profile on the same regions: 60 % and 39 % (contrast 0.70; 0.47 on other draws)
    plain = (_plain_profile_oef(mag, chi, lesion) - _plain_profile_oef(mag, chi, ~lesion)) / (65.0 - 35.0)
    assert plain < contrast - 0.2, (plain, contrast)


def test_noise_variance_is_estimated_from_the_data():
    rng = np.random.default_rng(1)
    mag, chi, mask, _ = _phantom(rng, shape=(16, 16, 8))
    var = qr.noise_variance(mag[mask], chi[mask], QQNET_TE_S)
    assert 0.7 < var / SIGMA**2 < 1.4, var / SIGMA**2


def test_a_region_without_blood_is_uninformative_and_left_to_the_prior():
    rng = np.random.default_rng(2)
    mag, chi, mask, lesion = _phantom(rng, v_in_factor=0.0)  # v = 0 in the lesion: no dephasing, no OEF information
    (r,) = qr.region_oef(mag, chi, mask, QQNET_TE_S, {"lesion": lesion})
    assert not r.informative
    assert r.sd > 10.0 and r.ci95[0] <= 100 * qr.PRIOR_OEF[0] <= r.ci95[1], r  # measured sd 14-20 %-points


def test_bad_regions_are_refused_naming_the_problem():
    rng = np.random.default_rng(3)
    mag, chi, mask, lesion = _phantom(rng, shape=(12, 12, 12))
    with pytest.raises(ValueError, match="shape"):
        qr.region_oef(mag, chi, mask, QQNET_TE_S, {"a": lesion[:-1]})
    with pytest.raises(ValueError, match="at least"):
        qr.region_oef(mag, chi, mask, QQNET_TE_S, {"a": np.zeros_like(lesion)})
    with pytest.raises(ValueError, match="at most"):
        qr.region_oef(mag, chi, mask, QQNET_TE_S, {str(i): lesion for i in range(qr.MAX_REGIONS + 1)})


def test_regional_bench_reports_lesions_against_their_references(tmp_path):
    """``qmri bench oef --tasks qq_region`` on one small held-out phantom (4 mm): both ROI variants,
    the goal columns, and a constant map's row (C = 0) when bench_oef's rows are there."""
    import json

    from qmri.bench import oef_regions

    (tmp_path / "bench_oef_rows.json").write_text(
        json.dumps([{"subject": "bench-oef-0", "SNR": 100.0, "draw": 0, "method": "constant", "infarct_core_C": 0.0, "infarct_core_roi_error": -20.0, "infarct_core_diameter_mm": 29.0, "territory_asym": 0.0, "territory_asym_true": 13.1}])
    )
    oef_regions.run(str(tmp_path), subjects=1, snrs=(100.0,), noise_draws=1, resolution_mm=4.0)
    md = (tmp_path / "bench_oef_regions.md").read_text()
    assert "regional QQ fit, ROI exact" in md and "regional QQ fit, ROI dilated 2 mm" in md
    assert "constant population mean map, ROI mean | 1 | 1 | 0.00 / 0.00 | 20.00 | 13.10" in md
    rows = json.loads((tmp_path / "bench_oef_regions.json").read_text())["meta"]["rows"]
    assert [r["roi"] for r in rows] == ["exact", "dilated 2 mm"]
    for r in rows:
        assert all(np.isfinite(r[k]) for k in ("infarct_core_C", "penumbra_C", "territory_asym_error"))
        assert abs(r["territory_asym_true"]) > 5.0  # the territory is shifted by 8-15 %-points
    # both ROI sets go through one call; the exact ROIs alone give the same estimates
    from qmri.anatomy.phantom import make_subject
    from qmri.simulate.driver import task_rng
    from qmri.simulate.oef import simulate_oef_with_regions

    st, regions = simulate_oef_with_regions(make_subject(oef_regions.SEED0, 4.0, subject_id="bench-oef-0"), task_rng("oef", oef_regions.SEED0), snr=100.0)
    mask = st.image[..., -1] != 0
    alone = {x.name: x.oef for x in qr.region_oef(st.image[..., :-1], st.image[..., -1], mask, np.asarray(st.sidecar["echo_times_ms"]) / 1000.0, oef_regions._drawn(regions, mask, 0), B0=st.sidecar["B0_T"])}
    assert rows[0]["infarct_core_est"] == pytest.approx(alone["infarct_core"], abs=1e-9)
    assert rows[0]["penumbra_est"] == pytest.approx(alone["penumbra"], abs=1e-9)


def test_the_oef_task_fits_its_largest_label_map_with_every_mirror():
    """The OEF task's label limit leaves room for each label's mirror within one regional call."""
    from qmri.tasks.oef import MAX_LABELS, region_labels

    assert 2 * MAX_LABELS <= qr.MAX_REGIONS
    labels = np.zeros((8, 8, 8), np.int16)
    labels.reshape(-1)[: MAX_LABELS + 1] = np.arange(1, MAX_LABELS + 2)
    with pytest.raises(ValueError, match=f"at most {MAX_LABELS}"):
        region_labels(labels, labels.shape)
    labels[labels == MAX_LABELS + 1] = 0
    assert sorted(region_labels(labels, labels.shape)) == list(range(1, MAX_LABELS + 1))
