"""QQ forward model (qmri.physics.qq) and ground-truth parameter phantom (qmri.physics.qq_phantom)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from scipy import integrate, special

from qmri.anatomy.labels import LABEL, LESION_CODE
from qmri.physics import qq
from qmri.physics.qq_phantom import TISSUE_PRIORS, draw_qq_parameters


def fs_quad(x: float) -> float:
    """f_s from its integral form, (1/3) Int_0^1 (2+u) sqrt(1-u) (1 - J0(1.5 x u)) / u^2 du,
    with the sqrt(1-u) end-point singularity handled by QUADPACK's algebraic weight."""
    k = 1.5 * x

    def one_minus_j0(z):  # series for small z, where 1 - J0(z) would cancel catastrophically
        return z * z / 4 - z**4 / 64 + z**6 / 2304 - z**8 / 147456 if z < 0.05 else 1.0 - special.j0(z)

    f = lambda u: (2.0 + u) * one_minus_j0(k * u) / (u * u) if u > 0 else (2.0 + u) * k * k / 4.0  # noqa: E731
    val, _ = integrate.quad(f, 0.0, 1.0, weight="alg", wvar=(0.0, 0.5), epsabs=0.0, epsrel=1e-11, limit=5000)
    return val / 3.0


# ----------------------------------------------------------------------------- f_s
def test_fs_series_coefficient_and_small_argument():
    # first series term: (a)_1/((b1)_1 (b2)_1 1!) (-9/16) = (-1/2)/(15/16) (-9/16) = 3/10 exactly
    assert qq._C_SERIES[1] == pytest.approx(0.3, rel=1e-15)
    for x in (1e-4, 1e-3, 1e-2):
        assert qq.fs(x) / x**2 == pytest.approx(0.3, rel=2e-5)
    # second-order coefficient c_2 = (-1/2)(1/2) / ((3/4)(7/4)(5/4)(9/4) 2!) (9/16)^2
    c2 = (-0.5 * 0.5) / (0.75 * 1.75 * 1.25 * 2.25 * 2.0) * (9.0 / 16.0) ** 2
    x = 0.05
    assert (qq.fs(x) - 0.3 * x**2) / x**4 == pytest.approx(c2, rel=1e-3)
    assert qq.fs(0.0) == 0.0


def test_fs_large_argument_asymptote():
    for x in (100.0, 1e3, 1e4):
        f = qq.fs(x)
        assert abs(f - (x - 1.0)) < 1.0 / (6.0 * x) + 1.0 / x**2  # f_s -> x - 1 + 1/(6x) + O(x^-2)
        assert (f - (x - 1.0)) * 6.0 * x == pytest.approx(1.0, abs=200.0 / x)


@pytest.mark.parametrize("x", [0.01, 0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 13.9, 14.1, 20.0, 60.0, 500.0])
def test_fs_matches_quadrature(x):
    assert qq.fs(x) == pytest.approx(fs_quad(x), rel=1e-6)


def test_fs_derivative_matches_finite_differences():
    x = np.array([0.05, 0.7, 3.0, 9.0, 13.99, 14.01, 25.0, 300.0])
    h = 1e-5 * np.maximum(x, 1.0)
    fd = (qq.fs(x + h) - qq.fs(x - h)) / (2 * h)
    np.testing.assert_allclose(qq.fs_prime(x), fd, rtol=1e-6, atol=1e-9)


