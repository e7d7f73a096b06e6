"""Experiment: the regional QQ fit with a CSF compartment per voxel (see results.md).

Each voxel's echoes are modelled as tissue (QQ decay, S0 and R2 free) plus a CSF part that carries
a fraction phi of the first echo and decays with R2 = R2_CSF [1/s] (no blood):
``s(t) = S0 exp(-R2 t - v f_s(dw t)) + phi s(t1) exp(-R2_CSF (t - t1))``. phi is profiled over
``CFG["phi"]`` with a cost ``CFG["cost"]`` (negative log-likelihood units) for phi > 0, R2_CSF over
``CFG["r2_csf"]``. The patch replaces
``qq_region._sse_grid`` so that ``region_oef`` runs unchanged otherwise.
"""

import numpy as np
import torch

import qmri.classical.qq_region as R
from qmri.classical.qq_fit import LogLinearFit
from qmri.physics.qq import ALPHA, CHI_BA, DCHI0, GAMMA, HCT, YA, blood_chi, fs

CFG = {"phi": (0.0, 0.1, 0.2, 0.35, 0.5, 0.7), "r2_csf": (2.5,), "cost": 1.0, "sigma2": None}
_orig_sse = R._sse_grid
_orig_noise = R.noise_variance


def sse_by_phi(mag, chi, te_s, B0, phis, r2_csf):
    """(N, K, 1 + V, P) echo misfit for each OEF, v (no-blood first) and CSF part (phi, R2_CSF) of
    ``phis`` x ``r2_csf`` (P pairs, phi the outer loop), and the (P,) phi of each."""
    s = torch.from_numpy(np.asarray(mag, np.float64))
    c = torch.from_numpy(np.asarray(chi, np.float64))
    t = torch.as_tensor(np.asarray(te_s, np.float64))
    vg = (R.V_NO_BLOOD,) + R.V_GRID
    pairs = [(phi, r2c) for phi in phis for r2c in r2_csf]
    fits = []
    for phi, r2c in pairs:
        csf = phi * s[:, :1] * torch.exp(-r2c * (t - t[0]))[None]
        fits.append((csf, LogLinearFit((s - csf).clamp_min(1e-6), t)))
    out = torch.empty((s.shape[0], len(R.OEF_GRID), len(vg), len(pairs)), dtype=torch.float64)
    for i, oef in enumerate(R.OEF_GRID):
        Y = YA * (1.0 - oef)
        bc = float(blood_chi(torch.tensor(Y, dtype=torch.float64)))
        for j, v in enumerate(vg):
            cnb = (c - bc * v) / (1.0 - v / ALPHA)
            vF = v * fs((GAMMA * B0 / 3.0 * (HCT * DCHI0 * (1.0 - Y) + CHI_BA - cnb).abs())[:, None] * t)
            for p, (csf, ll) in enumerate(fits):
                S0, R2 = ll(vF)
                out[:, i, j, p] = ((S0[:, None] * torch.exp(-R2[:, None] * t - vF) + csf - s) ** 2).sum(1)
    return out.numpy(), np.array([phi for phi, _ in pairs])


def sse_grid_csf(mag, chi, te_s, B0):
    """(N, K, 1 + V): the misfit minimised over the CSF part, phi > 0 at a cost of CFG["cost"]
    likelihood units (2 sigma2 cost in squared-misfit units)."""
    sse, phi = sse_by_phi(mag, chi, te_s, B0, CFG["phi"], CFG["r2_csf"])
    pen = 0.0 if CFG["sigma2"] is None else 2.0 * CFG["sigma2"] * CFG["cost"]
    return (sse + pen * (phi > 0)).min(-1)


def install(on: bool = True):
    if not on:
        R._sse_grid, R.noise_variance = _orig_sse, _orig_noise
        return

    def noise(mag, chi, te_s, B0=3.0, n=R.NOISE_VOXELS):
        R._sse_grid = _orig_sse  # the noise level from the project's model, then the CSF model with its cost
        s2 = _orig_noise(mag, chi, te_s, B0, n)
        CFG["sigma2"] = s2
        R._sse_grid = sse_grid_csf
        return s2

    R.noise_variance = noise
    R._sse_grid = sse_grid_csf
