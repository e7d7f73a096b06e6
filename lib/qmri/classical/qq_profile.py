"""Profile likelihood of venous oxygenation for the QQ model, voxel by voxel and pooled over space.

One voxel's 8 echoes identify Y (hence OEF) far too weakly (Cramer-Rao sd ~80 %-points at SNR 100,
:mod:`qmri.physics.qq_crb`), but a region that shares its Y while every other parameter varies
voxel by voxel carries sqrt(N) times more information. This module computes, for every voxel and
every OEF of a grid, the smallest squared misfit of the voxel's echoes over the nuisance
parameters (the *profile*):

* chi_nb follows from the measured QSM given Y and v (the QSM equation is linear in chi_nb);
* v is profiled over a grid (:data:`V_GRID`);
* S0 and R2 come from a weighted log-linear fit of ``log s_e + v f_s(dw t_e) = log S0 - R2 t_e``
  (weights s_e^2, the inverse variance of log s_e), as the classical fit's initialisation does.

Summing the profile over a neighbourhood gives the region's profile log-likelihood of OEF. Its
minimum is biased towards mid-range OEF when the nuisance parameters are free per voxel (the
Neyman-Scott problem: measured on a phantom, a 31 mm penumbra of true OEF 71 % has its region-
summed minimum at 56 %), so the pooled curves are features for a network that learns the
calibration (:class:`qmri.models.oefnet.net.ContextNet` with ``profile=True``), not estimates.

Units: echoes in any unit (the misfit is normalised by the noise variance estimated from the data),
QSM in ppm, echo times in s, OEF and v as fractions, sigmas in voxels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from .qq_fit import LogLinearFit
from ..physics.qq import ALPHA, CHI_BA, DCHI0, GAMMA, HCT, YA, blood_chi, fs

OEF_GRID = tuple(float(x) for x in np.linspace(0.04, 0.81, 12))  # fraction
V_GRID = (0.005, 0.015, 0.025, 0.04, 0.055, 0.075)  # fraction
POOL_SIGMAS = (1.0, 2.0, 4.0)  # voxels (2, 4, 8 mm at 2 mm)
N_FIT = 3  # parameters fitted per (voxel, OEF): S0, R2 and v (chi_nb follows from the QSM)


def profile_sse(s: torch.Tensor, chi: torch.Tensor, te_s: Sequence[float], oef_grid: Sequence[float] = OEF_GRID, v_grid: Sequence[float] = V_GRID, B0: float = 3.0) -> torch.Tensor:
    """(N, K) smallest sum of squared echo residuals of each voxel at each OEF of ``oef_grid``.

    ``s`` (N, E) echo magnitudes (any unit; the residuals are in the same unit squared), ``chi``
    (N,) QSM [ppm], ``te_s`` E echo times [s]. float64 internally.
    """
    s = s.to(torch.float64)
    chi = chi.to(torch.float64)
    t = torch.as_tensor(np.asarray(te_s, dtype=np.float64), device=s.device)
    loglin = LogLinearFit(s, t)
    out = torch.empty((s.shape[0], len(oef_grid)), dtype=torch.float64, device=s.device)
    for i, oef in enumerate(oef_grid):
        best = torch.full((s.shape[0],), float("inf"), dtype=torch.float64, device=s.device)
        for v in v_grid:
            best = torch.minimum(best, _sse_at(loglin, s, chi, t, float(oef), float(v), B0))
        out[:, i] = best
    return out


def sse_grid(s: torch.Tensor, chi: torch.Tensor, te_s: Sequence[float], oef_grid: Sequence[float], v_grid: Sequence[float], B0: float = 3.0) -> torch.Tensor:
    """(N, K, V) sum of squared echo residuals of each voxel at each (OEF, v) of the two grids,
    S0 and R2 fitted, chi_nb from the QSM (the profile of :func:`profile_sse` before the minimum
    over v). Inputs as :func:`profile_sse`; float64."""
    s = s.to(torch.float64)
    chi = chi.to(torch.float64)
    t = torch.as_tensor(np.asarray(te_s, dtype=np.float64), device=s.device)
    loglin = LogLinearFit(s, t)
    out = torch.empty((s.shape[0], len(oef_grid), len(v_grid)), dtype=torch.float64, device=s.device)
    for i, oef in enumerate(oef_grid):
        for j, v in enumerate(v_grid):
            out[:, i, j] = _sse_at(loglin, s, chi, t, float(oef), float(v), B0)
    return out


def _sse_at(loglin: LogLinearFit, s: torch.Tensor, chi: torch.Tensor, t: torch.Tensor, oef: float, v: float, B0: float) -> torch.Tensor:
    """(N,) squared echo misfit at one OEF and v (fractions): chi_nb from the QSM equation, S0 and
    R2 from ``loglin`` (the weighted log-linear fit of the voxels' echoes ``s``)."""
    Y = YA * (1.0 - oef)
    cnb = (chi - blood_chi(Y) * v) / (1.0 - v / ALPHA)
    F = fs((GAMMA * B0 / 3.0 * (HCT * DCHI0 * (1.0 - Y) + CHI_BA - cnb).abs())[:, None] * t)
    S0, R2 = loglin(v * F)
    return ((S0[:, None] * torch.exp(-R2[:, None] * t - v * F) - s) ** 2).sum(1)


def noise_variance(sse: torch.Tensor, n_echoes: int) -> float:
    """Echo noise variance estimated from the profile's best fits: the median over voxels of the
    smallest misfit divided by its degrees of freedom (echoes - :data:`N_FIT`)."""
    return float(torch.median(sse.min(1).values)) / max(n_echoes - N_FIT, 1)


def pooled_profile_features(s: np.ndarray, chi: np.ndarray, mask: np.ndarray, te_s: Sequence[float], sigmas: Sequence[float] = POOL_SIGMAS, B0: float = 3.0) -> np.ndarray:
    """(N, K x len(sigmas)) features of the N ``mask`` voxels (C order): for each pooling sigma
    (voxels), ``log1p`` of the Gaussian-pooled profile negative log-likelihood of each grid OEF
    minus its minimum over the grid (a region's log-likelihood ratio curve; the pooled mean times
    the kernel's effective voxel count ``(2 sqrt(pi) sigma)^3``, normalised by the pooled mask so the
    brain's border does not lower it).

    ``s`` (X, Y, Z, E) echo magnitudes, ``chi`` (X, Y, Z) QSM [ppm], ``mask`` boolean brain.
    """
    mask = np.asarray(mask, bool)
    sv = torch.from_numpy(np.asarray(s, np.float64)[mask])
    cv = torch.from_numpy(np.asarray(chi, np.float64)[mask])
    sse = profile_sse(sv, cv, te_s, B0=B0)
    nll = (sse / (2.0 * max(noise_variance(sse, sv.shape[1]), 1e-30))).numpy()
    vol = np.zeros(mask.shape, np.float64)
    m = mask.astype(np.float64)
    feats = []
    for sg in sigmas:
        wm = gaussian_filter(m, sg, mode="constant")[mask]
        pooled = np.empty_like(nll)
        for k in range(nll.shape[1]):
            vol[mask] = nll[:, k]
            pooled[:, k] = gaussian_filter(vol, sg, mode="constant")[mask] / np.maximum(wm, 1e-3)
        pooled *= (2.0 * np.sqrt(np.pi) * sg) ** 3
        feats.append(np.log1p(pooled - pooled.min(1, keepdims=True)))
    return np.concatenate(feats, 1).astype(np.float32)
