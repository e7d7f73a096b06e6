"""Regional OEF: one OEF (%) with a confidence interval for each region of interest, from the QQ model
pooled over the region's voxels.

Why a region: one voxel's 8 echoes barely identify Y (Cramer-Rao sd ~80 %-points at SNR 100,
:mod:`qmri.physics.qq_crb`), a region of a few hundred voxels that shares its OEF does (2.6 %-points
for 20 mm). Clinicians read OEF in regions anyway: an infarct core from diffusion, a penumbra from
perfusion, a vascular territory against its mirror image.

Why not the plain profile likelihood summed over the region (:func:`qq_profile.profile_sse`): with
every nuisance parameter free per voxel, the noise each voxel's v can absorb depends on OEF (v is
bounded below by 0, and at high OEF the family ``v f_s(dw t)`` bends more), so the summed profile's
minimum is pulled towards high OEF however many voxels are summed, while the same sum on noiseless
echoes finds the true OEF (the Neyman-Scott problem). The remedy here ties v across the region, as QQ-CAT
ties Y and v within clusters of similar echo decays (Cho et al., MRM 2018):

* the region's voxels are split into :data:`N_TISSUE_CLASSES` tissue classes, a k-means of the
  brain's mono-exponential ``log S0`` and ``R2*`` (CSF, grey and white matter differ in both, and in
  blood volume);
* within a class, every voxel's v is tied to the class's v (a nuisance shared by the class) by a
  Gaussian prior of sd :data:`V_TIE_SD` on ``log v``, and may instead carry no blood (v =
  :data:`V_NO_BLOOD`, a CSF voxel) at a fixed cost :data:`NO_BLOOD_COST`;
* S0 and R2 stay free per voxel (weighted log-linear fit) and chi_nb follows from the QSM
  (:func:`qq_profile.sse_grid`);
* a weak population prior N(:data:`PRIOR_OEF`) on the region's OEF decides regions whose echoes
  carry no OEF information (e.g. an infarct whose v is a quarter of normal); such a region is
  reported as not ``informative`` (its posterior sd is more than half the prior's).

The region's negative log-likelihood of OEF on :data:`OEF_GRID` is the sum over classes of the
minimum over the class's v of the sum over its voxels; the estimate is its (parabola-refined)
minimum and the standard deviation comes from the curvature of ``exp(-nll)`` on the grid (the
posterior sd), combined in quadrature with :data:`MODEL_SD`, the residual error of the estimator
measured on training phantoms (seeds 40000-40007: 95 % of the informative regions within 1.96 sd;
89 % with no such term).

The echo noise variance is estimated from the data: the median over a fixed subsample of brain
voxels of the smallest misfit over both grids, divided by the median of chi-square with
``E - 4`` degrees of freedom (S0, R2, v and OEF fitted per voxel).

Units: OEF and its sd in % (%-points), echo times in s, QSM in ppm, B0 in T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from scipy.cluster.vq import kmeans2
from scipy.stats import chi2

from .qq_profile import sse_grid

OEF_GRID = tuple(float(x) for x in np.linspace(0.04, 0.81, 23))  # fraction
V_GRID = tuple(float(x) for x in np.geomspace(0.004, 0.08, 16))  # fraction, the tied v values
V_NO_BLOOD = 0.0005  # fraction: the "no blood" alternative of a voxel (CSF)
V_TIE_SD = 0.3  # sd of log v of a voxel around its class's v
NO_BLOOD_COST = 1.0  # negative log-likelihood units
N_TISSUE_CLASSES = 3
PRIOR_OEF = (0.37, 0.15)  # fraction: mean and sd of the population prior on a region's OEF
MODEL_SD = 3.0  # %-points, added in quadrature to the posterior sd (see the module doc)
NOISE_VOXELS = 5000  # brain voxels used to estimate the echo noise variance
FIT_VOXELS = 16000  # a larger region is represented by this many of its voxels (fixed seed), its nll scaled (4000 doubled the territory asymmetry error on training phantoms)
MAX_REGIONS = 32  # per call: up to ~2 s each on 2 cores (a region of FIT_VOXELS) (the OEF task sends 16 labels and their mirrors)
MIN_VOXELS = 8


@dataclass(frozen=True)
class RegionOEF:
    """One region's OEF [%], its sd and 95 % interval [%-points / %], and how it was obtained."""

    name: str
    oef: float
    sd: float
    ci95: tuple[float, float]
    n_voxels: int
    informative: bool  # False when the echoes carry no OEF information (the prior decides)

    def as_dict(self) -> dict:
        return {"name": self.name, "OEF": round(self.oef, 2), "OEF_sd": round(self.sd, 2), "ci95": [round(self.ci95[0], 2), round(self.ci95[1], 2)], "n_voxels": self.n_voxels, "informative": self.informative}


def tissue_classes(mag: np.ndarray, te_s: Sequence[float], n_classes: int = N_TISSUE_CLASSES) -> np.ndarray:
    """(N,) class index of N voxels' echo magnitudes ``mag`` (N, E): k-means (k-means++, fixed seed)
    of the standardised ``log S0`` and ``R2*`` [1/s] of a mono-exponential log-linear fit."""
    te = np.asarray(te_s, np.float64)
    design = np.stack([np.ones_like(te), -te], 1)
    coef = np.linalg.lstsq(design, np.log(np.maximum(np.asarray(mag, np.float64), 1e-12)).T, rcond=None)[0].T
    feat = (coef - coef.mean(0)) / np.maximum(coef.std(0), 1e-12)
    if len(feat) <= n_classes:
        return np.arange(len(feat)) % max(n_classes, 1)
    _, cls = kmeans2(feat, n_classes, seed=0, minit="++")
    return cls


