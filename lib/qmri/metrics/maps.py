"""Errors of an estimated map against the truth inside a mask (any units; fractions are not %)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_laplace
from skimage.metrics import structural_similarity


def nrmse(estimate, reference, mask, demean: bool = True) -> float:
    """Normalised RMSE ``||x - y|| / ||y||`` over ``mask`` (fraction, not %).

    ``demean=True`` subtracts each map's mean over the mask first (QSM is relative).
    """
    m = np.asarray(mask, bool)
    x = np.asarray(estimate, dtype=np.float64)[m]
    y = np.asarray(reference, dtype=np.float64)[m]
    if demean:
        x = x - x.mean()
        y = y - y.mean()
    return float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-12))


def rmse(estimate, reference, mask) -> float:
    """Root-mean-square error over ``mask`` (the maps' units)."""
    d = np.asarray(estimate, np.float64) - np.asarray(reference, np.float64)
    return float(np.sqrt(np.mean(d[np.asarray(mask, bool)] ** 2)))


def hfen(est, ref, mask, sigma_vox: float = 1.5) -> float:
    """High-frequency error norm: NRMSE of Laplacian-of-Gaussian filtered maps (sigma 1.5 voxels, Ravishankar 2011)."""
    mask = np.asarray(mask, bool)
    e = gaussian_laplace(np.where(mask, est, 0.0).astype(np.float64), sigma_vox)
    r = gaussian_laplace(np.where(mask, ref, 0.0).astype(np.float64), sigma_vox)
    return float(np.linalg.norm((e - r)[mask]) / np.linalg.norm(r[mask]))


def ssim(a, b, mask, data_range) -> tuple[float, float]:
    """(mean SSIM over ``mask``, mean SSIM over the whole volume): skimage's SSIM map, 7-voxel window."""
    _, full = structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), data_range=data_range, full=True)
    return float(full[np.asarray(mask, bool)].mean()), float(full.mean())


def qsm_metrics(chi, ref, mask) -> dict:
    """NRMSE, HFEN and SSIM of a susceptibility map (ppm) after removing each map's mean over ``mask``;
    SSIM on both maps clipped to the truth's 0.5-99.5th percentiles."""
    mask = np.asarray(mask, bool)
    c = np.where(mask, chi - chi[mask].mean(), 0.0)
    r = np.where(mask, ref - ref[mask].mean(), 0.0)
    lo, hi = np.percentile(r[mask], [0.5, 99.5])
    return {"NRMSE": nrmse(chi, ref, mask), "HFEN": hfen(c, r, mask), "SSIM": ssim(np.clip(c, lo, hi), np.clip(r, lo, hi), mask, hi - lo)[0]}
