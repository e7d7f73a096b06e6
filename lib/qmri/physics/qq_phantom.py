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

Venous oxygenation Y is drawn from physiological spreads, not from the training prior's sd of 0.15
(that prior is deliberately broad so that a network covers the parameter space; REFERENCE section 1
reports subject-level cortical-GM OEF of 40.9+-2.4 % (QQ 2018), 32.7+-4.0 % (CAT 2020) and whole-
brain 15O-PET 32.8+-6.7 %, i.e. a between-subject sd of 2-7 %-points, and healthy OEF is nearly
uniform across GM and WM). Per subject, Y = 0.6 + a global offset shared by all tissues
(sd :data:`Y_GLOBAL_SD`) + a tissue-specific offset (sd :data:`Y_TISSUE_SD`), plus a smooth spatial
variation of sd :data:`Y_SPATIAL_SD`: OEF spreads about 5 %-points between subjects and 3 within
one, and the lesions below carry the large focal deviations (5-15 % and 55-65 %).

Every other parameter's value is ``subject-level tissue mean + smooth spatial variation``:
the subject-level mean is drawn once per tissue, ``mean + SUBJECT_FRACTION * sd * N(0,1)``, and
the spatial variation is ``SPATIAL_FRACTION * sd * z(x)``, with ``z`` a unit-variance Gaussian-
filtered white-noise field of correlation length ``corr_mm`` (Gaussian sigma in mm, default 4 mm),
shared across tissues (physiology is smooth across tissue borders). With both fractions 1/sqrt(2)
the marginal spread over subjects and voxels equals the prior sd. Values are clipped to the QQ-NET
physical bounds (S0 only to be >= 0.05, because it is absolute here, not echo-1 normalised).

Lesions (codes of qmri.anatomy.labels.LESIONS):
* 1 infarct: low OEF, one draw OEF ~ U(5, 15) % per subject plus 1 %-point spatial variation
  clipped to [5, 15] %, Y = Ya (1 - OEF); oedema: R2 x 0.75, S0 x 1.1.
* 2 haemorrhage: chi_nb ~ U(0.5, 1.0) ppm (blood products), R2 ~ U(50, 90) 1/s, S0 x 0.9.
* 3 calcification: chi_nb ~ U(-0.6, -0.3) ppm (diamagnetic), R2 ~ U(40, 70) 1/s, S0 x 0.7.
* 4 amyloid-positive cortex: no QQ change.
* "misery perfusion" (not in the lesion map; placed here): a sphere of radius U(8, 14) mm
  centred on a random cortical-GM voxel outside lesions, restricted to GM/WM/deep GM, with high
  OEF ~ U(55, 65) % (+-1 %-point, clipped). Recorded in the returned ``regions`` dict.

With ``probseg`` (x, y, z, 15 partial volumes), tissue values are mixed voxelwise with the brain
class weights (a parameter-level mixture: an approximation of a signal-level partial-volume mix).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from qmri.anatomy.labels import BRAIN_LABELS, LABEL, LESION_CODE, N_CLASSES
from qmri.physics.qq import PARAM_BOUNDS, oef_from_y, y_from_oef

SUBJECT_FRACTION = 1.0 / np.sqrt(2.0)
SPATIAL_FRACTION = 1.0 / np.sqrt(2.0)
S0_MIN = 0.05  # a.u., lower clip for absolute S0

