"""OEF phantom physiology (infarct core, penumbra, territory) and the lesion-aware OEF metrics."""

import numpy as np
import pytest

from qmri.anatomy.labels import LABEL
from qmri.metrics import oef as om
from qmri.physics import oef_physiology as ph
from qmri.physics.qq_phantom import draw_qq_parameters


def _brain(shape=(60, 70, 56)):
    """A left-right symmetric ellipsoidal 'brain': WM inside, a GM shell, CSF rim (2 mm voxels)."""
    g = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) / (n / 2) for n in shape], indexing="ij")
    r = np.sqrt(sum(a**2 for a in g))
    lab = np.zeros(shape, np.int16)
    lab[r < 0.95] = LABEL["csf"]
    lab[r < 0.9] = LABEL["cortical_gm"]
    lab[r < 0.75] = LABEL["wm"]
    return lab


@pytest.fixture(scope="module")
def drawn():
    lab = _brain()
    return lab, [draw_qq_parameters(lab, None, 2.0, np.random.default_rng(s)) for s in range(8)]


def test_regions_follow_the_physiology(drawn):
    lab, subjects = drawn
    tissue = np.isin(lab, (LABEL["cortical_gm"], LABEL["wm"]))
    v_changed = {"infarct_core": 0, "penumbra": 0}
    for d in subjects:
        reg, oef = d["regions"], 100 * d["OEF"]
        for name, (lo, hi) in (("infarct_core", (5, 20)), ("penumbra", (50, 75))):
            r = reg[name]
            assert 8.0 <= r["diameter_mm"] <= 40.0
            assert r["mask"].sum() > 0 and np.all(tissue[r["mask"]])
            assert lo - 1e-3 <= oef[r["mask"]].min() and oef[r["mask"]].max() <= hi + 1e-3
            # the reference is the mirror image across the midline, outside every region
            assert r["reference"].any() and not (r["reference"] & r["mask"]).any()
            mid = ph.midline_index(d["mask"])
            back = ph.mirror_lr(r["reference"], mid)  # mirrored along axis 0, it lies in the lesion
            assert back.sum() == r["reference"].sum() and np.all(r["mask"][back])
            assert r["reference"].sum() >= 0.3 * r["mask"].sum()
            v_changed[name] += r["v_factor"] != 1.0
            if name == "infarct_core":
                assert r["v_factor"] == 1.0 or 0.3 <= r["v_factor"] <= 0.7
            else:
                assert r["v_factor"] == 1.0 or 1.0 <= r["v_factor"] <= 1.5
        assert not (reg["infarct_core"]["mask"] & reg["penumbra"]["mask"]).any()
        t = reg["territory"]
        asym = oef[t["mask"]].mean() - oef[t["reference"]].mean()
        assert 8.0 * 0.5 < abs(asym) and np.sign(asym) == np.sign(t["shift"])  # one territory shifted 8-15 %-points
    # lesions with and without a change in v (probability 1/2 each)
    assert all(0 < n < len(subjects) for n in v_changed.values()), v_changed


def test_regions_reproducible_from_the_seed():
    lab = _brain((40, 48, 40))
    a = draw_qq_parameters(lab, None, 2.0, np.random.default_rng(3))
    b = draw_qq_parameters(lab, None, 2.0, np.random.default_rng(3))
    c = draw_qq_parameters(lab, None, 2.0, np.random.default_rng(4))
    for name in ("infarct_core", "penumbra", "territory"):
        np.testing.assert_array_equal(a["regions"][name]["mask"], b["regions"][name]["mask"])
    np.testing.assert_array_equal(a["OEF"], b["OEF"])
    assert not np.array_equal(a["regions"]["penumbra"]["mask"], c["regions"]["penumbra"]["mask"])


def test_whole_brain_oef_spans_the_population_range(drawn):
    _, subjects = drawn
    means = [100 * d["OEF"][d["mask"] & (d["v"] > 0)].mean() for d in subjects]
    assert min(means) < 33 and max(means) > 40 and all(15 < m < 60 for m in means)


