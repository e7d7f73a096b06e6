"""Ground-truth QQ parameter maps (S0, R2, Y, v, chi_nb, OEF) for a phantom subject.

Per-tissue physiological priors (mean, sd) follow shared/REFERENCE.md section 1 ("priors used for
training elsewhere") for cortical GM and WM:
GM R2 12+-6 1/s, Y 0.6+-0.15, v 0.04+-0.02, chi_nb 0.1+-0.15 ppm;
WM R2 17+-4 1/s, Y 0.6+-0.15, v 0.02+-0.02, chi_nb -0.1+-0.15 ppm.
Choices made here (documented in :data:`TISSUE_PRIORS`):

* CSF: no blood (v = 0, so Y and OEF carry no signal there; Y is still drawn like GM so that the
  map has no label-shaped hole), long T2* (R2 3+-1 1/s), chi_nb 0+-0.02 ppm (QSM reference).
* Deep grey nuclei: iron-rich, so chi_nb follows the 3 T tissue susceptibilities of REFERENCE
  section 2 (Marques 2021) minus about 0.01 ppm of venous-blood contribution, and R2 rises with
  iron (caudate 20, putamen 24, thalamus 18, globus pallidus 35, red nucleus 32, substantia
  nigra 35, dentate 30 1/s); v 0.03-0.035; Y as GM.
* S0 (arbitrary units, proton-density-like): CSF 1.0, GM 0.85, deep GM 0.75-0.82, WM 0.75.

Venous oxygenation Y: per subject a whole-brain OEF level drawn uniformly from
:data:`OEF_GLOBAL_RANGE` (22-52 %, so that subjects whose mean OEF spans 25-50 % lie inside the
training prior; REFERENCE section 1 reports subject-level cortical-GM OEF of 40.9+-2.4 % (QQ 2018),
32.7+-4.0 % (CAT 2020) and whole-brain 15O-PET 32.8+-6.7 %), a tissue-specific offset (Y sd
:data:`Y_TISSUE_SD`, GM and WM differ) and a smooth spatial variation of sd :data:`Y_SPATIAL_SD`;
then the focal and regional changes of :mod:`qmri.physics.oef_physiology` (infarct core, penumbra,
one territory shifted by 8-15 %-points) carry the large deviations a clinician looks for.

Every other parameter's value is ``subject-level tissue mean + smooth spatial variation``:
the subject-level mean is drawn once per tissue, ``mean + SUBJECT_FRACTION * sd * N(0,1)``, and
the spatial variation is ``SPATIAL_FRACTION * sd * z(x)``, with ``z`` a unit-variance Gaussian-
filtered white-noise field of correlation length ``corr_mm`` (Gaussian sigma in mm, default 4 mm),
shared across tissues (physiology is smooth across tissue borders). With both fractions 1/sqrt(2)
the marginal spread over subjects and voxels equals the prior sd. Values are clipped to the QQ-NET
physical bounds (S0 only to be >= 0.05, because it is absolute here, not echo-1 normalised).

Lesions of the anatomy (codes of qmri.anatomy.labels.LESIONS):
* 1 infarct: low OEF, one draw OEF ~ U(5, 20) % per subject plus 1 %-point spatial variation
  clipped to [5, 20] %, Y = Ya (1 - OEF); v x U(0.3, 0.7) with probability 1/2; oedema: R2 x 0.75,
  S0 x 1.1.
* 2 haemorrhage: chi_nb ~ U(0.5, 1.0) ppm (blood products), R2 ~ U(50, 90) 1/s, S0 x 0.9.
* 3 calcification: chi_nb ~ U(-0.6, -0.3) ppm (diamagnetic), R2 ~ U(40, 70) 1/s, S0 x 0.7.
* 4 amyloid-positive cortex: no QQ change.
* with ``physiology`` (default): the infarct core, penumbra and territory of
  :func:`qmri.physics.oef_physiology.draw_oef_regions`, recorded in the returned ``regions`` dict
  with their contralateral references.

With ``probseg`` (x, y, z, 15 partial volumes), tissue values are mixed voxelwise with the brain
class weights (a parameter-level mixture: an approximation of a signal-level partial-volume mix).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from qmri.anatomy.labels import BRAIN_LABELS, LABEL, LESION_CODE, N_CLASSES
from qmri.physics.oef_physiology import INFARCT_CORE_OEF, INFARCT_V_FACTOR, V_CHANGE_PROBABILITY, apply_oef_regions, draw_oef_regions
from qmri.physics.qq import PARAM_BOUNDS, oef_from_y, y_from_oef

PHANTOM_VERSION = 2  # 2: infarct core, penumbra and territory in every subject, whole-brain OEF U(22, 52) %; names cached training data
SUBJECT_FRACTION = 1.0 / np.sqrt(2.0)
SPATIAL_FRACTION = 1.0 / np.sqrt(2.0)
S0_MIN = 0.05  # a.u., lower clip for absolute S0

OEF_GLOBAL_RANGE = (0.22, 0.52)  # subject-level whole-brain OEF, drawn uniformly (fraction)
Y_TISSUE_SD = 0.02  # subject-level Y offset per tissue (GM-WM OEF difference sd ~2.9 %-points)
Y_SPATIAL_SD = 0.03  # smooth within-subject Y variation (OEF sd ~3 %-points)
# population-mean venous oxygenation (the mean of the OEF range: 37 % -> Y = 0.617)
Y_MEAN = float(y_from_oef(0.5 * (OEF_GLOBAL_RANGE[0] + OEF_GLOBAL_RANGE[1])))
# total marginal sd of Y (what TISSUE_PRIORS records for it); the global level is uniform
_Y_GLOBAL_SD = 0.98 * (OEF_GLOBAL_RANGE[1] - OEF_GLOBAL_RANGE[0]) / np.sqrt(12.0)
_Y = (Y_MEAN, float(np.sqrt(_Y_GLOBAL_SD**2 + Y_TISSUE_SD**2 + Y_SPATIAL_SD**2)))
# tissue name -> parameter -> (mean, sd); S0 a.u., R2 1/s, Y and v fractions, chi_nb ppm
TISSUE_PRIORS: dict[str, dict[str, tuple[float, float]]] = {
    "csf": {"S0": (1.0, 0.05), "R2": (3.0, 1.0), "Y": _Y, "v": (0.0, 0.0), "chi_nb": (0.0, 0.02)},
    "cortical_gm": {"S0": (0.85, 0.05), "R2": (12.0, 6.0), "Y": _Y, "v": (0.04, 0.02), "chi_nb": (0.1, 0.15)},
    "wm": {"S0": (0.75, 0.05), "R2": (17.0, 4.0), "Y": _Y, "v": (0.02, 0.02), "chi_nb": (-0.1, 0.15)},
    "caudate": {"S0": (0.82, 0.04), "R2": (20.0, 4.0), "Y": _Y, "v": (0.035, 0.015), "chi_nb": (0.035, 0.03)},
    "putamen": {"S0": (0.80, 0.04), "R2": (24.0, 4.0), "Y": _Y, "v": (0.035, 0.015), "chi_nb": (0.03, 0.03)},
    "globus_pallidus": {"S0": (0.75, 0.04), "R2": (35.0, 5.0), "Y": _Y, "v": (0.03, 0.015), "chi_nb": (0.12, 0.04)},
    "thalamus": {"S0": (0.80, 0.04), "R2": (18.0, 4.0), "Y": _Y, "v": (0.03, 0.015), "chi_nb": (0.01, 0.03)},
    "red_nucleus": {"S0": (0.78, 0.04), "R2": (32.0, 5.0), "Y": _Y, "v": (0.03, 0.015), "chi_nb": (0.09, 0.04)},
    "substantia_nigra": {"S0": (0.76, 0.04), "R2": (35.0, 5.0), "Y": _Y, "v": (0.03, 0.015), "chi_nb": (0.10, 0.04)},
    "dentate": {"S0": (0.78, 0.04), "R2": (30.0, 5.0), "Y": _Y, "v": (0.03, 0.015), "chi_nb": (0.14, 0.04)},
}
_PARAMS = ("S0", "R2", "Y", "v", "chi_nb")
INFARCT_OEF = INFARCT_CORE_OEF


def _smooth_field(shape, sigma_vox, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian-filtered white noise (float64)."""
    f = gaussian_filter(rng.standard_normal(shape), sigma=sigma_vox, mode="reflect")
    sd = f.std()
    return f / sd if sd > 0 else f


