"""Metrics of an OEF map that a constant (population-mean) map cannot pass.

All OEF values in %; masks boolean arrays of the map's shape; voxel sizes in mm.

* :func:`contrast_recovery`: C = (est_lesion - est_reference) / (true_lesion - true_reference),
  lesion and reference ROI means; 1 for the truth, 0 for any constant map.
* :func:`roi_mean_error`: mean(est) - mean(true) over an ROI (%-points).
* :func:`pearson_r`: voxelwise Pearson correlation with the truth inside the brain, optionally after
  a Gaussian of the given FWHM applied inside the brain (normalised convolution: the brain mask's
  own blur divides, so the brain border does not darken); defined as 0 when either map is constant.
* :func:`within_volume_r`: the mean over volumes of each volume's r (model selection).
* :func:`asymmetry_error`: the territory's asymmetry (territory mean - contralateral mean) recovered,
  minus the true one (%-points).
* :func:`coverage`: share of brain voxels with |est - true| <= k sd (calibration of an sd map).
* :func:`oef_map_metrics`: all of the above for one map against a phantom's truth and regions
  (:func:`qmri.physics.qq_phantom.draw_qq_parameters`' ``regions``).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

SMOOTH_FWHM_MM = 6.0
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
LESION_TYPES = ("infarct_core", "penumbra")  # focal regions with a contralateral reference
LARGE_LESION_MM = 20.0  # the goals hold for lesions at least this wide (diameter)


def _mean(a: np.ndarray, m: np.ndarray) -> float:
    return float(a[m].mean()) if m.any() else float("nan")


def contrast_recovery(est: np.ndarray, truth: np.ndarray, lesion: np.ndarray, reference: np.ndarray) -> float:
    """(est_lesion - est_reference) / (true_lesion - true_reference) of ROI means (nan if the truth has no contrast)."""
    dt = _mean(truth, lesion) - _mean(truth, reference)
    if not np.isfinite(dt) or abs(dt) < 1e-6:
        return float("nan")
    return (_mean(est, lesion) - _mean(est, reference)) / dt


def roi_mean_error(est: np.ndarray, truth: np.ndarray, roi: np.ndarray) -> float:
    """mean(est) - mean(truth) over ``roi`` (%-points)."""
    return _mean(est, roi) - _mean(truth, roi)


def smooth_in_mask(a: np.ndarray, mask: np.ndarray, fwhm_mm: float, voxel_size_mm) -> np.ndarray:
    """Gaussian of ``fwhm_mm`` applied inside ``mask`` (normalised convolution); 0 outside."""
    vs = np.broadcast_to(np.asarray(voxel_size_mm, dtype=np.float64), (3,))
    sigma = tuple(fwhm_mm * FWHM_TO_SIGMA / v for v in vs)
    m = mask.astype(np.float64)
    num = gaussian_filter(np.where(mask, a, 0.0).astype(np.float64), sigma, mode="constant")
    den = gaussian_filter(m, sigma, mode="constant")
    return np.where(mask, num / np.maximum(den, 1e-6), 0.0)


def pearson_r(est: np.ndarray, truth: np.ndarray, mask: np.ndarray, fwhm_mm: float | None = None, voxel_size_mm=2.0) -> float:
    """Pearson r of ``est`` and ``truth`` over ``mask`` (after a ``fwhm_mm`` Gaussian inside the mask
    if given); 0 when either is constant there."""
    if fwhm_mm:
        est = smooth_in_mask(est, mask, fwhm_mm, voxel_size_mm)
        truth = smooth_in_mask(truth, mask, fwhm_mm, voxel_size_mm)
    e, t = est[mask].astype(np.float64), truth[mask].astype(np.float64)
    if e.std() < 1e-9 or t.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(e, t)[0, 1])


def within_volume_r(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean over volumes of the Pearson r of each volume's (estimate, truth) voxel values; 0 for a
    volume where either is constant. Unlike one r over the pooled voxels, a map that is constant
    within each volume scores 0 however well it follows each volume's level."""
    rs = [pearson_r(np.ravel(e), np.ravel(t), np.ones(np.size(e), bool)) for e, t in pairs]
    return float(np.mean(rs)) if rs else 0.0


