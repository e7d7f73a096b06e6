"""Classical voxelwise QQ (QSM + qBOLD) fit for OEF, batched in torch.

Objective per voxel (seeds 000/001 eq. (1); Cho et al., MRM 2018; forward model in
:mod:`qmri.physics.qq`)::

    C(p) = sum_e (s_e - S_model(p, t_e)/S_1)^2 + w (chi - chi_model(p))^2 + lam (OEF(p) - OEF_wb)^2

* ``s_e = |S(t_e)| / |S(t_1)|``: every echo is divided by the measured echo-1 magnitude (as QQ-NET
  does), so the signal norm is the echo-1 signal and the fitted S0 is relative to echo 1
  (bounds [0.8, 2.5] as QQ-NET, upper bound widened automatically for long TE1); the returned S0
  map is multiplied back by the echo-1 magnitude (absolute units of the input).
* ``chi``: the measured QSM value [ppm]; ``w`` [1/ppm^2] weighs the QSM term against the
  normalised signal. A good choice is (sigma_S/S_1)^2 / sigma_chi^2; default 1.0 ~ 1 % signal
  noise against 0.01 ppm QSM noise.
* ``OEF_wb``: whole-brain OEF prior. ``oef_wb=None`` (default) uses the mean OEF of the current
  estimate over the mask, re-computed at every iteration and held constant within one step (the
  term then shrinks each voxel towards the brain mean, regularising the Y-v degeneracy);
  a float fixes it (e.g. an OEF from the straight-sinus venous susceptibility). ``lam`` [1/OEF^2]
  weighs it; ``lam=0`` switches the prior off.

Optimiser: projected Levenberg-Marquardt, batched over all voxels (one 5x5 system per voxel
solved with torch.linalg.solve), analytic Jacobian (f_s' is exact), parameters scaled to their
box bounds ([0, 1]); variables at a bound whose gradient points outwards are frozen for that step
(active set). Physical bounds: R2 [2, 190] 1/s, Y [0, 0.98], v [0, 0.08], chi_nb [-1, 1.6] ppm.
Initialisation: a grid over (Y, v); for each pair chi_nb follows from the QSM equation (linear)
and (S0, R2) from a weighted log-linear fit of ``log s_e + v f_s(dw t_e) = log S0 - R2 t_e``; the
grid point of lowest cost starts the LM iterations.

Degeneracies (documented, tested in tests/test_qq_fit.py):
* exact mirror: dw uses |Hct dchi0 (1-Y) + chi_ba - chi_nb|; each (Y, chi_nb) has a mirror with
  the opposite bracket sign and the same chi, i.e. identical data. :func:`_mirror` solves it in
  closed form and keeps the branch whose OEF is closer to OEF_wb (or, with lam = 0, to
  OEF_REF_DEFAULT = 0.388, the Y = 0.6 population prior).
* quadratic regime: if dw * TE_max < ~1 the decay only sees v dw^2 (f_s ~ 0.3 x^2).
* noise: at long echo times v f_s(dw t) -> v dw t - v, indistinguishable from R2 and S0, so Y and
  v are identified only by the short-time curvature. For 8 echoes 4.5-39.5 ms, SNR 100 and
  0.005 ppm QSM noise the Cramer-Rao bound of OEF is ~65-95 %-points per voxel: noiseless data
  are recovered exactly (lam = 0), noisy data are prior-dominated (default lam = 1e-2 gives an
  OEF RMSE about equal to the spread of the truth; lam = 0 gives ~24 %-points).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from qmri.physics.qq import (
    blood_chi,
    qq_model,
    ALPHA,
    CHI_BA,
    DCHI0,
    DCHI_HB,
    GAMMA,
    HCT,
    PARAM_BOUNDS,
    PARAM_NAMES,
    PSI_HB,
    YA,
    fs,
)

W_DEFAULT = 1.0
# OEF used to pick between the two mirror solutions when no OEF prior is active (lam = 0):
# the population prior Y = 0.6 (REFERENCE section 1 GM/WM priors) -> OEF = 0.388.
OEF_REF_DEFAULT = 1.0 - 0.6 / YA
LAM_DEFAULT = 1e-2
Y_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
V_GRID = (0.01, 0.02, 0.035, 0.05, 0.07)
# OEF_sd (Laplace approximation, see _oef_sd): echo residual degrees of freedom per voxel are
# E - SD_K_EFF (RSS / (N sigma^2) measured 4.84-5.14 for 8 echoes, lam 0 to 1e-2, SNR 100).
# The plain Laplace sd is multiplied by OEF_SD_CALIBRATION, fitted on tuning phantoms only (the box
# phantom of tests/test_qq_fit_spatial.py, seeds 1-4, default lam): the plain sd covers only
# 84.5-84.8 % of the voxels within 2 sd (the default-lam fit is prior-dominated and biased in
# lesions), the pooled 95 % factor is 1.65 (per seed 1.60-1.71); held-out seed 7: 93.2 %. It depends
# on the truth's spread: on a whole-brain phantom with small lesions (make_subject(40000)) the
# calibrated sd covers 99.98 %.
SD_K_EFF = 2.9
OEF_SD_CALIBRATION = 1.65


class _Problem:
    """Residuals and Jacobian of the QQ objective for N voxels (float64 tensors)."""

    def __init__(self, s, chi, t, B0, w, lam, lo, hi):
        self.s, self.chi, self.t = s, chi, t  # (N,E), (N,), (E,)
        self.B0 = B0
        self.c = GAMMA * B0 / 3.0
        self.sw, self.sl = math.sqrt(w), math.sqrt(lam)
        self.lo, self.hi = lo, hi  # (N,5) each
        self.oef_wb = torch.zeros((), dtype=s.dtype, device=s.device)

    def params(self, q):
        return self.lo + q * (self.hi - self.lo)

    def residual(self, q, jac: bool):
        p = self.params(q)
        S0, R2, Y, v, cnb = p.unbind(1)
        S, chim, JS, jc = qq_model(S0, R2, Y, v, cnb, self.t, self.B0, jac=jac)
        oef = 1.0 - Y / YA
        r = torch.cat([S - self.s, (self.sw * (chim - self.chi))[:, None], (self.sl * (oef - self.oef_wb))[:, None]], dim=1)
        if not jac:
            return r, None
        zero = torch.zeros_like(S0)
        Jo = self.sl * torch.stack([zero, zero, torch.full_like(S0, -1.0 / YA), zero, zero], dim=1)
        J = torch.cat([JS, (self.sw * jc)[:, None], Jo[:, None]], dim=1) * (self.hi - self.lo)[:, None, :]
        return r, J

    def update_prior(self, q):
        """Mean-OEF prior: OEF_wb = mean OEF of the current estimate."""
        Y = self.params(q)[:, 2]
        self.oef_wb = (1.0 - Y / YA).mean()


class LogLinearFit:
    """S0 and R2 [1/s] of N voxels from a weighted log-linear fit of ``log s_e + d_e = log S0 - R2 t_e``
    (``d_e`` = v f_s(dw t_e) for a given Y and v), weights ``s_e^2`` (~ 1/var(log s_e)); R2 clipped to
    its physical bounds. The voxel sums that do not depend on ``d`` are computed once, in ``__init__``
    (``s`` (N, E) magnitudes, ``t`` (E,) echo times [s])."""

    def __init__(self, s: torch.Tensor, t: torch.Tensor):
        self.logs = torch.log(s.clamp_min(1e-6))
        self.w = s.clamp_min(1e-6) ** 2
        self.sw = self.w.sum(1)
        self.tm = (self.w * t).sum(1) / self.sw
        self.dt = t - self.tm[:, None]
        self.den = (self.w * self.dt**2).sum(1)

    def __call__(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        yy = self.logs + d
        ym = (self.w * yy).sum(1) / self.sw
        R2 = (-(self.w * self.dt * (yy - ym[:, None])).sum(1) / self.den).clamp(*PARAM_BOUNDS["R2"])
        return torch.exp(ym + R2 * self.tm), R2


def _grid_init(prob: _Problem, y_grid, v_grid, chunk: int = 65536):
    """Best (Y, v) grid point per voxel with chi_nb from QSM and (S0, R2) from log-linear LS."""
    s, chi, t = prob.s, prob.chi, prob.t
    N = s.shape[0]
    lo, hi = prob.lo, prob.hi
    best_q = torch.zeros_like(lo)
    best_c = torch.full((N,), float("inf"), dtype=s.dtype, device=s.device)
    loglin = LogLinearFit(s, t)
    for Y in y_grid:
        for v in v_grid:
            Yt = torch.full((N,), float(Y), dtype=s.dtype, device=s.device)
            vt = torch.full_like(Yt, float(v))
            cnb = ((chi - blood_chi(Yt) * vt) / (1.0 - vt / ALPHA)).clamp(*PARAM_BOUNDS["chi_nb"])
            dw = prob.c * (HCT * DCHI0 * (1.0 - Yt) + CHI_BA - cnb).abs()
            S0, R2 = loglin(vt[:, None] * fs(dw[:, None] * t))
            p = torch.stack([S0, R2, Yt, vt, cnb], 1)
            q = ((p - lo) / (hi - lo)).clamp(0.0, 1.0)
            c = (prob.residual(q, jac=False)[0] ** 2).sum(1)
            better = c < best_c
            best_c = torch.where(better, c, best_c)
            best_q = torch.where(better[:, None], q, best_q)
    return best_q


def _mirror(prob: _Problem, q, oef_ref):
    """Resolve the exact two-fold ambiguity of the QQ model.

    dw depends on |Hct dchi0 (1-Y) + chi_ba - chi_nb|, so for every (Y, chi_nb) there is a mirror
    (Y', chi_nb') with the opposite sign of that bracket and the same QSM value: two linear
    equations, solved in closed form here. Both give identical signals and susceptibility (the
    data cannot tell them apart, with or without noise); the branch whose OEF is closer to
    ``oef_ref`` (the OEF prior) is kept. Mirrors outside the bounds are rejected.
    """
    p = prob.params(q)
    Y, v, cnb = p[:, 2], p[:, 3], p[:, 4]
    k1 = HCT * DCHI0
    inner = k1 * (1.0 - Y) + CHI_BA - cnb
    rhs1 = k1 + CHI_BA + inner  # k1 Y' + c' = rhs1  (bracket' = -bracket)
    rhs2 = blood_chi(Y) * v + (1.0 - v / ALPHA) * cnb - v * blood_chi(0.0)
    det = k1 * (1.0 - v / ALPHA) + PSI_HB * DCHI_HB * v
    Ym = (rhs1 * (1.0 - v / ALPHA) - rhs2) / det
    cm = rhs1 - k1 * Ym
    lo, hi = PARAM_BOUNDS["Y"], PARAM_BOUNDS["chi_nb"]
    ok = (Ym >= lo[0]) & (Ym <= lo[1]) & (cm >= hi[0]) & (cm <= hi[1])
    closer = ((1.0 - Ym / YA) - oef_ref).abs() < ((1.0 - Y / YA) - oef_ref).abs()
    swap = ok & closer
    pm = p.clone()
    pm[:, 2] = torch.where(swap, Ym, Y)
    pm[:, 4] = torch.where(swap, cm, cnb)
    return ((pm - prob.lo) / (prob.hi - prob.lo)).clamp(0.0, 1.0)


def _lm(prob: _Problem, q, n_iter: int, mean_prior: bool, progress: bool, tol: float = 1e-12):
    N = q.shape[0]
    mu = torch.full((N,), 1e-2, dtype=q.dtype, device=q.device)
    eye = torch.eye(5, dtype=q.dtype, device=q.device)
    if mean_prior:
        prob.update_prior(q)
    r, J = prob.residual(q, jac=True)
    cost = (r**2).sum(1)
    it_range = range(n_iter)
    if progress:
        from tqdm import tqdm

        it_range = tqdm(it_range, desc="QQ LM")
    for it in it_range:
        g = torch.einsum("nrk,nr->nk", J, r)
        H = torch.einsum("nrk,nrj->nkj", J, J)
        fixed = ((q <= 0.0) & (g > 0)) | ((q >= 1.0) & (g < 0))
        free = (~fixed).to(q.dtype)
        d = torch.diagonal(H, dim1=1, dim2=2)
        A = H * (free[:, :, None] * free[:, None, :]) + eye * (mu[:, None] * (d + 1e-12) + (1.0 - free))[:, :, None]
        delta = torch.linalg.solve(A, -(g * free))
        q_new = (q + delta).clamp(0.0, 1.0)
        r_new, J_new = prob.residual(q_new, jac=True)
        cost_new = (r_new**2).sum(1)
        acc = cost_new < cost
        q = torch.where(acc[:, None], q_new, q)
        r = torch.where(acc[:, None], r_new, r)
        J = torch.where(acc[:, None, None], J_new, J)
        rel = torch.where(acc, (cost - cost_new) / cost.clamp_min(1e-30), torch.zeros_like(cost))
        cost = torch.where(acc, cost_new, cost)
        mu = torch.where(acc, mu * 0.3, mu * 5.0).clamp(1e-9, 1e9)
        if mean_prior:
            prob.update_prior(q)
            r, _ = prob.residual(q, jac=False)
            cost = (r**2).sum(1)
        elif it > 5 and bool(((rel < tol) | (mu >= 1e9)).all()):
            break
    return q, cost


def _oef_sd(prob: _Problem, q, s1):
    """Laplace/Fisher posterior sd of OEF per voxel at the estimate ``q``.

    The objective C is read as -2 log posterior times the normalised-echo noise variance
    ``sigma^2 / S_1^2`` (sigma of the raw magnitudes, estimated from the pooled echo residual with
    E - SD_K_EFF degrees of freedom per voxel), so the posterior precision of the box-scaled
    parameters is ``J^T J S_1^2 / sigma^2`` (Gauss-Newton, including the QSM row and the OEF prior row
    as weighted in C) plus 12 I, the precision of a uniform distribution on the box (caps the sd
    at 1/sqrt(12) where the data say nothing). dOEF = dY / 0.98.
    """
    r, J = prob.residual(q, jac=True)
    E = prob.t.numel()
    N = q.shape[0]
    dof = N * (E - SD_K_EFF)
    if dof <= 0:
        return torch.full((N,), float("nan"), dtype=q.dtype, device=q.device)
    sigma2 = float(((r[:, :E] * s1[:, None]) ** 2).sum()) / dof
    w = (s1**2 / max(sigma2, 1e-300))[:, None, None]
    H = torch.einsum("nrk,nrj->nkj", J, J) * w + 12.0 * torch.eye(5, dtype=q.dtype, device=q.device)
    cov = torch.linalg.inv(H)
    sd_q = cov[:, 2, 2].clamp_min(0.0).sqrt()
    return OEF_SD_CALIBRATION * sd_q * (prob.hi[:, 2] - prob.lo[:, 2]) / YA


def fit_qq(
    magnitude,
    chi,
    te_s: Sequence[float],
    mask,
    B0: float = 3.0,
    w: float = W_DEFAULT,
    lam: float = LAM_DEFAULT,
    oef_wb: float | None = None,
    n_iter: int = 100,
    device=None,
    progress: bool = False,
    y_grid: Sequence[float] = Y_GRID,
    v_grid: Sequence[float] = V_GRID,
) -> dict:
    """Voxelwise QQ fit of mGRE magnitudes and a QSM map.

    Args:
        magnitude: (..., E) mGRE magnitudes (any units), echoes last; numpy or torch.
        chi: (...) QSM values [ppm].
        te_s: E echo times [s], any spacing (first echo used as the normaliser).
        mask: (...) bool, voxels to fit (voxels with echo-1 magnitude <= 0 are skipped).
        B0: field strength [T].
        w: QSM term weight [1/ppm^2] (normalised-signal units).
        lam: OEF prior weight [1/OEF^2]; 0 disables the prior.
        oef_wb: whole-brain OEF prior (fraction); None = mean OEF of the current estimate.
        n_iter: Levenberg-Marquardt iterations.
        device: torch device; default the input tensor's device, else CUDA if available, else CPU.
        progress: show a tqdm progress bar.
        y_grid, v_grid: initialisation grid.

    Returns:
        dict of float32 maps of shape ``mask.shape`` (0 outside the fitted voxels): ``S0`` (input
        units), ``S0_rel`` (relative to echo 1), ``R2`` (1/s), ``Y``, ``v``, ``OEF`` (fractions),
        ``chi_nb`` (ppm), ``cost`` (final objective), ``OEF_sd`` (fraction: Laplace/Fisher posterior
        sd of OEF, see :func:`_oef_sd`); numpy unless ``magnitude`` was a tensor.
    """
    is_t = isinstance(magnitude, torch.Tensor)
    if device is None:
        device = magnitude.device if is_t else ("cuda" if torch.cuda.is_available() else "cpu")
    dt = torch.float64
    mag = torch.as_tensor(magnitude, dtype=dt, device=device)
    chi_t = torch.as_tensor(chi, dtype=dt, device=device)
    m = torch.as_tensor(mask, device=device).bool() & (mag[..., 0] > 0)
    t = torch.as_tensor(np.asarray(te_s, dtype=np.float64), dtype=dt, device=device)
    if t.numel() != mag.shape[-1]:
        raise ValueError(f"{t.numel()} echo times for {mag.shape[-1]} echoes")
    s1 = mag[m][:, 0]
    s = mag[m] / s1[:, None]
    N = s.shape[0]

    # bounds; S0 relative to echo 1: QQ-NET's [0.8, 2.5] unless TE1 is long enough to exceed it
    names = PARAM_NAMES
    lo = torch.tensor([PARAM_BOUNDS[n][0] for n in names], dtype=dt, device=device)
    hi = torch.tensor([PARAM_BOUNDS[n][1] for n in names], dtype=dt, device=device)
    te1 = float(t[0])
    dw_max = GAMMA * B0 / 3.0 * (HCT * DCHI0 + abs(CHI_BA) + 1.0)
    s0_hi = 1.05 * math.exp(PARAM_BOUNDS["R2"][1] * te1 + PARAM_BOUNDS["v"][1] * float(fs(dw_max * te1)))
    hi[0] = max(float(hi[0]), s0_hi)
    lo, hi = lo.expand(N, 5).contiguous(), hi.expand(N, 5).contiguous()

    out_shape = tuple(m.shape)
    result = {}
    if N > 0:
        prob = _Problem(s, chi_t[m], t, B0, w, lam, lo, hi)
        mean_prior = oef_wb is None and lam > 0
        if not mean_prior:
            prob.oef_wb = torch.tensor(float(oef_wb or 0.0), dtype=dt, device=device)
        if mean_prior:
            prob.sl = 0.0  # grid search without the prior, then OEF_wb = mean of the initial OEF
        q = _grid_init(prob, y_grid, v_grid)
        prob.sl = math.sqrt(lam)

        def oef_ref():
            if oef_wb is not None:
                return float(oef_wb)
            if mean_prior:
                prob.update_prior(q)
                return float(prob.oef_wb)
            return OEF_REF_DEFAULT

        q = _mirror(prob, q, oef_ref())
        q, cost = _lm(prob, q, n_iter, mean_prior, progress)
        q = _mirror(prob, q, oef_ref())
        if mean_prior:
            prob.update_prior(q)
        cost = (prob.residual(q, jac=False)[0] ** 2).sum(1)
        oef_sd = _oef_sd(prob, q, s1)
        p = prob.params(q)
    vals = {}
    for i, n in enumerate(names):
        vals[n] = p[:, i] if N > 0 else None
    for n in ("S0_rel", "S0", "R2", "Y", "v", "chi_nb", "OEF", "cost", "OEF_sd"):
        result[n] = torch.zeros(out_shape, dtype=dt, device=device)
    if N > 0:
        result["S0_rel"][m] = vals["S0"]
        result["S0"][m] = vals["S0"] * s1
        for n in ("R2", "Y", "v", "chi_nb"):
            result[n][m] = vals[n]
        result["OEF"][m] = 1.0 - vals["Y"] / YA
        result["cost"][m] = cost
        result["OEF_sd"][m] = oef_sd
    if is_t:
        return {k: v.float() for k, v in result.items()}
    return {k: v.float().cpu().numpy() for k, v in result.items()}