def _sse_grid(mag: np.ndarray, chi: np.ndarray, te_s, B0: float) -> np.ndarray:
    """(N, K, 1 + V) echo misfit of N voxels at each grid OEF for v = V_NO_BLOOD then V_GRID."""
    s = torch.from_numpy(np.asarray(mag, np.float64))
    c = torch.from_numpy(np.asarray(chi, np.float64))
    return sse_grid(s, c, te_s, OEF_GRID, (V_NO_BLOOD,) + V_GRID, B0=B0).numpy()


def noise_variance(mag: np.ndarray, chi: np.ndarray, te_s, B0: float = 3.0, n: int = NOISE_VOXELS) -> float:
    """Echo noise variance (the magnitudes' units squared) from up to ``n`` voxels (N, E) chosen by a
    fixed-seed generator (see the module doc)."""
    idx = np.random.default_rng(0).permutation(len(mag))[:n]
    best = _sse_grid(mag[idx], chi[idx], te_s, B0).min((1, 2))
    dof = max(len(te_s) - 4, 1)
    return max(float(np.median(best)) / float(chi2.median(dof)), 1e-30)


def region_nll(sse: np.ndarray, classes: np.ndarray, sigma2: float) -> np.ndarray:
    """(K,) the region's negative log-likelihood of each grid OEF from its voxels' ``sse`` (N, K, 1 + V)
    and tissue ``classes`` (N,), noise variance ``sigma2`` (see the module doc for the v tie)."""
    nll = sse / (2.0 * sigma2)
    lv = np.log(np.asarray(V_GRID))
    tie = (lv[None, :] - lv[:, None]) ** 2 / (2.0 * V_TIE_SD**2)  # (class v, voxel v)
    total = np.zeros(nll.shape[1])
    for cl in np.unique(classes):
        x = nll[classes == cl]
        no_blood = x[:, :, 0] + NO_BLOOD_COST
        per_class_v = np.stack([np.minimum((x[:, :, 1:] + tie[r][None, None]).min(2), no_blood).sum(0) for r in range(len(lv))], 1)
        total += per_class_v.min(1)
    return total


def estimate_from_nll(nll: np.ndarray) -> tuple[float, float, tuple[float, float], bool]:
    """OEF [%], sd [%-points], 95 % interval and informativeness from a region's ``nll`` on
    :data:`OEF_GRID`, with the population prior added."""
    grid = np.asarray(OEF_GRID)
    h = grid[1] - grid[0]
    post = nll + 0.5 * ((grid - PRIOR_OEF[0]) / PRIOR_OEF[1]) ** 2
    j = int(np.clip(np.argmin(post), 1, len(grid) - 2))
    a, b, c = post[j - 1 : j + 2]
    den = a - 2 * b + c
    est = grid[j] + (float(np.clip(0.5 * (a - c) / den, -1, 1)) if den > 0 else 0.0) * h
    w = np.exp(-(post - post.min()))
    w /= w.sum()
    mu = float((w * grid).sum())
    sd_post = math.sqrt(float((w * (grid - mu) ** 2).sum()) + h**2 / 12.0)
    sd = math.hypot(100.0 * sd_post, MODEL_SD)
    lo, hi = max(100 * est - 1.96 * sd, 0.0), min(100 * est + 1.96 * sd, 100.0)
    informative = sd_post < 0.5 * PRIOR_OEF[1]  # the data, not the prior, narrow the estimate
    return 100.0 * est, sd, (lo, hi), informative


def region_oef(mag: np.ndarray, chi: np.ndarray, mask: np.ndarray, te_s: Sequence[float], regions: Mapping[str, np.ndarray], B0: float = 3.0) -> list[RegionOEF]:
    """OEF of each region (see the module doc).

    Args:
        mag: (x, y, z, E) echo magnitudes (any unit).
        chi: (x, y, z) QSM [ppm].
        mask: boolean brain mask (the voxels that carry data).
        te_s: E echo times [s].
        regions: name -> boolean mask of the same shape; only its voxels inside ``mask`` count.
        B0: field strength [T].

    Raises:
        ValueError: more than :data:`MAX_REGIONS` regions, a region of another shape, or one with
            fewer than :data:`MIN_VOXELS` voxels inside the brain.
    """
    mask = np.asarray(mask, bool)
    if len(regions) > MAX_REGIONS:
        raise ValueError(f"{len(regions)} regions: at most {MAX_REGIONS} per call")
    sel = {}
    for name, r in regions.items():
        r = np.asarray(r, bool)
        if r.shape != mask.shape:
            raise ValueError(f"region '{name}' has shape {r.shape}, the study {mask.shape}")
        n = int((r & mask).sum())
        if n < MIN_VOXELS:
            raise ValueError(f"region '{name}' has {n} voxels inside the brain mask; at least {MIN_VOXELS} are needed")
        sel[name] = (r & mask)[mask]
    m = np.asarray(mag, np.float64)[mask]
    c = np.asarray(chi, np.float64)[mask]
    sigma2 = noise_variance(m, c, te_s, B0)
    classes = tissue_classes(m, te_s)
    out = []
    for name, s in sel.items():
        idx = np.flatnonzero(s)
        scale = 1.0
        if len(idx) > FIT_VOXELS:
            scale = len(idx) / FIT_VOXELS
            idx = np.sort(np.random.default_rng(1).choice(idx, FIT_VOXELS, replace=False))
        sse = _sse_grid(m[idx], c[idx], te_s, B0)
        est, sd, ci, informative = estimate_from_nll(scale * region_nll(sse, classes[idx], sigma2))
        out.append(RegionOEF(name, est, sd, ci, int(s.sum()), informative))
    return out
