"""Classical QSM: dipole inversions, unwrapping, echo fit, V-SHARP and the raw GRE path.

NRMSE = ||x - y|| / ||y|| over the mask after subtracting each map's mask mean (QSM is relative).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qmri.anatomy.labels import LABEL
from qmri.classical import qsm as Q
from qmri.physics.dipole import GAMMA_BAR_MHZ_PER_T, forward_field
from qmri.physics.qsm_phantom import CHI_AIR_PPM, simulate_gre


def _grid(shape):
    return np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")


def _ell(g, c, r):
    return sum(((g[i] - c[i]) / r[i]) ** 2 for i in range(3)) <= 1


def ball_phantom(shape=(48, 48, 48)):
    """Piecewise-constant chi (ppm, water = 0): 'WM' core -0.03 and 5 balls in an ellipsoid brain mask."""
    g = _grid(shape)
    s = min(shape) / 64.0
    mask = _ell(g, (0, 0, 0), (26 * s, 22 * s, 20 * s))
    chi = np.zeros(shape)
    chi[_ell(g, (0, 0, 0), (18 * s, 14 * s, 12 * s))] = -0.03
    for c, r, v in [
        ((-10, 0, 0), 5, 0.15),
        ((10, 4, 0), 4, 0.10),
        ((0, -8, 6), 4, -0.10),
        ((4, 8, -6), 6, 0.05),
        ((-6, -6, -8), 3, 0.30),
    ]:
        chi[_ell(g, [ci * s for ci in c], (r * s,) * 3)] = v
    return (chi * mask).astype(np.float32), mask


def ball_head(shape=(64, 64, 64)):
    """The ball phantom inside a head: labels (air, scalp, skull, sinus air, brain) and chi
    (ppm relative to water, air +9.2) for simulate_gre."""
    chi_b, mask = ball_phantom(shape)
    g = _grid(shape)
    s = min(shape) / 64.0
    labels = np.full(shape, LABEL["air"], np.int16)
    labels[_ell(g, (0, 0, 0), (31 * s, 29 * s, 27 * s))] = LABEL["soft_tissue"]
    labels[_ell(g, (0, 0, 0), (29.5 * s, 26.5 * s, 24.5 * s))] = LABEL["bone"]
    labels[_ell(g, (0, 0, 0), (28 * s, 25 * s, 23 * s))] = LABEL["csf"]
    labels[_ell(g, (0, 25 * s, -7 * s), (7 * s, 3.5 * s, 5 * s))] = LABEL["sinus_air"]
    labels[mask] = LABEL["wm"]
    chi = np.select(
        [labels == LABEL["air"], labels == LABEL["sinus_air"], labels == LABEL["bone"], labels == LABEL["soft_tissue"]],
        [CHI_AIR_PPM, CHI_AIR_PPM, -2.1, -0.05],
        0.0,
    )
    chi[mask] = chi_b[mask]
    return labels, chi.astype(np.float32), mask


@pytest.fixture(scope="module")
def inv_case():
    chi, mask = ball_phantom()
    f = forward_field(chi, 1.0) * mask
    noisy = (f + np.random.default_rng(1).normal(size=f.shape).astype(np.float32) * 0.002) * mask
    return chi, mask, f, noisy


def test_inversions_noiseless(inv_case):
    chi, mask, f, _ = inv_case
    e_tkd = Q.nrmse(Q.tkd(f, mask, 1.0, threshold=0.19), chi, mask)
    e_l2 = Q.nrmse(Q.closed_form_l2(f, mask, 1.0, beta=3e-3), chi, mask)
    e_tv = Q.nrmse(Q.tv_inversion(f, mask, 1.0, lam=3e-4, n_iter=60), chi, mask)
    # measured ~0.33 / 0.28 / 0.07
    assert e_tkd < 0.40
    assert e_l2 < 0.32
    assert e_tv < 0.10
    # the truncation is what limits TKD: a lower threshold is closer in the noiseless case
    assert Q.nrmse(Q.tkd(f, mask, 1.0, threshold=0.1), chi, mask) < e_tkd


def test_tv_beats_l2_on_noisy_field(inv_case):
    chi, mask, _, noisy = inv_case
    e_l2 = min(Q.nrmse(Q.closed_form_l2(noisy, mask, 1.0, beta=b), chi, mask) for b in (1e-3, 3e-3, 1e-2))
    e_tkd = Q.nrmse(Q.tkd(noisy, mask, 1.0), chi, mask)
    e_tv = Q.nrmse(Q.tv_inversion(noisy, mask, 1.0, lam=3e-4, n_iter=60), chi, mask)
    # measured: L2 (best beta) ~0.34, TKD ~0.43, TV ~0.09, TV + magnitude edges ~0.01
    assert e_tv < 0.15
    assert e_tv < 0.5 * e_l2 and e_tv < e_tkd
    # MEDI-like magnitude edge weighting (edges at the chi boundaries) helps further
    mag = 1.0 + 3.0 * np.abs(chi)
    e_tvm = Q.nrmse(Q.tv_inversion(noisy, mask, 1.0, lam=3e-4, n_iter=60, magnitude=mag), chi, mask)
    assert e_tvm < e_tv


def test_inversions_torch_in_torch_out(inv_case):
    chi, mask, f, _ = inv_case
    out = Q.closed_form_l2(torch.from_numpy(f), torch.from_numpy(mask), 1.0)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), Q.closed_form_l2(f, mask, 1.0), atol=1e-6)


def test_laplacian_unwrap_exact_in_mask():
    shape = (40, 44, 36)
    g = _grid(shape)
    mask = _ell(g, (0, 0, 0), (17, 19, 15))
    true = 0.04 * g[0] ** 2 - 0.03 * g[1] * g[2] + 0.6 * g[2] + 6 * np.exp(-((g[0] - 5) ** 2 + g[1] ** 2 + g[2] ** 2) / 40)
    rng = np.random.default_rng(0)
    wrapped = np.angle(np.exp(1j * true))
    wrapped[~mask] = rng.uniform(-np.pi, np.pi, size=(~mask).sum())  # pure noise outside
    assert np.ptp(true[mask]) > 6 * np.pi
    u = Q.laplacian_unwrap(wrapped, 2.0, mask=mask)
    d = (u - true)[mask]
    k = np.round(d.mean() / (2 * np.pi))
    assert np.abs(d - 2 * np.pi * k).max() < 1e-4
    # the smooth (non-congruent) Laplacian solution equals the truth up to a constant as well
    s = Q.laplacian_unwrap(wrapped, 2.0, mask=mask, congruent=False)
    ds = (s - true)[mask]
    assert np.abs(ds - ds.mean()).max() < 1e-3


def test_simulate_gre_consistency():
    labels, chi, mask = ball_head((48, 48, 48))
    te = [4.0, 9.0, 14.0]
    sim = simulate_gre(chi, labels, 2.0, te, snr=None, rng=np.random.default_rng(0), mask=mask)
    assert sim.phase.shape == (48, 48, 48, 3) and sim.magnitude.shape == (48, 48, 48, 3)
    assert sim.phase.min() > -np.pi - 1e-6 and sim.phase.max() <= np.pi + 1e-6
    np.testing.assert_allclose(sim.total_field[mask], (sim.local_field + sim.background_field)[mask], atol=1e-5)
    assert np.all(sim.local_field[~mask] == 0)
    # local field = dipole convolution of the brain-masked chi
    np.testing.assert_allclose(sim.local_field, forward_field(chi * mask, 2.0) * mask, atol=1e-5)
    # no signal from air and bone, T2* decay with the table R2* (WM 25/s)
    air_bone = np.isin(labels, [LABEL["air"], LABEL["bone"], LABEL["sinus_air"]])
    assert np.all(sim.magnitude[air_bone] == 0)
    wm = mask
    ratio = sim.magnitude[wm][:, 1] / sim.magnitude[wm][:, 0]
    np.testing.assert_allclose(ratio, np.exp(-25.0 * 5e-3), rtol=1e-5)
    # phase evolves by 2 pi gamma_bar B0 field dTE
    s = sim.magnitude * np.exp(1j * sim.phase)
    dphi = np.angle(s[..., 1] * np.conj(s[..., 0]))
    want = np.angle(np.exp(1j * 2 * np.pi * GAMMA_BAR_MHZ_PER_T * 3.0 * sim.total_field * 5e-3))
    assert np.abs(np.angle(np.exp(1j * (dphi - want)))[mask]).max() < 1e-3
    # the background field from the skull/air is much larger than the local field
    assert sim.background_field[mask].std() > 5 * sim.local_field[mask].std()


@pytest.mark.parametrize("snr", [None, 100.0])
def test_unwrap_and_echo_fit_recover_total_field(snr):
    labels, chi, mask = ball_head((48, 48, 48))
    te = [4.0, 8.0, 12.0, 16.0, 20.0]
    sim = simulate_gre(chi, labels, 2.0, te, snr=snr, rng=np.random.default_rng(3), mask=mask)
    # many wraps at the last echo
    assert np.ptp(2 * np.pi * GAMMA_BAR_MHZ_PER_T * 3.0 * sim.total_field[mask] * 20e-3) > 6 * np.pi
    field, phi0 = Q.echo_fit_total_field(sim.magnitude, sim.phase, te, 3.0, mask=mask, voxel_size=2.0, return_offset=True)
    err = (field - sim.total_field)[mask]
    if snr is None:
        assert np.abs(err).max() < 1e-4  # exact, including the absolute level
        d0 = np.angle(np.exp(1j * (phi0 - sim.phase_offset)))[mask]
        assert np.abs(d0).max() < 1e-3
    else:
        err = err - np.median(err)
        assert np.median(np.abs(err)) < 2e-3  # ppm
        assert (np.abs(err) < 0.01).mean() > 0.995


def test_vsharp_removes_exterior_background():
    labels, chi, mask = ball_head((64, 64, 64))
    sim = simulate_gre(chi, labels, 2.0, [5.0], snr=None, rng=np.random.default_rng(0), mask=mask)
    local, emask = Q.vsharp(sim.total_field, mask, 2.0, radii_mm=(12, 10, 8, 6, 4))
    assert emask.sum() > 0.5 * mask.sum() and not np.any(emask & ~mask)
    e_raw = Q.nrmse(sim.total_field, sim.local_field, emask)
    e = Q.nrmse(local, sim.local_field, emask)
    bg_left, _ = Q.vsharp(sim.background_field, mask, 2.0, radii_mm=(12, 10, 8, 6, 4))
    loc = sim.local_field[emask] - sim.local_field[emask].mean()
    resid = np.linalg.norm(bg_left[emask] - bg_left[emask].mean()) / np.linalg.norm(loc)
    # measured: raw ~5, after V-SHARP ~0.17, exterior background left ~0.10 of the local field
    assert e_raw > 3.0
    assert e < 0.25
    assert resid < 0.15


@pytest.fixture(scope="module")
def raw_case():
    labels, chi, mask = ball_head((64, 64, 64))
    te = [4.0, 8.0, 12.0, 16.0, 20.0]
    sim = simulate_gre(chi, labels, 2.0, te, snr=200.0, rng=np.random.default_rng(5), mask=mask)
    out = Q.qsm_from_gre(sim.magnitude, sim.phase, mask, te, 2.0, method="l2")
    return chi, mask, sim, out


def test_qsm_from_gre_end_to_end_l2(raw_case):
    chi, mask, sim, out = raw_case
    e = Q.nrmse(out["chi"], chi * mask, out["mask"])
    assert e < 0.40, e  # measured ~0.32
    assert set(out) == {"chi", "local_field", "total_field", "mask"}


@pytest.mark.parametrize("method,bound", [("tkd", 0.48), ("tv", 0.25)])
def test_raw_path_other_inversions(raw_case, method, bound):
    """The same chain with TKD / magnitude-weighted TV on the V-SHARP local field (measured ~0.39 / ~0.13)."""
    chi, mask, sim, out = raw_case
    local, emask = out["local_field"], out["mask"]
    if method == "tkd":
        est = Q.tkd(local, emask, 2.0)
    else:
        est = Q.tv_inversion(local, emask, 2.0, magnitude=sim.magnitude[..., 0], n_iter=60)
    e = Q.nrmse(est, chi * mask, emask)
    assert e < bound, e
    assert math.isfinite(float(np.abs(est).max()))


def test_masked_cg_solves_the_support_constrained_problem(inv_case):
    chi, mask, f, _ = inv_case
    # the exact solution is a fixed point: started at the truth, CG has nothing to correct. masked_cg
    # works on the mask's bounding box (2-voxel margin), and the sampled k-space dipole kernel
    # depends on the grid, so the field is simulated on that box here
    from qmri.classical.bounding_box import mask_box

    box = mask_box(mask, 2)
    f_box = forward_field(chi[box], 1.0) * mask[box]
    np.testing.assert_allclose(Q.masked_cg(f_box, mask[box], 1.0, init=chi[box], n_iter=10), chi[box], atol=1e-6)
    # on the whole grid the box's kernel differs from the full grid's by under 2 % of the peak chi
    assert np.abs(Q.masked_cg(f, mask, 1.0, init=chi, n_iter=10) - chi).max() < 0.02 * np.abs(chi).max()
    # knowing that no source lies outside the mask beats the unbounded k-space inversions on a
    # noiseless field (measured ~0.12 after 80 iterations vs ~0.28 for closed-form L2)
    e_cg = Q.nrmse(Q.masked_cg(f, mask, 1.0, n_iter=80), chi, mask)
    assert e_cg < 0.15 and e_cg < 0.5 * Q.nrmse(Q.closed_form_l2(f, mask, 1.0), chi, mask)
    # an oblique B0 is inverted with its own kernel (measured ~0.11 right vs ~3.8 assuming z)
    b0 = (0.0, math.sin(0.4), math.cos(0.4))
    ft = forward_field(chi, 1.0, b0) * mask
    right = Q.nrmse(Q.masked_cg(ft, mask, 1.0, b0, n_iter=80), chi, mask)
    assert right < 0.15 and right < 0.2 * Q.nrmse(Q.masked_cg(ft, mask, 1.0, n_iter=80), chi, mask)


def test_field_noise_estimate_tracks_the_added_noise(inv_case):
    _, mask, f, _ = inv_case
    rng = np.random.default_rng(3)
    est = [Q.field_noise_ppm((f + rng.normal(size=f.shape) * sd) * mask, mask) for sd in (0.001, 0.002, 0.004)]
    # measured ~0.0013 / 0.0024 / 0.0044 ppm: edges of chi add a small floor at low noise
    for e, sd in zip(est, (0.001, 0.002, 0.004)):
        assert sd <= e < 1.4 * sd, (e, sd)


def test_masked_cg_stops_earlier_on_noisier_fields(inv_case):
    """CG on the ill-posed system fits the noise if run too long; the automatic count avoids it."""
    chi, mask, f, _ = inv_case
    noisy = (f + np.random.default_rng(1).normal(size=f.shape).astype(np.float32) * 0.002) * mask
    auto = Q.nrmse(Q.masked_cg(noisy, mask, 1.0), chi, mask)
    long = Q.nrmse(Q.masked_cg(noisy, mask, 1.0, n_iter=80), chi, mask)
    # measured ~0.50 automatic vs ~1.26 after 80 iterations; the best fixed count gives ~0.49
    assert auto < 0.55 and auto < 0.5 * long
    quiet = (f + np.random.default_rng(1).normal(size=f.shape).astype(np.float32) * 0.0005) * mask
    assert Q.nrmse(Q.masked_cg(quiet, mask, 1.0), chi, mask) < 0.3  # measured ~0.25