def _clip(name: str, a: np.ndarray) -> np.ndarray:
    if name == "S0":
        return np.maximum(a, S0_MIN)
    lo, hi = PARAM_BOUNDS[name]
    return np.clip(a, lo, hi)


def draw_qq_parameters(
    labels: np.ndarray,
    lesions: np.ndarray | None,
    voxel_size_mm: float | Sequence[float],
    rng: np.random.Generator,
    probseg: np.ndarray | None = None,
    corr_mm: float = 4.0,
    physiology: bool = True,
) -> dict:
    """Draw one subject's ground-truth QQ maps.

    Args:
        labels: (x, y, z) int tissue labels (qmri.anatomy.labels).
        lesions: (x, y, z) int lesion codes or None.
        voxel_size_mm: isotropic voxel size or per-axis sizes [mm].
        rng: numpy Generator (same seed -> identical maps).
        probseg: optional (x, y, z, 15) partial volumes summing to 1.
        corr_mm: Gaussian sigma of the smooth spatial variation [mm].
        physiology: place the infarct core, penumbra and territory of
            :mod:`qmri.physics.oef_physiology` (if the phantom has brain tissue).

    Returns:
        dict with float32 maps ``S0`` (a.u.), ``R2`` (1/s), ``Y``, ``v``, ``OEF`` (fractions),
        ``chi_nb`` (ppm) - all 0 outside the brain - the boolean brain ``mask``, and ``regions``:
        name -> {"mask": bool array, "oef": float, ...} for each anatomy lesion present and, with
        ``physiology``, "infarct_core", "penumbra" and "territory" (each with a "reference" mask
        of matched contralateral tissue; see :func:`~qmri.physics.oef_physiology.draw_oef_regions`).
    """
    labels = np.asarray(labels)
    shape = labels.shape
    vs = np.broadcast_to(np.asarray(voxel_size_mm, dtype=np.float64), (3,))
    lesions = np.zeros(shape, dtype=np.int16) if lesions is None else np.asarray(lesions)
    mask = np.isin(labels, BRAIN_LABELS)
    sigma_vox = tuple(corr_mm / v for v in vs)

    # subject-level means and one smooth field per parameter
    tissue_ids = [LABEL[name] for name in TISSUE_PRIORS]
    subj = {name: {p: m + SUBJECT_FRACTION * sd * rng.standard_normal() for p, (m, sd) in pri.items()} for name, pri in TISSUE_PRIORS.items()}
    y_global = y_from_oef(rng.uniform(*OEF_GLOBAL_RANGE))
    for name in TISSUE_PRIORS:
        subj[name]["Y"] = y_global + Y_TISSUE_SD * rng.standard_normal()
    spatial_sd = lambda name, p: Y_SPATIAL_SD if p == "Y" else SPATIAL_FRACTION * TISSUE_PRIORS[name][p][1]  # noqa: E731
    fields = {p: _smooth_field(shape, sigma_vox, rng) for p in _PARAMS}

    if probseg is not None:
        w = np.asarray(probseg, dtype=np.float64)
        if w.shape != shape + (N_CLASSES,):
            raise ValueError(f"probseg shape {w.shape} != {shape + (N_CLASSES,)}")
        wb = w[..., tissue_ids]
        tot = wb.sum(-1)
        onehot = np.stack([labels == t for t in tissue_ids], -1).astype(np.float64)
        wb = np.where((tot > 0)[..., None], wb / np.maximum(tot, 1e-12)[..., None], onehot)
    else:
        wb = None

    maps: dict[str, np.ndarray] = {}
    for p in _PARAMS:
        out = np.zeros(shape, dtype=np.float64)
        for i, name in enumerate(TISSUE_PRIORS):
            val = subj[name][p] + spatial_sd(name, p) * fields[p]
            val = _clip(p, val)  # clip each tissue before mixing so mixtures stay in bounds
            if wb is None:
                sel = labels == tissue_ids[i]
                out[sel] = val[sel]
            else:
                out += wb[..., i] * val
        maps[p] = out

    regions: dict[str, dict] = {}
    inside = lambda code: (lesions == code) & mask  # noqa: E731

    # infarct: low OEF, oedema
    m = inside(LESION_CODE["infarct"])
    if m.any():
        oef0 = rng.uniform(*INFARCT_OEF)
        oef = np.clip(oef0 + 0.01 * _smooth_field(shape, sigma_vox, rng), *INFARCT_OEF)
        maps["Y"][m] = y_from_oef(oef[m])
        v_factor = rng.uniform(*INFARCT_V_FACTOR) if rng.uniform() < V_CHANGE_PROBABILITY else 1.0
        maps["v"][m] *= v_factor
        maps["R2"][m] *= 0.75
        maps["S0"][m] *= 1.1
        regions["infarct"] = {"mask": m, "oef": float(oef0), "v_factor": float(v_factor)}
    m = inside(LESION_CODE["haemorrhage"])
    if m.any():
        chi, r2 = rng.uniform(0.5, 1.0), rng.uniform(50.0, 90.0)
        maps["chi_nb"][m], maps["R2"][m] = chi, r2
        maps["S0"][m] *= 0.9
        regions["haemorrhage"] = {"mask": m, "chi_nb": float(chi), "R2": float(r2)}
    m = inside(LESION_CODE["calcification"])
    if m.any():
        chi, r2 = rng.uniform(-0.6, -0.3), rng.uniform(40.0, 70.0)
        maps["chi_nb"][m], maps["R2"][m] = chi, r2
        maps["S0"][m] *= 0.7
        regions["calcification"] = {"mask": m, "chi_nb": float(chi), "R2": float(r2)}

    # infarct core, penumbra, territory: drawn outside the anatomy's lesions, then written into Y and v
    tissue = np.isin(labels, (LABEL["cortical_gm"], LABEL["wm"]) + tuple(range(LABEL["caudate"], LABEL["dentate"] + 1))) & (lesions == 0) & mask
    if physiology and tissue.sum() > 100:
        focal = draw_oef_regions(tissue, vs, rng)
        apply_oef_regions(maps["Y"], maps["v"], focal, rng, sigma_vox)
        regions.update(focal)

    out: dict = {}
    for p in _PARAMS:
        a = _clip(p, maps[p])
        a[~mask] = 0.0
        out[p] = a.astype(np.float32)
    oef = np.where(mask, np.clip(oef_from_y(out["Y"].astype(np.float64)), 0.0, 1.0), 0.0)
    out["OEF"] = oef.astype(np.float32)
    out["mask"] = mask
    out["regions"] = regions
    return out