Y_GLOBAL_SD = 0.045  # subject-level Y offset shared by all tissues (OEF sd ~4.6 %-points)
Y_TISSUE_SD = 0.02  # subject-level Y offset per tissue (GM-WM OEF difference sd ~2.9 %-points)
Y_SPATIAL_SD = 0.03  # smooth within-subject Y variation (OEF sd ~3 %-points)
# total marginal sd of Y (what TISSUE_PRIORS records for it)
Y_MEAN = 0.6  # population-mean venous oxygenation
_Y = (Y_MEAN, float(np.sqrt(Y_GLOBAL_SD**2 + Y_TISSUE_SD**2 + Y_SPATIAL_SD**2)))
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
INFARCT_OEF = (0.05, 0.15)
MISERY_OEF = (0.55, 0.65)
MISERY_RADIUS_MM = (8.0, 14.0)


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
    misery_perfusion: bool = True,
) -> dict:
    """Draw one subject's ground-truth QQ maps.

    Args:
        labels: (x, y, z) int tissue labels (qmri.anatomy.labels).
        lesions: (x, y, z) int lesion codes or None.
        voxel_size_mm: isotropic voxel size or per-axis sizes [mm].
        rng: numpy Generator (same seed -> identical maps).
        probseg: optional (x, y, z, 15) partial volumes summing to 1.
        corr_mm: Gaussian sigma of the smooth spatial variation [mm].
        misery_perfusion: place a high-OEF region in cortex (if the phantom has cortical GM).

    Returns:
        dict with float32 maps ``S0`` (a.u.), ``R2`` (1/s), ``Y``, ``v``, ``OEF`` (fractions),
        ``chi_nb`` (ppm) - all 0 outside the brain - the boolean brain ``mask``, and ``regions``:
        name -> {"mask": bool array, "oef": float, ...} for each lesion type present and for
        "misery_perfusion" (with "centre_vox", "centre_mm" from voxel (0,0,0), "radius_mm").
    """
    labels = np.asarray(labels)
    shape = labels.shape
    vs = np.broadcast_to(np.asarray(voxel_size_mm, dtype=np.float64), (3,))
    lesions = np.zeros(shape, dtype=np.int16) if lesions is None else np.asarray(lesions)
    mask = np.isin(labels, BRAIN_LABELS)
    sigma_vox = tuple(corr_mm / v for v in vs)

    # subject-level means and one smooth field per parameter
    tissue_ids = [LABEL[name] for name in TISSUE_PRIORS]
    subj = {
        name: {p: m + SUBJECT_FRACTION * sd * rng.standard_normal() for p, (m, sd) in pri.items()}
        for name, pri in TISSUE_PRIORS.items()
    }
    y_global = Y_GLOBAL_SD * rng.standard_normal()
    for name in TISSUE_PRIORS:
        subj[name]["Y"] = Y_MEAN + y_global + Y_TISSUE_SD * rng.standard_normal()
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
        maps["R2"][m] *= 0.75
        maps["S0"][m] *= 1.1
        regions["infarct"] = {"mask": m, "oef": float(oef0)}
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

    # misery perfusion: high OEF sphere centred in cortical GM
    cortex = (labels == LABEL["cortical_gm"]) & (lesions == 0)
    if misery_perfusion and cortex.any():
        cands = np.argwhere(cortex)
        c = cands[rng.integers(len(cands))]
        radius = rng.uniform(*MISERY_RADIUS_MM)
        grids = np.meshgrid(*[(np.arange(n) - c[a]) * vs[a] for a, n in enumerate(shape)], indexing="ij")
        ball = sum(g**2 for g in grids) <= radius**2
        tissue = np.isin(labels, (LABEL["cortical_gm"], LABEL["wm"]) + tuple(range(LABEL["caudate"], LABEL["dentate"] + 1)))
        m = ball & tissue & (lesions == 0) & mask
        oef0 = rng.uniform(*MISERY_OEF)
        oef = np.clip(oef0 + 0.01 * _smooth_field(shape, sigma_vox, rng), *MISERY_OEF)
        maps["Y"][m] = y_from_oef(oef[m])
        regions["misery_perfusion"] = {
            "mask": m,
            "oef": float(oef0),
            "centre_vox": tuple(int(i) for i in c),
            "centre_mm": tuple(float(i * s) for i, s in zip(c, vs)),
            "radius_mm": float(radius),
        }

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