def test_metrics_constant_map_scores_zero_and_truth_scores_one(drawn):
    lab, subjects = drawn
    d = subjects[0]
    truth, mask = 100 * d["OEF"], d["mask"]
    const = np.where(mask, truth[mask].mean(), 0.0)
    m_const = om.oef_map_metrics(const, truth, mask, d["regions"], 2.0)
    m_true = om.oef_map_metrics(truth, truth, mask, d["regions"], 2.0, sd=np.full(truth.shape, 1.0))
    for name in ("infarct_core", "penumbra"):
        assert m_const[f"{name}_C"] == pytest.approx(0.0, abs=1e-9)
        assert m_true[f"{name}_C"] == pytest.approx(1.0)
        assert m_true[f"{name}_roi_error"] == pytest.approx(0.0, abs=1e-5)
    assert m_const["r"] == 0.0 and m_const["r_smooth"] == 0.0
    assert m_true["r"] == pytest.approx(1.0) and m_true["r_smooth"] == pytest.approx(1.0)
    assert m_const["territory_asym"] == pytest.approx(0.0, abs=1e-9)
    assert m_true["territory_asym"] == pytest.approx(m_true["territory_asym_true"])
    assert m_true["coverage_2sd"] == 1.0 and m_true["rmse"] == 0.0
    # half the contrast -> C = 0.5; noise lowers r at native resolution more than after smoothing
    ref = d["regions"]["infarct_core"]["reference"]
    half = truth.copy()
    les = d["regions"]["infarct_core"]["mask"]
    half[les] = 0.5 * (truth[les] + truth[ref].mean())
    assert om.contrast_recovery(half, truth, les, ref) == pytest.approx(0.5, abs=0.02)
    noisy = truth + np.random.default_rng(0).normal(0, 15, truth.shape)
    assert om.pearson_r(noisy, truth, mask) < om.pearson_r(noisy, truth, mask, 6.0, 2.0)
    # coverage of a calibrated Gaussian sd
    sd = np.full(truth.shape, 15.0)
    assert om.coverage(noisy, truth, sd, mask) == pytest.approx(0.954, abs=0.01)


def test_model_selection_r_is_taken_within_each_volume():
    """The default network's selection needs r >= 0.5: a map constant within each volume that follows
    each volume's level scores 0 (one r over the pooled voxels of the volumes gave it 0.9)."""
    rng = np.random.default_rng(0)
    truths = [level + rng.normal(0, 5, 500) for level in (25.0, 37.0, 50.0)]
    levels = [np.full(500, t.mean()) for t in truths]
    pooled = np.corrcoef(np.concatenate(levels), np.concatenate(truths))[0, 1]
    assert pooled > 0.85
    assert om.within_volume_r(list(zip(levels, truths))) == 0.0
    noisy = [t + rng.normal(0, 5, 500) for t in truths]  # r = 1 / sqrt(2) in each volume
    assert om.within_volume_r(list(zip(noisy, truths))) == pytest.approx(0.707, abs=0.05)


def test_summary_reports_the_worst_large_lesion():
    rows = [
        {"rmse": 3.0, "mean_error": 1.0, "r": 0.6, "r_smooth": 0.8, "infarct_core_C": 0.9, "infarct_core_roi_error": -2.0, "infarct_core_diameter_mm": 30.0, "infarct_core_v_changed": True, "territory_asym": 9.0, "territory_asym_true": 10.0},
        {"rmse": 4.0, "mean_error": -2.5, "r": 0.4, "r_smooth": 0.6, "infarct_core_C": 0.6, "infarct_core_roi_error": 4.0, "infarct_core_diameter_mm": 25.0, "infarct_core_v_changed": False, "territory_asym": -7.0, "territory_asym_true": -11.0},
        {"rmse": 4.0, "mean_error": 0.0, "r": 0.5, "r_smooth": 0.7, "infarct_core_C": 0.1, "infarct_core_roi_error": 9.0, "infarct_core_diameter_mm": 10.0, "infarct_core_v_changed": False},
    ]
    s = om.summarise(rows)
    assert s["infarct_core_n"] == 2 and s["infarct_core_C_min"] == 0.6 and s["infarct_core_err_max"] == 4.0
    assert s["infarct_core_v_C_min"] == 0.9 and s["infarct_core_no_v_C_min"] == 0.6
    assert s["asym_err_max"] == 4.0 and s["mean_err_max"] == 2.5
    assert s["r"] == pytest.approx(0.5) and s["rmse"] == pytest.approx(np.sqrt((9 + 16 + 16) / 3))