def asymmetry_error(est: np.ndarray, truth: np.ndarray, territory: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(recovered asymmetry, true asymmetry) in %-points: territory mean - contralateral mean."""
    return _mean(est, territory) - _mean(est, reference), _mean(truth, territory) - _mean(truth, reference)


def coverage(est: np.ndarray, truth: np.ndarray, sd: np.ndarray, mask: np.ndarray, k: float = 2.0) -> float:
    """Share of ``mask`` voxels with |est - truth| <= k sd (a calibrated sd: ~0.95 at k = 2)."""
    return float(np.mean(np.abs(est[mask] - truth[mask]) <= k * sd[mask]))


def oef_map_metrics(est: np.ndarray, truth: np.ndarray, mask: np.ndarray, regions: Mapping[str, dict], voxel_size_mm=2.0, sd: np.ndarray | None = None) -> dict:
    """Every metric of one OEF map (%) against the truth (%), inside the brain ``mask``.

    Returns a flat dict: ``rmse``, ``mean_error`` (whole brain), ``r``, ``r_smooth`` (after
    :data:`SMOOTH_FWHM_MM`), per lesion type in :data:`LESION_TYPES` present in ``regions``:
    ``<type>_C``, ``<type>_roi_error``, ``<type>_true``, ``<type>_est``, ``<type>_diameter_mm``,
    ``<type>_v_changed``; for the territory ``territory_asym`` and ``territory_asym_true``; with
    ``sd`` ``coverage_2sd`` and ``mean_sd``.
    """
    out: dict = {
        "rmse": float(np.sqrt(np.mean((est[mask] - truth[mask]) ** 2))),
        "mean_error": roi_mean_error(est, truth, mask),
        "mean_true": _mean(truth, mask),
        "r": pearson_r(est, truth, mask),
        "r_smooth": pearson_r(est, truth, mask, SMOOTH_FWHM_MM, voxel_size_mm),
    }
    for name in LESION_TYPES:
        reg = regions.get(name)
        if reg is None or not reg["mask"].any() or not reg["reference"].any():
            continue
        out[f"{name}_C"] = contrast_recovery(est, truth, reg["mask"], reg["reference"])
        out[f"{name}_roi_error"] = roi_mean_error(est, truth, reg["mask"])
        out[f"{name}_true"] = _mean(truth, reg["mask"])
        out[f"{name}_est"] = _mean(est, reg["mask"])
        out[f"{name}_diameter_mm"] = float(reg.get("diameter_mm", float("nan")))
        out[f"{name}_v_changed"] = bool(reg.get("v_factor", 1.0) != 1.0)
    t = regions.get("territory")
    if t is not None and t["mask"].any() and t["reference"].any():
        out["territory_asym"], out["territory_asym_true"] = asymmetry_error(est, truth, t["mask"], t["reference"])
    if sd is not None:
        out["coverage_2sd"] = coverage(est, truth, sd, mask)
        out["mean_sd"] = _mean(sd, mask)
    return out


def summarise(rows: Sequence[dict]) -> dict:
    """Goal-shaped summary over per-subject :func:`oef_map_metrics` rows of one method: lesions of at
    least :data:`LARGE_LESION_MM` by type and by whether v changed (worst C and worst |ROI error|),
    mean r / r_smooth, worst |asymmetry error|, worst |whole-brain mean error|, pooled RMSE."""
    out: dict = {"subjects": len(rows)}
    for name in LESION_TYPES:
        big = [r for r in rows if f"{name}_C" in r and r[f"{name}_diameter_mm"] >= LARGE_LESION_MM]
        out[f"{name}_n"] = len(big)
        out[f"{name}_C_min"] = min((r[f"{name}_C"] for r in big), default=float("nan"))
        out[f"{name}_C_mean"] = float(np.mean([r[f"{name}_C"] for r in big])) if big else float("nan")
        out[f"{name}_err_max"] = max((abs(r[f"{name}_roi_error"]) for r in big), default=float("nan"))
        for changed in (False, True):
            sub = [r for r in big if r[f"{name}_v_changed"] == changed]
            out[f"{name}_{'v' if changed else 'no_v'}_C_min"] = min((r[f"{name}_C"] for r in sub), default=float("nan"))
    for k in ("r", "r_smooth"):
        out[k] = float(np.mean([r[k] for r in rows]))
    asym = [abs(r["territory_asym"] - r["territory_asym_true"]) for r in rows if "territory_asym" in r]
    out["asym_err_max"] = max(asym, default=float("nan"))
    out["mean_err_max"] = max(abs(r["mean_error"]) for r in rows)
    out["rmse"] = float(np.sqrt(np.mean([r["rmse"] ** 2 for r in rows])))
    cov = [r["coverage_2sd"] for r in rows if "coverage_2sd" in r]
    if cov:
        out["coverage_2sd_min"], out["coverage_2sd_max"] = min(cov), max(cov)
    return out