def test_fs_torch_numpy_agree_and_gradient():
    x = np.concatenate([np.linspace(0, 30, 301), np.geomspace(30, 1e4, 50)])
    ref = qq.fs(x)
    t64 = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = qq.fs(t64)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-14, atol=0)
    out.sum().backward()
    np.testing.assert_allclose(t64.grad.numpy(), qq.fs_prime(x), rtol=1e-12, atol=1e-15)
    t32 = torch.tensor(x, dtype=torch.float32)
    assert qq.fs(t32).dtype == torch.float32
    np.testing.assert_allclose(qq.fs(t32).numpy(), ref, rtol=1e-6, atol=1e-12)
    pts = torch.tensor([0.3, 2.0, 13.9, 14.1, 50.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(qq.fs, (pts,))
    assert torch.autograd.gradgradcheck(qq.fs, (pts,))


def test_fs_of_large_volumes_is_chunked_with_the_same_values():
    """Above one chunk f_s runs in cache-sized pieces (numpy for a CPU tensor outside autograd, torch
    inside it): the same values as one pass, for numpy, tensors and tensors that need a gradient."""
    x = np.random.default_rng(0).uniform(0, 40, size=(3 * qq._CPU_CHUNK + 17) * 7).reshape(-1, 7)
    one_pass = qq._fs_block(np.abs(x), False)
    np.testing.assert_array_equal(qq.fs(x), one_pass)
    t = torch.tensor(x)
    np.testing.assert_allclose(qq.fs(t).numpy(), one_pass, rtol=1e-15, atol=0)
    g = torch.tensor(x, requires_grad=True)
    out = qq.fs(g)
    np.testing.assert_allclose(out.detach().numpy(), one_pass, rtol=1e-15, atol=0)
    out.sum().backward()
    np.testing.assert_allclose(g.grad.numpy(), qq.fs_prime(x), rtol=1e-12, atol=1e-15)


def test_fs_chunks_spread_over_threads_give_the_same_values(monkeypatch):
    """Where OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE), numpy's chunks run on as many threads as
    torch's pool has, else on one: every value (and derivative) is the same as from one thread, for
    1, 2 and 3 threads, an uneven last chunk and a region-sized call below one chunk."""
    x = np.random.default_rng(1).uniform(0, 30, size=5 * qq._CPU_CHUNK + 123)
    small = x[: 3 * qq._THREAD_MIN + 5]
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    torch.set_num_threads(2)
    assert qq._fs_threads() == 1
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert qq._fs_threads() == 2
    try:
        torch.set_num_threads(1)
        ref, dref = qq.fs(x), qq.fs_prime(x)
        for n in (2, 3):
            torch.set_num_threads(n)
            np.testing.assert_array_equal(qq.fs(x), ref)
            np.testing.assert_array_equal(qq.fs_prime(x), dref)
            np.testing.assert_array_equal(qq.fs(torch.tensor(x)).numpy(), ref)
            np.testing.assert_array_equal(qq.fs(torch.tensor(small)).numpy(), ref[: small.size])
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(ref, qq._fs_block(x, False))


# ----------------------------------------------------------------------------- QQ model
def test_reference_sanity_values():
    assert qq.DCHI0 == pytest.approx(3.393, abs=5e-4)
    assert qq.PSI_HB == pytest.approx(0.0908, abs=1e-4)
    assert qq.delta_omega(0.6, 0.0, 3.0) == pytest.approx(100.6, abs=0.05)
    assert qq.qq_susceptibility(0.6, 0.03, 0.0) == pytest.approx(0.0096, abs=5e-5)
    assert qq.oef_from_y(0.98) == pytest.approx(0.0)
    assert qq.oef_from_y(0.6) == pytest.approx(1 - 0.6 / 0.98)
    assert qq.y_from_oef(qq.oef_from_y(0.55)) == pytest.approx(0.55)
    # dw scales with B0 and uses |.|
    assert qq.delta_omega(0.6, 0.0, 1.5) == pytest.approx(100.6 / 2, abs=0.05)
    assert qq.delta_omega(0.98, 1.0) > 0
    assert len(qq.PARAM_NAMES) == len(qq.QQNET_MEAN) == len(qq.QQNET_STD) == 5


def test_signal_at_t0_and_monotone_decay():
    rng = np.random.default_rng(3)
    n = 500
    S0, R2 = rng.uniform(0.5, 2, n), rng.uniform(2, 60, n)
    Y, v, cnb = rng.uniform(0, 0.98, n), rng.uniform(0, 0.08, n), rng.uniform(-1, 1.6, n)
    te = np.linspace(0.0, 0.06, 25)
    S = qq.qbold_magnitude(S0, R2, Y, v, cnb, te)
    assert S.shape == (n, 25)
    np.testing.assert_allclose(S[:, 0], S0, rtol=1e-14)
    assert np.all(np.diff(S, axis=1) < 0)
    # closed form at one echo
    dw = qq.delta_omega(Y, cnb)
    np.testing.assert_allclose(S[:, 7], S0 * np.exp(-R2 * te[7] - v * qq.fs(dw * te[7])), rtol=1e-12)
    # torch path identical and differentiable
    p = [torch.tensor(a, requires_grad=True) for a in (S0, R2, Y, v, cnb)]
    St = qq.qbold_magnitude(*p, te)
    np.testing.assert_allclose(St.detach().numpy(), S, rtol=1e-12)
    St.sum().backward()
    assert all(torch.isfinite(a.grad).all() for a in p)


def test_rician_noise_statistics():
    rng = np.random.default_rng(0)
    n = 200_000
    sig = np.ones((n, 2))
    sigma = qq.noise_sigma(sig, snr=100.0)
    assert sigma == pytest.approx(0.01)
    noisy = qq.add_noise(sig, 100.0, rng)
    assert noisy.std(0) == pytest.approx([0.01, 0.01], rel=0.02)  # high SNR: std -> sigma
    assert noisy.mean() == pytest.approx(1.0 + 0.01**2 / 2, abs=2e-4)
    zero = qq.add_noise(np.zeros((n, 1)), 1.0, rng, sigma=0.2)  # zero signal: Rayleigh
    assert zero.mean() == pytest.approx(math.sqrt(math.pi / 2) * 0.2, rel=0.01)
    g = qq.add_noise(np.zeros((n, 1)), 1.0, rng, kind="gaussian", sigma=0.2)
    assert g.mean() == pytest.approx(0.0, abs=3e-3) and g.std() == pytest.approx(0.2, rel=0.01)
    t = qq.add_noise(torch.ones(10, 3), 50.0, rng)
    assert isinstance(t, torch.Tensor) and t.shape == (10, 3)


# ----------------------------------------------------------------------------- phantom
def _toy_labels(n=24):
    lab = np.zeros((n, n, n), dtype=np.int16)
    lab[2:-2, 2:-2, 2:-2] = LABEL["csf"]
    lab[3:-3, 3:-3, 3:-3] = LABEL["cortical_gm"]
    lab[6:-6, 6:-6, 6:-6] = LABEL["wm"]
    lab[9:12, 9:12, 9:12] = LABEL["putamen"]
    les = np.zeros_like(lab)
    les[13:16, 7:10, 9:12] = LESION_CODE["infarct"]
    les[8:10, 14:16, 8:10] = LESION_CODE["haemorrhage"]
    return lab, les


def test_phantom_bounds_mask_lesions_and_reproducibility():
    lab, les = _toy_labels()
    d = draw_qq_parameters(lab, les, 2.0, np.random.default_rng(7))
    mask = d["mask"]
    assert mask.sum() == (lab > 0).sum()
    for name in qq.PARAM_NAMES:
        a = d[name]
        assert a.dtype == np.float32 and a.shape == lab.shape
        assert np.all(a[~mask] == 0)
        if name != "S0":
            lo, hi = qq.PARAM_BOUNDS[name]
            assert a[mask].min() >= lo and a[mask].max() <= hi
    assert d["S0"][mask].min() > 0
    np.testing.assert_allclose(d["OEF"][mask], 1 - d["Y"][mask] / 0.98, atol=1e-6)
    inf = d["regions"]["infarct"]["mask"]
    assert inf.sum() == 27 and np.all((d["OEF"][inf] >= 0.05 - 1e-6) & (d["OEF"][inf] <= 0.20 + 1e-6))
    hae = d["regions"]["haemorrhage"]["mask"]
    assert np.all(d["chi_nb"][hae] >= 0.5 - 1e-6)
    for name, (lo, hi) in (("infarct_core", (0.05, 0.20)), ("penumbra", (0.50, 0.75))):
        r = d["regions"][name]
        assert r["mask"].any() and not (r["mask"] & inf).any()
        assert np.all((d["OEF"][r["mask"]] >= lo - 1e-6) & (d["OEF"][r["mask"]] <= hi + 1e-6)), name
    assert np.all(d["v"][lab == LABEL["csf"]] == 0)
    d2 = draw_qq_parameters(lab, les, 2.0, np.random.default_rng(7))
    for name in (*qq.PARAM_NAMES, "OEF"):
        np.testing.assert_array_equal(d[name], d2[name])
    d3 = draw_qq_parameters(lab, les, 2.0, np.random.default_rng(8))
    assert not np.array_equal(d["Y"], d3["Y"])
    # one-hot probseg reproduces the label-based maps exactly
    pseg = np.eye(15, dtype=np.float32)[lab]
    d4 = draw_qq_parameters(lab, les, 2.0, np.random.default_rng(7), probseg=pseg)
    for name in (*qq.PARAM_NAMES, "OEF"):
        np.testing.assert_allclose(d4[name], d[name], atol=1e-6)


def test_phantom_gm_wm_means_match_priors():
    lab, _ = _toy_labels(16)
    gm, wm = lab == LABEL["cortical_gm"], lab == LABEL["wm"]
    means = {("gm", p): [] for p in ("R2", "Y", "chi_nb")} | {("wm", p): [] for p in ("R2", "Y", "chi_nb")}
    for seed in range(30):
        d = draw_qq_parameters(lab, None, 2.0, np.random.default_rng(seed), physiology=False)
        for p in ("R2", "Y", "chi_nb"):
            means[("gm", p)].append(d[p][gm].mean())
            means[("wm", p)].append(d[p][wm].mean())
    for (t, p), vals in means.items():
        m, sd = TISSUE_PRIORS["cortical_gm" if t == "gm" else "wm"][p]
        # 30 subjects: standard error of the subject mean ~ 0.13 sd
        assert abs(np.mean(vals) - m) < 0.4 * sd, (t, p, np.mean(vals), m)


def test_phantom_oxygenation_has_physiological_spreads():
    """Y (hence OEF) follows the physiological spreads, not the broad training prior (sd 0.15):
    the whole-brain level is uniform over OEF 22-52 % (between-subject sd of the GM mean ~0.085 in
    Y) with GM and WM moving together (shared global level), within-subject spatial sd ~0.03."""
    lab, _ = _toy_labels(32)
    gm, wm = lab == LABEL["cortical_gm"], lab == LABEL["wm"]
    gm_means, wm_means, within = [], [], []
    for seed in range(40):
        d = draw_qq_parameters(lab, None, 2.0, np.random.default_rng(100 + seed), physiology=False)
        gm_means.append(d["Y"][gm].mean())
        wm_means.append(d["Y"][wm].mean())
        within.append(d["Y"][gm].std())
    between = np.std(gm_means)
    assert 0.06 < between < 0.11, between
    assert np.corrcoef(gm_means, wm_means)[0, 1] > 0.8
    assert 0.02 < np.mean(within) < 0.04, np.mean(within)
    assert abs(np.mean(gm_means) - 0.617) < 0.04


def _fs_in_child(x, q):
    q.put(qq.fs(x))


def test_fs_threads_work_in_a_forked_child(monkeypatch):
    """A data loader worker forked after the pool was made gets a pool of its own (a forked pool has
    no threads, and work handed to it would never run)."""
    import multiprocessing as mp

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    x = np.random.default_rng(2).uniform(0, 20, 4 * qq._THREAD_MIN)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ref = qq.fs(x)  # makes the parent's pool
        assert qq._THREADS and qq._THREADS[0][0] == os.getpid()
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=_fs_in_child, args=(x, q))
        p.start()
        got = q.get(timeout=60)
        p.join(timeout=60)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(got, ref)
