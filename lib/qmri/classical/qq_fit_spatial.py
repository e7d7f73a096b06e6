"""Spatially regularised QQ (QSM + qBOLD) fit: cluster stage (QQ-CAT-like) + total variation.

Why: voxelwise QQ data do not identify Y. For 8 echoes (4.5-39.5 ms), echo-1 SNR 100 and 0.005 ppm
QSM noise the per-voxel Cramer-Rao bound of OEF is ~65-95 %-points (:mod:`qq_fit`), and most of
that is the Y-v degeneracy: with v known the bound drops to ~20 %-points in GM-like tissue. Pooling
voxels is the only remedy (QQ-CAT / QQ-CCTV, Cho et al. MRM 2018/2020: cluster analysis of time
evolution, total-variation prior). Measured on box phantoms (tests/test_qq_fit_spatial.py), a
plain joint MAP with TV on Y and v is *biased*: with Y and v free per voxel the small TV-allowed
wiggles of Y fit noise (incidental-parameter effect), better so at large v, and the optimum slides
along the Y-v valley to v at its upper bound and OEF ~9 %-points low, even when started from the
truth. So v is fixed first from many voxels at once, then Y is TV-regularised:

1. Noise: sigma (input units) from the residual of the unregularised voxelwise :func:`fit_qq` fit
   (lam = 0) on a random subsample of voxels (``sigma_voxels``), ``sigma^2 = RSS / (N (E - 3.16))``:
   RSS/(N sigma^2) = 4.84 was measured by simulation for 8 echoes (K_EFF_SIGMA = 3.16 effective
   parameters per voxel used by the echoes; 5.14 at lam 1e-2, hence K_EFF = 2.9 for the final
   residual). Fitting ``s_e = |S_e|/S_1`` with weight ``S_1^2`` and a free S0 is exactly the fit
   of the raw magnitudes, so the whitening ``S_1/sigma`` is exact.
2. Cluster stage (QQ-CAT-like): k-means of the normalised echo decays into ``n_clusters``
   clusters; in each, Y and v are shared and S0, R2, chi_nb free per voxel (fitted on up to
   ``cluster_voxels`` random voxels per cluster: grid start, then Gauss-Newton on the Schur
   complement of the shared block), with one prior term N(0.388, 0.05^2) on each cluster's OEF
   (decides clusters without dephasing, e.g. CSF). Sharing Y and v removes the incidental-parameter
   bias. The clusters' (Y, v) start the TV stage, S0, R2, chi_nb of each voxel in closed form.
3. TV stage: all voxels, jointly::

       F(q) = sum_v [ sum_e (|S_ve| - S0_v E_e(p_v))^2 / sigma^2 + (chi_v - chi(p_v))^2 / sigma_chi^2
                      + (v_v - v_cluster)^2 / v_prior_sd^2 + (OEF_v - OEF_wb)^2 / oef_prior_sd^2 ]
              + lam_oef * sum_edges a_e (sqrt(dOEF_e^2 + eps_oef^2) - eps_oef)
              + lam_v   * sum_edges a_e (sqrt(dv_e^2 + eps_v^2) - eps_v)

   Regulariser: anisotropic smoothed TV (Charbonnier: quadratic for jumps below eps, L1 above) of
   OEF, optionally of v, over the edges between face-neighbouring mask voxels; v is in addition
   tied to its cluster value (``v_prior_sd``: v is piecewise constant over clusters up to that
   sd, i.e. regularised more strongly than in a TV sense, because the data cannot separate v from
   Y). ``a_e = (voxel volume / h_d) / (2 mm)^2`` for an edge along axis d with spacing h_d mm (sum
   a_e |du| is the discrete int |du/dx_d| dV in units of (2 mm)^2 mm; a_e = 1 at 2 mm isotropic),
   so lam is in chi2 units per unit jump across one 2 mm face, and the same continuum TV is applied
   at any resolution. Anisotropic (per-edge) TV has a separable curvature, which gives the exact
   Hessian needed for the Laplace sd. The whole-brain OEF prior is off by default: summed over
   10^5 voxels even sd 0.3 is a strong pull towards its centre, which is itself biased when taken
   from a voxelwise fit.

   Optimiser: projected Gauss-Newton / Levenberg-Marquardt on the whole volume with the TV term
   majorised by its quadratic upper bound at the current iterate (lagged diffusivity / IRLS). Per
   voxel the 5x5 normal equations are reduced to the (Y, v) block by the Schur complement of
   (S0, R2, chi_nb), so conjugate gradients (2x2 block-Jacobi preconditioner) only run on the
   2-channel system coupled by the TV graph Laplacian; variables at a box bound whose gradient
   points outwards are frozen for that step (as in :func:`fit_qq`), steps are projected on the box
   [0, 1] of the scaled parameters and accepted by backtracking on the true F. Chosen over L-BFGS or
   Adam because each voxel is extremely badly scaled (S0, R2, chi_nb are determined ~100x better
   than Y and v): the per-voxel curvature handles that exactly and CG only has to propagate along
   the graph. Fixed budget: ``n_iter`` steps of at most ``cg_iter`` CG iterations.
   (:func:`qmri.physics.qq.fs` evaluates its memory-bound series in cache-sized chunks itself.)

Posterior sd (``OEF_sd``): Laplace approximation at the estimate, precision (box-scaled
parameters) ``H = J^T J + (1/2) Hess(TV) + 12 I``: the whitened Gauss-Newton data and prior rows
(noise variance re-estimated from the final residual), the exact curvature of the smoothed TV,
``lam a_e eps^2 / (d_e^2 + eps^2)^(3/2)`` per edge (voxels on the two sides of a sharp edge are not
pooled, voxels in a flat region are), and 12 I = the precision of a uniform distribution on the box
(caps the sd at 1/sqrt(12)). The marginal variances diag(H^-1) of the whole coupled system are
estimated from ``n_sd_samples`` exact samples x = H^-1 z, z ~ N(0, H) (perturb-and-solve with
CG), averaged over each voxel and its face neighbours, and converted with dOEF = dY / 0.98. The
error of the estimate is largely the regulariser's bias (contrast loss at lesions, the clusters'
v), which a Laplace sd does not model; the reported sd is ``SD_CALIBRATION * sd_laplace``, the
factor measured on the tuning phantoms only (see its comment: it is phantom-dependent).
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
import torch

from qmri.classical.qq_fit import W_DEFAULT, Y_GRID, V_GRID, LogLinearFit, _grid_init, _lm, _Problem
from qmri.physics.qq import (
    blood_chi,
    qq_model,
    ALPHA,
    CHI_BA,
    DCHI0,
    GAMMA,
    HCT,
    PARAM_BOUNDS,
    PARAM_NAMES,
    YA,
    fs,
)

K_EFF = 2.9  # echo residual dof per voxel = E - K_EFF (measured, see module docstring)
SIGMA_CHI_DEFAULT = 0.005  # ppm, QSM noise sd
# tuned on the box phantoms (seeds 1-4) and a slab of make_subject(40000): lam_oef 1 / 2 / 3 / 4 gave
# box C_low 0.56 / 0.56 / 0.53 / 0.49, C_high 0.30 / 0.30 / 0.21 / 0.15, RMSE 11.3 / 8.6 / 8.1 / 8.4,
# brain-slab r 0.40 / 0.61 / 0.67 / 0.68, RMSE 8.9 / 5.3 / 4.1 / 3.9 %-points: 2 keeps the lesion
# contrast of 1 without its speckle. eps_oef 0.01 vs 0.03 and v_prior_sd 0.003 vs 0.01 changed the
# box metrics by < 0.05 in C and < 0.5 %-points; lam_v > 0 is not needed once v is tied to its cluster.
LAM_OEF_DEFAULT = 2.0
LAM_V_DEFAULT = 0.0
EPS_OEF_DEFAULT = 0.01  # 1 %-point
EPS_V_DEFAULT = 1e-3
V_PRIOR_SD_DEFAULT = 0.005
N_CLUSTERS_DEFAULT = 8
CLUSTER_OEF_GRID = tuple(0.05 * i for i in range(1, 17))
# one prior term N(population OEF 0.388, 0.05^2) per cluster (see _cluster_fit): without it the
# CSF cluster of make_subject(40000) ended at OEF 0.05, v 0.02 (no dephasing either way)
CLUSTER_OEF_PRIOR_SD = 0.05
CLUSTER_V_GRID = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07)
SIGMA_FLOOR_REL = 1e-5
K_EFF_SIGMA = 3.16  # the same for the unregularised voxelwise fit that estimates sigma (lam = 0)
# Laplace sd calibration: reported sd = SD_CALIBRATION * Laplace sd (see docstring).
# Fitted on the tuning box phantoms only (tests/test_qq_fit_spatial.py seeds 1-4, 24x24x12, SNR 100,
# default weights): the factor that puts 95 % of the pooled voxels within 2 sd is 0.90 (per seed
# 0.79-0.98; the plain Laplace sd covers ~93-99 %). Held-out seed 7: 96.5 %. It depends on the
# error structure: on a smooth whole-brain phantom slab (make_subject(40000), lam 2) the same sd
# covers ~99 % (factor for 95 % there: 0.66), and on the box at lam_oef 3 only 85 %.
SD_CALIBRATION = 0.90
_BOX_PRECISION = 12.0  # 1 / variance of a uniform distribution on [0, 1]
_H_REF_MM = 2.0
_A = [2, 3]  # (Y, v): the regularised / shared channels
_B = [0, 1, 4]  # (S0, R2, chi_nb): per voxel


class _Model:
    """Whitened residuals and Jacobian (box-scaled parameters) of the per-voxel data and prior rows.

    Rows: E echoes ``ws (S0 E_e - s_e)``, QSM ``(chi_model - chi) / sigma_chi``, OEF prior
    ``wo (OEF - oef_wb)``, v prior ``wv (v - v_ref)``.
    """

    def __init__(self, s, chi, t, B0, ws, sigma_chi, lo, hi):
        self.s, self.chi, self.t = s, chi, t
        self.B0 = B0
        self.c = GAMMA * B0 / 3.0
        self.ws = ws
        self.wc = 1.0 / sigma_chi
        self.wo, self.oef_wb = 0.0, 0.0
        self.wv, self.v_ref = 0.0, torch.zeros_like(chi)
        self.lo, self.hi = lo, hi  # (5,) each

    def subset(self, idx):
        m = _Model(self.s[idx], self.chi[idx], self.t, self.B0, self.ws[idx], 1.0 / self.wc, self.lo, self.hi)
        m.wo, m.oef_wb, m.wv, m.v_ref = self.wo, self.oef_wb, self.wv, self.v_ref[idx]
        return m

    def params(self, q):
        return self.lo + q * (self.hi - self.lo)

    def residual(self, q, jac: bool):
        p = self.params(q)
        S0, R2, Y, v, cnb = p.unbind(1)
        S, chim, JS, jc = qq_model(S0, R2, Y, v, cnb, self.t, self.B0, jac=jac)
        ws = self.ws[:, None]
        r = torch.cat(
            [
                ws * (S - self.s),
                (self.wc * (chim - self.chi))[:, None],
                (self.wo * (1.0 - Y / YA - self.oef_wb))[:, None],
                (self.wv * (v - self.v_ref))[:, None],
            ],
            dim=1,
        )
        if not jac:
            return r, None
        zero = torch.zeros_like(S0)
        Jo = torch.stack([zero, zero, torch.full_like(S0, -self.wo / YA), zero, zero], dim=1)
        Jv = torch.stack([zero, zero, zero, torch.full_like(S0, self.wv), zero], dim=1)
        J = torch.cat([ws[:, :, None] * JS, (self.wc * jc)[:, None], Jo[:, None], Jv[:, None]], dim=1) * (self.hi - self.lo)
        return r, J


def _edges(m: torch.Tensor, voxel_size_mm):
    """Face-neighbour edges (i, j) between mask voxels (indices into m's True voxels) and a_e."""
    idx = torch.full(m.shape, -1, dtype=torch.long, device=m.device)
    N = int(m.sum())
    idx[m] = torch.arange(N, device=m.device)
    h = [float(x) for x in np.broadcast_to(np.asarray(voxel_size_mm, dtype=np.float64), (3,))]
    vol = h[0] * h[1] * h[2]
    ei, ej, ea = [], [], []
    for d in range(min(3, m.dim())):
        a = idx.narrow(d, 0, m.shape[d] - 1)
        b = idx.narrow(d, 1, m.shape[d] - 1)
        ok = (a >= 0) & (b >= 0)
        ei.append(a[ok])
        ej.append(b[ok])
        ea.append(torch.full((int(ok.sum()),), vol / h[d] / _H_REF_MM**2, dtype=torch.float64, device=m.device))
    return torch.cat(ei), torch.cat(ej), torch.cat(ea)


class _TV:
    """Smoothed anisotropic TV of (OEF, v) over the mask edges, in box-scaled parameters."""

    def __init__(self, edges, lam, eps, scale):
        self.ei, self.ej, self.ea = edges
        self.lam, self.eps, self.scale = lam, eps, scale  # (2,) each, channels (OEF, v)

    def diffs(self, q):
        u = q[:, _A] * self.scale
        return u[self.ej] - u[self.ei]

    def value(self, q):
        if self.ei.numel() == 0:
            return 0.0
        d = self.diffs(q)
        return float((((d * d + self.eps**2).sqrt() - self.eps) * self.ea[:, None]).sum(0) @ self.lam)

    def grad_weights(self, q, exact: bool):
        """Gradient wrt q[:, (Y, v)] (N, 2) and per-edge curvature (M, 2): the quadratic majoriser's
        (lagged diffusivity) or, with ``exact``, the true second derivative."""
        d = self.diffs(q)
        phi = (d * d + self.eps**2).sqrt()
        la = self.ea[:, None] * self.lam
        f = la * d / phi * self.scale
        g = torch.zeros(q.shape[0], 2, dtype=q.dtype, device=q.device)
        g.index_add_(0, self.ej, f)
        g.index_add_(0, self.ei, -f)
        w = la * (self.eps**2 / phi**3 if exact else 1.0 / phi) * self.scale**2
        return g, w

    def lap(self, x2, w):
        f = w * (x2[self.ej] - x2[self.ei])
        out = torch.zeros_like(x2)
        out.index_add_(0, self.ej, f)
        out.index_add_(0, self.ei, -f)
        return out

    def lap_diag(self, w, N):
        out = torch.zeros(N, 2, dtype=w.dtype, device=w.device)
        out.index_add_(0, self.ej, w)
        out.index_add_(0, self.ei, w)
        return out


def _mv2(M, x):
    """Batched 2x2 matrix-vector product (elementwise: much faster than bmm for 2x2)."""
    return torch.stack([M[:, 0, 0] * x[:, 0] + M[:, 0, 1] * x[:, 1], M[:, 1, 0] * x[:, 0] + M[:, 1, 1] * x[:, 1]], 1)


def _inv2(M):
    det = M[:, 0, 0] * M[:, 1, 1] - M[:, 0, 1] * M[:, 1, 0]
    inv = torch.stack([torch.stack([M[:, 1, 1], -M[:, 0, 1]], 1), torch.stack([-M[:, 1, 0], M[:, 0, 0]], 1)], 1)
    return inv / det[:, None, None]


def _pcg(apply_A, b, Minv, n_iter: int, tol: float):
    """Preconditioned CG for (N, 2) unknowns with a 2x2 block preconditioner."""
    x = torch.zeros_like(b)
    b_norm = float(b.norm())
    if b_norm == 0.0 or n_iter <= 0:
        return x
    r = b.clone()
    z = _mv2(Minv, r)
    p = z.clone()
    rz = (r * z).sum()
    for _ in range(n_iter):
        Ap = apply_A(p)
        pAp = (p * Ap).sum()
        if float(pAp) <= 0:
            break
        alpha = rz / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        if float(r.norm()) < tol * b_norm:
            break
        z = _mv2(Minv, r)
        rz_new = (r * z).sum()
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x


def _schur_solve(H, g, tv: _TV, w, cg_iter: int, tol: float, free=None):
    """Solve (H + L_w on (Y, v)) delta = -g, H (N,5,5) block diagonal, via the Schur complement of
    (S0, R2, chi_nb) per voxel and PCG on the (Y, v) system. ``free`` (N,5) freezes variables."""
    if free is not None:
        ff = free[:, :, None] * free[:, None, :]
        H = H * ff + torch.diag_embed(1.0 - free)
        g = g * free
    Hbb_inv = torch.linalg.inv(H[:, _B][:, :, _B])
    Hab = H[:, _A][:, :, _B]
    X = Hab @ Hbb_inv  # (N,2,3)
    S = H[:, _A][:, :, _A] - X @ Hab.transpose(1, 2)
    rhs = -(g[:, _A] - torch.einsum("nij,nj->ni", X, g[:, _B]))
    fa = free[:, _A] if free is not None else None
    N = H.shape[0]
    if tv is not None and w is not None:
        P = S + torch.diag_embed(tv.lap_diag(w, N) * (fa if fa is not None else 1.0))
    else:
        P = S
    Minv = _inv2(P)

    def apply_A(x):
        y = _mv2(S, x)
        if tv is not None and w is not None:
            y = y + (tv.lap(x * fa, w) * fa if fa is not None else tv.lap(x, w))
        return y

    da = _pcg(apply_A, rhs, Minv, cg_iter, tol) if tv is not None and w is not None else _mv2(Minv, rhs)
    db = -torch.einsum("nij,nj->ni", Hbb_inv, g[:, _B] + torch.einsum("nji,nj->ni", Hab, da))
    delta = torch.zeros_like(g)
    delta[:, _A] = da
    delta[:, _B] = db
    return delta if free is None else delta * free


def _tv_fit(model: _Model, tv: _TV, q, n_iter: int, cg_iter: int, progress: bool):
    def objective(qq, jac):
        r, J = model.residual(qq, jac)
        return float((r * r).sum()) + tv.value(qq), r, J

    F, r, J = objective(q, True)
    history = [F]
    mu = 1e-3
    it_range = range(n_iter)
    if progress:
        from tqdm import tqdm

        it_range = tqdm(it_range, desc="QQ spatial (TV)")
    for _ in it_range:
        gtv, wtv = tv.grad_weights(q, exact=False)
        g = 2.0 * torch.einsum("nrk,nr->nk", J, r)
        g[:, _A] += gtv
        H = 2.0 * torch.einsum("nrk,nrj->nkj", J, J)
        fixed = ((q <= 0.0) & (g > 0)) | ((q >= 1.0) & (g < 0))
        free = (~fixed).to(q.dtype)
        dH = torch.diagonal(H, dim1=1, dim2=2)
        H = H + torch.diag_embed(mu * dH + 1e-9 * dH.mean(0) + 1e-12)
        delta = _schur_solve(H, g, tv, wtv, cg_iter, 1e-3, free)
        accepted = False
        for step in (1.0, 0.3, 0.1):
            q_new = (q + step * delta).clamp(0.0, 1.0)
            F_new, r_new, J_new = objective(q_new, True)
            if F_new < F:
                accepted = True
                break
        if accepted:
            rel = (F - F_new) / max(abs(F), 1e-300)
            q, F, r, J = q_new, F_new, r_new, J_new
            mu = max(mu * (0.3 if step == 1.0 else 3.0), 1e-7)
        else:
            rel = 0.0
            mu = min(mu * 10.0, 1e6)
        history.append(F)
        if progress:
            it_range.set_postfix(F=f"{F:.6g}", mu=f"{mu:.0e}")
        if accepted and rel < 1e-7:
            break
    return q, history


def _kmeans(x, K: int, n_iter: int, gen: torch.Generator):
    """k-means (k-means++ seeding) of the rows of x (N, D); labels (N,) 0..K'-1 and K'."""
    N = x.shape[0]
    K = max(1, min(int(K), N))
    cent = x[torch.randint(N, (1,), generator=gen, device=x.device)]
    d2 = ((x - cent[0]) ** 2).sum(1)
    for _ in range(1, K):
        tot = float(d2.sum())
        if tot <= 0:
            break
        i = torch.multinomial(d2 / tot, 1, generator=gen)
        cent = torch.cat([cent, x[i]], 0)
        d2 = torch.minimum(d2, ((x - x[i]) ** 2).sum(1))
    for _ in range(n_iter):
        lab = torch.cdist(x, cent).argmin(1)
        cnt = torch.bincount(lab, minlength=cent.shape[0]).to(x.dtype)
        sums = torch.zeros_like(cent).index_add_(0, lab, x)
        cent = torch.where(cnt[:, None] > 0, sums / cnt.clamp_min(1)[:, None], cent)
    lab = torch.cdist(x, cent).argmin(1)
    used = torch.unique(lab)
    remap = torch.full((cent.shape[0],), -1, dtype=torch.long, device=x.device)
    remap[used] = torch.arange(used.numel(), device=x.device)
    return remap[lab], int(used.numel())


def _closed_form(model: _Model, Y, v):
    """q with the given (Y, v) per voxel, chi_nb from the QSM equation and (S0, R2) from a weighted
    log-linear fit of ``log s_e + v f_s(dw t_e) = log S0 - R2 t_e`` (as qq_fit's grid search)."""
    s, chi, t = model.s, model.chi, model.t
    cnb = ((chi - blood_chi(Y) * v) / (1.0 - v / ALPHA)).clamp(*PARAM_BOUNDS["chi_nb"])
    dw = model.c * (HCT * DCHI0 * (1.0 - Y) + CHI_BA - cnb).abs()
    S0, R2 = LogLinearFit(s, t)(v[:, None] * fs(dw[:, None] * t))
    p = torch.stack([S0, R2, Y, v, cnb], 1)
    return ((p - model.lo) / (model.hi - model.lo)).clamp(0.0, 1.0)


def _cluster_fit(model: _Model, lab, K: int, n_iter: int, oef_ref: float = 1.0 - 0.6 / YA, oef_sd: float = CLUSTER_OEF_PRIOR_SD):
    """Y and v shared within each cluster, S0, R2, chi_nb per voxel; clusters are independent.

    Start: per cluster the best (OEF, v) of CLUSTER_OEF_GRID x CLUSTER_V_GRID (per-voxel parameters
    in closed form); then Levenberg-Marquardt on the shared block: per voxel the 5x5 normal equations
    are reduced to (Y, v) by the Schur complement, summed over the cluster and solved (2x2, per-cluster
    damping and acceptance, bounds by freezing); the per-voxel parameters follow by back-substitution.
    Each cluster's OEF carries a prior N(oef_ref, oef_sd^2) (one term per cluster, default the
    population prior Y = 0.6 with sd 10 %-points): negligible for a cluster of thousands of voxels
    with dephasing, decisive for clusters without it (CSF, v ~ 0), whose likelihood is flat along
    v f_s(dw t) = 0 and would otherwise end at an arbitrary OEF (often ~0, i.e. dw ~ 0).
    Returns the shared (Y, v) per cluster (K, 2) in box-scaled units and q (N, 5).
    """
    kY = -(model.hi[2] - model.lo[2]) / YA / oef_sd  # d(prior residual) / d q_Y

    def prior_r(qY):
        return (1.0 - (model.lo[2] + qY * (model.hi[2] - model.lo[2])) / YA - oef_ref) / oef_sd

    dt, dev = model.s.dtype, model.s.device
    N = model.s.shape[0]

    def csum(x):
        return torch.zeros((K,) + x.shape[1:], dtype=dt, device=dev).index_add_(0, lab, x)

    best = torch.full((K,), float("inf"), dtype=dt, device=dev)
    q = None
    for oef in CLUSTER_OEF_GRID:
        for v in CLUSTER_V_GRID:
            Yg = torch.full((N,), YA * (1.0 - oef), dtype=dt, device=dev)
            qg = _closed_form(model, Yg, torch.full((N,), float(v), dtype=dt, device=dev))
            r, _ = model.residual(qg, False)
            c = csum((r * r).sum(1)) + ((1.0 - oef - oef_ref) / oef_sd) ** 2
            better = c < best
            best = torch.where(better, c, best)
            q = qg if q is None else torch.where(better[lab][:, None], qg, q)

    def cluster_qa(qq):
        return csum(qq[:, _A]) / torch.bincount(lab, minlength=K).to(dt).clamp_min(1)[:, None]

    r, J = model.residual(q, True)
    cost = csum((r * r).sum(1)) + prior_r(cluster_qa(q)[:, 0]) ** 2
    mu = torch.full((K,), 1e-2, dtype=dt, device=dev)
    eye2 = torch.eye(2, dtype=dt, device=dev)
    for _ in range(n_iter):
        H = torch.einsum("nrk,nrj->nkj", J, J)
        g = torch.einsum("nrk,nr->nk", J, r)
        Hbb = H[:, _B][:, :, _B]
        Hab = H[:, _A][:, :, _B]
        dbb = torch.diagonal(Hbb, dim1=1, dim2=2)
        Hbb_inv = torch.linalg.inv(Hbb + torch.diag_embed(mu[lab][:, None] * dbb + 1e-12))
        X = Hab @ Hbb_inv
        Sc = csum(H[:, _A][:, :, _A] - X @ Hab.transpose(1, 2))
        tc = csum(g[:, _A] - torch.einsum("nij,nj->ni", X, g[:, _B]))
        qa = cluster_qa(q)
        Sc[:, 0, 0] += kY**2
        tc[:, 0] += kY * prior_r(qa[:, 0])
        fixed = ((qa <= 1e-12) & (tc > 0)) | ((qa >= 1 - 1e-12) & (tc < 0))
        free = (~fixed).to(dt)
        dS = torch.diagonal(Sc, dim1=1, dim2=2)
        damp = mu[:, None] * dS + 1e-12 * dS.mean() + 1e-300 + (1.0 - free)
        A = Sc * (free[:, :, None] * free[:, None, :]) + eye2 * damp[:, :, None]
        da = _mv2(_inv2(A), -(tc * free))[lab]
        db = -torch.einsum("nij,nj->ni", Hbb_inv, g[:, _B] + torch.einsum("nji,nj->ni", Hab, da))
        q_new = q.clone()
        q_new[:, _A] += da
        q_new[:, _B] += db
        q_new = q_new.clamp(0.0, 1.0)
        r_new, J_new = model.residual(q_new, True)
        c_new = csum((r_new * r_new).sum(1)) + prior_r(cluster_qa(q_new)[:, 0]) ** 2
        acc = c_new < cost
        av = acc[lab]
        q = torch.where(av[:, None], q_new, q)
        r = torch.where(av[:, None], r_new, r)
        J = torch.where(av[:, None, None], J_new, J)
        cost = torch.where(acc, c_new, cost)
        mu = torch.where(acc, mu * 0.3, mu * 5.0).clamp(1e-9, 1e9)
    return cluster_qa(q), q


def _post_sd(model: _Model, tv: _TV, q, n_samples: int, cg_iter: int, gen: torch.Generator):
    """Laplace marginal sd of q[:, (Y, v)] by perturb-and-solve sampling (see module docstring)."""
    _, J = model.residual(q, True)
    N = q.shape[0]
    dt, dev = q.dtype, q.device
    _, wex = tv.grad_weights(q, exact=True)
    wex = 0.5 * wex  # -log posterior = F / 2
    H = torch.einsum("nrk,nrj->nkj", J, J) + _BOX_PRECISION * torch.eye(5, dtype=dt, device=dev)
    sw = wex.sqrt()
    acc = torch.zeros(N, 2, dtype=dt, device=dev)
    for _ in range(n_samples):
        z = torch.einsum("nrk,nr->nk", J, torch.randn(J.shape[:2], dtype=dt, device=dev, generator=gen))
        z = z + math.sqrt(_BOX_PRECISION) * torch.randn(N, 5, dtype=dt, device=dev, generator=gen)
        xi = sw * torch.randn(sw.shape, dtype=dt, device=dev, generator=gen)
        zr = torch.zeros(N, 2, dtype=dt, device=dev)
        zr.index_add_(0, tv.ej, xi)
        zr.index_add_(0, tv.ei, -xi)
        z[:, _A] += zr
        x = _schur_solve(H, -z, tv, wex, cg_iter, 1e-4)
        acc += x[:, _A] ** 2
    var = acc / max(n_samples, 1)
    s = var.clone()
    cnt = torch.ones(N, dtype=dt, device=dev)
    s.index_add_(0, tv.ej, var[tv.ei])
    s.index_add_(0, tv.ei, var[tv.ej])
    cnt.index_add_(0, tv.ej, torch.ones_like(tv.ea))
    cnt.index_add_(0, tv.ei, torch.ones_like(tv.ea))
    return (s / cnt[:, None]).sqrt()


def _estimate_sigma(s, chi, t, s1, B0, lo, hi, n_max: int, gen: torch.Generator):
    """Echo noise sd (input units) from the unregularised voxelwise fit (fit_qq's, lam = 0) on <= n_max
    voxels: sigma^2 = RSS / (n (E - K_EFF_SIGMA)) (no prior, so noiseless data give ~0)."""
    N = s.shape[0]
    idx = torch.randperm(N, generator=gen, device=s.device)[:n_max] if N > n_max else torch.arange(N, device=s.device)
    n = idx.numel()
    lo_n, hi_n = lo.expand(n, 5).contiguous(), hi.expand(n, 5).contiguous()
    prob = _Problem(s[idx], chi[idx], t, B0, W_DEFAULT, 0.0, lo_n, hi_n)
    q = _grid_init(prob, Y_GRID, V_GRID)
    q, _ = _lm(prob, q, 60, False, False)
    r, _ = prob.residual(q, jac=False)
    E = t.numel()
    return math.sqrt(float(((r[:, :E] * s1[idx][:, None]) ** 2).sum()) / (n * max(E - K_EFF_SIGMA, 0.5)))


def fit_qq_spatial(
    magnitude,
    chi,
    te_s: Sequence[float],
    mask,
    B0: float = 3.0,
    voxel_size_mm=(2.0, 2.0, 2.0),
    lam_oef: float = LAM_OEF_DEFAULT,
    lam_v: float = LAM_V_DEFAULT,
    eps_oef: float = EPS_OEF_DEFAULT,
    eps_v: float = EPS_V_DEFAULT,
    v_prior_sd: float | None = V_PRIOR_SD_DEFAULT,
    oef_prior_sd: float | None = None,
    oef_wb: float | None = None,
    sigma: float | None = None,
    sigma_chi: float = SIGMA_CHI_DEFAULT,
    n_clusters: int = N_CLUSTERS_DEFAULT,
    cluster_voxels: int = 3000,
    cluster_iter: int = 30,
    sigma_voxels: int = 20000,
    n_iter: int = 40,
    cg_iter: int = 50,
    n_sd_samples: int = 8,
    sd_cg_iter: int = 100,
    seed: int = 0,
    init: dict | None = None,
    device=None,
    progress: bool = False,
    return_info: bool = False,
) -> dict:
    """Spatially regularised QQ fit (cluster stage + TV on OEF) of mGRE magnitudes and a QSM map.

    Args:
        magnitude: (x, y, z, E) mGRE magnitudes (any units), echoes last; numpy or torch.
        chi: (x, y, z) QSM [ppm].
        te_s: E echo times [s].
        mask: (x, y, z) bool; voxels with echo-1 magnitude <= 0 are skipped.
        B0: field strength [T].
        voxel_size_mm: voxel spacing [mm] (scalar or 3 values).
        lam_oef, lam_v: TV weights of OEF and v (chi2 units per unit jump across a 2 mm face).
        eps_oef, eps_v: TV smoothing (jumps below eps are penalised quadratically).
        v_prior_sd: sd [fraction] tying each voxel's v to its cluster's v (None: off).
        oef_prior_sd: sd of a per-voxel whole-brain OEF prior (None, the default: off).
        oef_wb: its centre (fraction); None = mean OEF of the cluster stage.
        sigma: echo noise sd in input units; None = estimated (voxelwise fit on ``sigma_voxels``).
        sigma_chi: QSM noise sd [ppm].
        n_clusters: clusters of the QQ-CAT-like stage (k-means of the normalised echo decays).
        cluster_voxels: voxels per cluster used to fit its shared (Y, v).
        cluster_iter: Levenberg-Marquardt iterations of the cluster stage.
        sigma_voxels: voxels of the voxelwise fit that estimates sigma.
        n_iter, cg_iter: Gauss-Newton steps of the TV stage and CG iterations per step.
        n_sd_samples, sd_cg_iter: samples / CG iterations of the Laplace OEF sd (0: OEF_sd = 0).
        seed: seed of the subsampling, k-means and sd sampling (results are deterministic).
        init: optional start {"S0" (input units), "R2", "Y", "v", "chi_nb"} for the TV stage
            (replaces the cluster stage's maps; the v prior then ties v to ``init["v"]``).
        device: torch device (default: the input tensor's, else CPU).
        progress: tqdm progress bar of the TV stage.
        return_info: add ``info`` (sigma, clusters, objective history, seconds per stage).

    Returns:
        dict of float32 maps of shape ``mask.shape`` (0 outside the fitted voxels): ``S0`` (input
        units), ``S0_rel`` (relative to echo 1), ``R2`` (1/s), ``Y``, ``v``, ``OEF``, ``OEF_sd``
        (fractions), ``chi_nb`` (ppm), ``cost`` (per-voxel whitened data chi2: echoes / sigma^2 +
        QSM / sigma_chi^2); numpy unless ``magnitude`` was a tensor.
    """
    t0 = time.time()
    is_t = isinstance(magnitude, torch.Tensor)
    if device is None:
        device = magnitude.device if is_t else "cpu"
    dt = torch.float64
    mag = torch.as_tensor(magnitude, dtype=dt, device=device)
    chi_t = torch.as_tensor(chi, dtype=dt, device=device)
    m = torch.as_tensor(mask, device=device).bool() & (mag[..., 0] > 0)
    t = torch.as_tensor(np.asarray(te_s, dtype=np.float64), dtype=dt, device=device)
    if t.numel() != mag.shape[-1]:
        raise ValueError(f"{t.numel()} echo times for {mag.shape[-1]} echoes")
    if m.dim() != 3:
        raise ValueError(f"mask must be 3D, got shape {tuple(m.shape)}")
    lo = torch.tensor([PARAM_BOUNDS[n][0] for n in PARAM_NAMES], dtype=dt, device=device)
    hi = torch.tensor([PARAM_BOUNDS[n][1] for n in PARAM_NAMES], dtype=dt, device=device)
    dw_max = GAMMA * B0 / 3.0 * (HCT * DCHI0 + abs(CHI_BA) + 1.0)
    te1 = float(t[0])
    s0_hi = 1.05 * math.exp(PARAM_BOUNDS["R2"][1] * te1 + PARAM_BOUNDS["v"][1] * float(fs(dw_max * te1)))
    hi[0] = max(float(hi[0]), s0_hi)  # S0 relative to echo 1, widened for long TE1 (as fit_qq)
    s1 = mag[m][:, 0]
    s = mag[m] / s1[:, None]
    chi_v = chi_t[m]
    N = s.shape[0]
    E = t.numel()
    info: dict = {"n_voxels": N}
    names = ("S0_rel", "S0", "R2", "Y", "v", "chi_nb", "OEF", "OEF_sd", "cost")
    result = {n: torch.zeros(tuple(m.shape), dtype=dt, device=device) for n in names}
    if N > 0:
        gen = torch.Generator(device=device).manual_seed(int(seed))
        if sigma is None:
            sigma = _estimate_sigma(s, chi_v, t, s1, B0, lo, hi, sigma_voxels, gen)
            # floor (noiseless data): SNR of the mean echo 1 capped at 1 / SIGMA_FLOOR_REL
            sigma = max(sigma, SIGMA_FLOOR_REL * float(s1.mean()))
        info["sigma"] = float(sigma)
        info["t_sigma_s"] = time.time() - t0
        model = _Model(s, chi_v, t, B0, s1 / float(sigma), sigma_chi, lo, hi)
        # --- cluster stage
        if n_clusters > 0:
            lab, K = _kmeans(s[:, 1:], n_clusters, 20, gen)
        else:
            lab, K = torch.zeros(N, dtype=torch.long, device=device), 1
        sub = []
        for k in range(K):
            ik = torch.nonzero(lab == k)[:, 0]
            if ik.numel() > cluster_voxels:
                ik = ik[torch.randperm(ik.numel(), generator=gen, device=device)[:cluster_voxels]]
            sub.append(ik)
        sub = torch.cat(sub)
        qa, _ = _cluster_fit(model.subset(sub), lab[sub], K, cluster_iter)
        pa = lo[_A] + qa * (hi[_A] - lo[_A])
        info["n_clusters"] = K
        info["cluster_oef"] = [float(x) for x in 1.0 - pa[:, 0] / YA]
        info["cluster_v"] = [float(x) for x in pa[:, 1]]
        info["cluster_size"] = [int(x) for x in torch.bincount(lab, minlength=K)]
        q = _closed_form(model, pa[lab, 0], pa[lab, 1])
        info["t_cluster_s"] = time.time() - t0
        if init is not None:
            p_init = torch.stack([torch.as_tensor(init[n], dtype=dt, device=device)[m] for n in PARAM_NAMES], 1)
            p_init[:, 0] = p_init[:, 0] / s1
            q = ((p_init - lo) / (hi - lo)).clamp(0.0, 1.0)
        p_start = lo + q * (hi - lo)
        if oef_prior_sd is not None:
            model.wo = 1.0 / float(oef_prior_sd)
            model.oef_wb = float((1.0 - p_start[:, 2] / YA).mean()) if oef_wb is None else float(oef_wb)
        if v_prior_sd is not None:
            model.wv = 1.0 / float(v_prior_sd)
            model.v_ref = p_start[:, 3].clone()
        # --- TV stage
        scale = torch.stack([(hi[2] - lo[2]) / YA, hi[3] - lo[3]])
        lam = torch.tensor([lam_oef, lam_v], dtype=dt, device=device)
        eps = torch.tensor([eps_oef, eps_v], dtype=dt, device=device)
        tv = _TV(_edges(m, voxel_size_mm), lam, eps, scale)
        q, hist = _tv_fit(model, tv, q, n_iter, cg_iter, progress)
        info["objective"] = hist
        info["t_fit_s"] = time.time() - t0
        r, _ = model.residual(q, False)
        cost = (r[:, : E + 1] ** 2).sum(1)
        # noise variance re-estimated from the final residual (echo rows)
        var_fac = float((r[:, :E] ** 2).sum()) / (N * max(E - K_EFF, 0.5))
        info["residual_variance_factor"] = var_fac
        if n_sd_samples > 0:
            ws = model.ws
            model.ws = ws / math.sqrt(var_fac)
            sdq = _post_sd(model, tv, q, n_sd_samples, sd_cg_iter, gen)
            model.ws = ws
            sd_lap = sdq[:, 0] * (hi[2] - lo[2]) / YA
            info["oef_sd_laplace_median"] = float(sd_lap.median())
            oef_sd = SD_CALIBRATION * sd_lap
        else:
            oef_sd = torch.zeros(N, dtype=dt, device=device)
        info["t_total_s"] = time.time() - t0
        p = lo + q * (hi - lo)
        result["S0_rel"][m] = p[:, 0]
        result["S0"][m] = p[:, 0] * s1
        for i, n in ((1, "R2"), (2, "Y"), (3, "v"), (4, "chi_nb")):
            result[n][m] = p[:, i]
        result["OEF"][m] = 1.0 - p[:, 2] / YA
        result["OEF_sd"][m] = oef_sd
        result["cost"][m] = cost
    if is_t:
        out = {k: v.float() for k, v in result.items()}
    else:
        out = {k: v.float().cpu().numpy() for k, v in result.items()}
    if return_info:
        out["info"] = info
    return out
