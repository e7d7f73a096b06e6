"""qmri.metrics.maps on hand-made maps: values a trivial or a perfect answer must get."""

from __future__ import annotations

import numpy as np
import pytest

from qmri.metrics.maps import hfen, nrmse, qsm_metrics, rmse, ssim


@pytest.fixture()
def maps():
    rng = np.random.default_rng(0)
    x = np.indices((24, 24, 24)).astype(np.float64)
    truth = np.sin(x[0] / 3.0) * np.cos(x[1] / 4.0) + 0.1 * rng.standard_normal(x[0].shape)
    mask = ((x - 11.5) ** 2).sum(0) <= 10**2
    return truth, mask


def test_perfect_map_scores_perfectly(maps):
    t, m = maps
    assert nrmse(t, t, m) == 0 and rmse(t, t, m) == 0 and hfen(t, t, m) == 0
    assert ssim(t, t, m, np.ptp(t))[0] == pytest.approx(1.0)
    q = qsm_metrics(t + 0.3, t, m)  # QSM is relative: a constant offset is no error
    assert q["NRMSE"] == pytest.approx(0, abs=1e-12) and q["SSIM"] == pytest.approx(1.0)


def test_trivial_maps_score_badly(maps):
    t, m = maps
    zero = np.zeros_like(t)
    assert nrmse(zero, t, m) == pytest.approx(1.0)  # the zero map: NRMSE 1
    assert nrmse(2 * t - t[m].mean(), t, m) == pytest.approx(1.0)  # twice the contrast: NRMSE 1
    assert nrmse(t + 0.3, t, m, demean=False) > 0.2
    assert hfen(zero, t, m) == pytest.approx(1.0)
    assert rmse(t + 0.5, t, m) == pytest.approx(0.5)
    assert ssim(np.full_like(t, t[m].mean()), t, m, np.ptp(t))[0] < 0.1


def test_metrics_only_look_inside_the_mask(maps):
    t, m = maps
    spoiled = np.where(m, t, 1e6)
    assert nrmse(spoiled, t, m) == 0 and rmse(spoiled, t, m) == 0


def test_the_qsm_benches_trivial_row_is_a_constant_map(maps):
    """``qmri bench qsm``'s ``constant`` row: whatever the field, a constant map (NRMSE 1, HFEN 1)."""
    from qmri.bench.qsm import invert

    t, m = maps
    est = invert("constant", None, np.random.default_rng(1).standard_normal(t.shape), m, (2.0, 2.0, 2.0), (0.0, 0.0, 1.0))
    assert np.ptp(est) == 0
    q = qsm_metrics(est, t, m)
    assert q["NRMSE"] == pytest.approx(1.0) and q["HFEN"] == pytest.approx(1.0) and q["SSIM"] < 0.1
