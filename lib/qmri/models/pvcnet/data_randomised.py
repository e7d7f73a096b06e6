"""Domain-randomised PVC training examples: random uptake per tissue, amyloid patterns, textures,
shapes, scanner blur and noise, drawn per example on a phantom subject's anatomy.

A network trained on one PET generator learns that generator (issue 25): the phantoms of
:func:`qmri.physics.pet.amyloid_activity` have one tissue table (WM 1.6-2.0, cortex 1.0 or 2.0 +-
0.2), a label-shaped positive cortex, an isotropic Gaussian PSF of 5-8 mm and 5 % noise. Each
example here keeps the subject's anatomy (its tissue partial volumes, so partial volume stays
physical) and draws everything else:

* every tissue class's uptake (SUVR, cerebellar GM = 1) uniformly over a wide range
  (:data:`UPTAKE_RANGES`), so the WM/GM contrast ranges from a fluorinated tracer's to PiB's;
* the cortical amyloid pattern: none, the phantom's positive cortex at a random level, or 1-8
  smooth blobs (sigma 10-40 mm, +0.2..+1.4) around random cortical sites;
* intra-tissue texture (a Gaussian random field, sigma 1-3 voxels, 0-8 %) and a smooth regional
  inhomogeneity (sigma 10-25 mm, 0-10 %);
* 0-6 random spheres and ellipsoids (radius 3-15 mm, uptake x 0.2..3: infarcts, hot foci) inside
  the head;
* the scanner: a Gaussian PSF of transaxial FWHM 4-9 mm and axial FWHM 0.9-1.25x that, the
  Poisson-like noise of :func:`qmri.physics.pet.simulate_pet` at 2-10 % relative sd at SUV 1, its
  texture correlated by a Gaussian of 0-0.8 voxel sd (a reconstruction's noise) with its variance
  kept.

The voxel size stays the subject's (the networks serve one grid; other grids are refused by the
task). The network is told the mean of the three FWHMs, as the task tells it the mean of the
sidecar's ``psf_fwhm_mm``. Target: the true activity, or RBV with the true tissue probabilities and
the true per-axis PSF. Units: SUV, mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ...anatomy.labels import LABEL, LESION_CODE, N_CLASSES
from ...classical.pvc import rbv
from ...physics.pet import cerebellar_gm_mask, simulate_pet, smooth_field
from .data import TARGETS, PVCVolume

#: Per-class uptake ranges (SUVR, cerebellar GM = 1.0) of randomised examples.
UPTAKE_RANGES = {
    "air": (0.0, 0.0),
    "csf": (0.0, 0.3),
    "cortical_gm": (0.8, 1.3),
    "wm": (1.1, 2.3),
    "caudate": (0.8, 1.7),
    "putamen": (0.8, 1.7),
    "globus_pallidus": (0.8, 1.7),
    "thalamus": (0.8, 1.7),
    "red_nucleus": (0.8, 1.5),
    "substantia_nigra": (0.8, 1.5),
    "dentate": (0.8, 1.3),
    "venous_blood": (0.2, 1.0),
    "bone": (0.0, 0.4),
    "soft_tissue": (0.1, 0.8),
    "sinus_air": (0.0, 0.0),
}
FWHM_RANGE_MM = (4.0, 9.0)
AXIAL_RANGE = (0.9, 1.25)
NOISE_RANGE = (0.02, 0.10)
NOISE_CORR_VOXELS = (0.0, 0.8)


def _correlated(noise: np.ndarray, sd_voxels: float) -> np.ndarray:
    """``noise`` filtered by a Gaussian of ``sd_voxels``, rescaled to keep its variance."""
    if sd_voxels < 0.05:
        return noise
    impulse = np.zeros((9, 9, 9))
    impulse[4, 4, 4] = 1.0
    gain = np.sqrt((ndimage.gaussian_filter(impulse, sd_voxels) ** 2).sum())
    return ndimage.gaussian_filter(noise, sd_voxels) / gain


def _amyloid_pattern(vol: PVCVolume, rng: np.random.Generator, vs: float, cereb: np.ndarray) -> np.ndarray:
    """Additive cortical SUVR (0 in ``cereb``, the grown cerebellar reference): none, the positive cortex, or blobs."""
    shape = vol.labels.shape
    kind = rng.choice(["none", "cortex", "blobs"], p=[0.3, 0.3, 0.4])
    if kind == "none":
        return np.zeros(shape, np.float32)
    if kind == "cortex":
        pos = vol.lesions == LESION_CODE["amyloid_positive_cortex"]
        if not pos.any():
            pos = vol.labels == LABEL["cortical_gm"]
        pos = ndimage.binary_dilation(pos, iterations=2)
        pattern = rng.uniform(0.2, 1.4) * (1.0 + 0.1 * smooth_field(shape, rng, 20.0 / vs)) * pos
    else:
        sites = np.argwhere(vol.labels == LABEL["cortical_gm"])
        idx = np.indices(shape, dtype=np.float32)
        pattern = np.zeros(shape, np.float32)
        for _ in range(int(rng.integers(1, 9))):
            c = sites[rng.integers(len(sites))]
            d2 = sum((idx[a] - c[a]) ** 2 for a in range(3)) * vs**2
            pattern += np.float32(rng.uniform(0.2, 1.4)) * np.exp(-0.5 * d2 / rng.uniform(10.0, 40.0) ** 2)
    return np.where(cereb, 0.0, np.minimum(pattern, 2.0)).astype(np.float32)


def _shapes(shape, rng: np.random.Generator, vs: float, head: np.ndarray) -> np.ndarray:
    """Multiplicative uptake factor of 0-6 random spheres / ellipsoids (radius 3-15 mm) in the head."""
    factor = np.ones(shape, np.float32)
    inside = np.argwhere(head)
    idx = np.indices(shape, dtype=np.float32)
    for _ in range(int(rng.integers(0, 7))):
        c = inside[rng.integers(len(inside))]
        radii = rng.uniform(3.0, 15.0) * (np.ones(3) if rng.random() < 0.5 else rng.uniform(0.5, 1.0, 3))
        rot = np.linalg.qr(rng.standard_normal((3, 3)))[0]
        d = np.tensordot(rot.T, (idx - c[:, None, None, None]) * vs, axes=1)
        sel = (d**2 / (radii**2)[:, None, None, None]).sum(0) <= 1.0
        factor[sel] = np.float32(np.exp(rng.uniform(np.log(0.2), np.log(3.0))))
    return factor


def random_activity(vol: PVCVolume, rng: np.random.Generator) -> np.ndarray:
    """A randomised true activity (SUV) on ``vol``'s anatomy (a phantom volume)."""
    if not vol.is_phantom:
        raise ValueError(f"{vol.subject}: randomised examples need a phantom volume (labels and partial volumes)")
    vs = float(vol.voxel_size_mm)
    shape = vol.labels.shape
    table = np.zeros(N_CLASSES, np.float32)
    for name, (lo, hi) in UPTAKE_RANGES.items():
        table[LABEL[name]] = rng.uniform(lo, hi)
    act = vol.probseg @ table
    gm = vol.probseg[..., LABEL["cortical_gm"]]
    cereb = ndimage.binary_dilation(cerebellar_gm_mask(vol.labels, vs), iterations=2)
    act += gm * np.where(cereb, 1.0 - table[LABEL["cortical_gm"]], 0.0)  # reference cortex = 1
    act += gm * _amyloid_pattern(vol, rng, vs, cereb)
    act *= 1.0 + rng.uniform(0.0, 0.08) * smooth_field(shape, rng, rng.uniform(1.0, 3.0))
    act *= 1.0 + rng.uniform(0.0, 0.10) * smooth_field(shape, rng, rng.uniform(10.0, 25.0) / vs)
    act *= _shapes(shape, rng, vs, vol.probseg[..., LABEL["air"]] < 0.5)
    return np.clip(act, 0.0, None).astype(np.float32)


def random_example(vol: PVCVolume, rng: np.random.Generator, target: str = "activity"):
    """One randomised (pet, target, fwhm_mm) triple on ``vol``'s anatomy; PET and target in SUV,
    ``fwhm_mm`` the mean of the PSF's three FWHMs (what the network is told)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    vs = float(vol.voxel_size_mm)
    act = random_activity(vol, rng)
    f = rng.uniform(*FWHM_RANGE_MM)
    fwhm = (f, f, f * rng.uniform(*AXIAL_RANGE))
    blurred = simulate_pet(act, vs, fwhm, noise_level=0.0)
    # simulate_pet's noise model (sd = level x sqrt(signal / 1 SUV)), drawn here so it can be correlated
    noise = rng.uniform(*NOISE_RANGE) * np.sqrt(np.clip(blurred, 0.0, None)) * rng.standard_normal(blurred.shape)
    pet = (blurred + _correlated(noise, rng.uniform(*NOISE_CORR_VOXELS))).astype(np.float32)
    tgt = act if target == "activity" else np.asarray(rbv(pet, vol.seg, fwhm, vs, mask_layout="last"), dtype=np.float32)
    return pet, tgt.astype(np.float32), float(np.mean(fwhm))
