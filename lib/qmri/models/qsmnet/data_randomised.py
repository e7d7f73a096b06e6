"""Domain-randomised QSM training examples: random tissue values, textures, shapes, orientation,
voxel size, noise, mask errors and background-field residuals, drawn per patch.

A network trained on one phantom generator learns that generator (issue 25). Each example here is a
cube of the brain of a base phantom subject resampled on a randomly rotated grid of a random
isotropic voxel size (0.6-2 mm: the dipole kernel in voxel units does not depend on an isotropic
voxel size, but the size of anatomy in voxels does; anisotropic inputs are resampled to isotropic
by the predictor), with

* every brain tissue class given a susceptibility drawn uniformly over a wide range
  (:data:`TISSUE_RANGES_PPM`), not around the literature values of the bench phantoms;
* intra-tissue texture (a Gaussian random field, sigma 1-4 mm, 0-0.03 ppm) and a smooth
  inhomogeneity;
* 0-8 random shapes (spheres, ellipsoids, cylinders, bars; 2-24 mm) of random susceptibility mixed
  in, as DeepQSM trains on geometric sources;
* sources inside the (true) brain only; the field computed by dipole convolution of the whole
  48-voxel region (so sources outside the 32-voxel patch contribute, as in a brain) with B0 along
  the grid's z axis (the predictor rotates any B0 direction to z; the random grid rotation up to
  45 degrees is the head's tilt relative to B0);
* Gaussian field noise 0.0003-0.003 ppm, a residual background field (a random 2nd-order
  polynomial up to 0.005 ppm) and an imperfect mask (the true one eroded or dilated by up to one
  voxel, where the network must work with the mask it is given).

The target is chi inside the given mask. Units: chi and field in ppm, sizes in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ...anatomy.labels import BRAIN_LABELS, LABEL, N_CLASSES
from ...anatomy.phantom import make_subject
from ...physics.dipole import forward_field
from ...physics.rotation import rotation_about

#: Per-class susceptibility ranges (ppm, relative to water) for randomised training brains: wide
#: enough to cover healthy and pathological tissue at 1.5-7 T.
TISSUE_RANGES_PPM: dict[str, tuple[float, float]] = {
    "csf": (-0.04, 0.04),
    "cortical_gm": (-0.04, 0.08),
    "wm": (-0.10, 0.03),
    "caudate": (-0.02, 0.15),
    "putamen": (-0.02, 0.15),
    "globus_pallidus": (0.0, 0.30),
    "thalamus": (-0.03, 0.08),
    "red_nucleus": (0.0, 0.25),
    "substantia_nigra": (0.0, 0.30),
    "dentate": (0.0, 0.30),
    "venous_blood": (0.1, 0.6),
}
SHAPE_RANGES_PPM = ((-0.3, 0.4), (-1.4, 1.4))  # mild sources (75 %) and haemorrhage/calcification-like (25 %)
VOXEL_RANGE_MM = (0.6, 2.0)
MAX_TILT_DEG = 45.0
NOISE_RANGE_PPM = (0.0003, 0.003)
BACKGROUND_MAX_PPM = 0.005
REGION = 48  # voxels per side of the simulated source region; the patch is its centre


@dataclass
class BaseBrain:
    """A phantom subject's partial volumes (x, y, z, N_CLASSES) on its 2 mm grid."""

    probseg: np.ndarray
    brain_voxels: np.ndarray  # (n, 3) voxel indices inside the brain, for choosing patch centres
    voxel_size_mm: float
    subject: str


def base_brain(seed: int, resolution_mm: float = 2.0) -> BaseBrain:
    s = make_subject(seed, resolution_mm, lesions="none", subject_id=f"qsm-dr-{seed}")
    return BaseBrain(s.probseg.astype(np.float32), np.argwhere(s.brain_mask), s.voxel_size_mm, s.subject_id)


def random_table(rng: np.random.Generator) -> np.ndarray:
    """Per-class chi (ppm) drawn uniformly from :data:`TISSUE_RANGES_PPM`; non-brain classes 0."""
    t = np.zeros(N_CLASSES)
    for name, (lo, hi) in TISSUE_RANGES_PPM.items():
        t[LABEL[name]] = rng.uniform(lo, hi)
    return t


def _random_rotation(rng: np.random.Generator, max_tilt_deg: float) -> np.ndarray:
    """Any rotation about z (B0), then a tilt of up to ``max_tilt_deg`` about x or y."""
    return rotation_about(int(rng.integers(0, 2)), float(rng.uniform(-max_tilt_deg, max_tilt_deg))) @ rotation_about(2, float(rng.uniform(-180, 180)))


def _smooth_field(shape, sigma_vox: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-sd Gaussian random field with correlation length ``sigma_vox`` voxels."""
    g = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="wrap")
    g = g - g.mean()
    return g / (g.std() + 1e-12)


def random_shapes(shape, voxel_mm: float, rng: np.random.Generator, n: int) -> np.ndarray:
    """Sum of ``n`` random spheres/ellipsoids/cylinders/bars (ppm) on a grid of ``voxel_mm`` voxels."""
    out = np.zeros(shape, np.float32)
    idx = np.indices(shape, dtype=np.float32)
    for _ in range(n):
        centre = rng.uniform(0.15, 0.85, 3) * np.array(shape)
        rot = _random_rotation(rng, 90.0)
        d = np.tensordot(rot, idx - centre[:, None, None, None], axes=1) * voxel_mm  # mm, shape's own axes
        kind = rng.integers(0, 4)
        r = rng.uniform(1.0, 12.0, 3)  # semi-axes, mm
        if kind == 0:  # sphere
            inside = (d**2).sum(0) <= r[0] ** 2
        elif kind == 1:  # ellipsoid
            inside = ((d / r[:, None, None, None]) ** 2).sum(0) <= 1.0
        elif kind == 2:  # cylinder along the shape's z
            inside = (d[0] ** 2 + d[1] ** 2 <= r[0] ** 2) & (np.abs(d[2]) <= r[2])
        else:  # bar (box)
            inside = np.all(np.abs(d) <= r[:, None, None, None], axis=0)
        lo, hi = SHAPE_RANGES_PPM[int(rng.random() < 0.25)]
        out[inside] = rng.uniform(lo, hi)  # later shapes overwrite earlier ones
    return out


def random_example(brain: BaseBrain, rng: np.random.Generator, patch: int = 32, region: int = REGION):
    """One randomised (field, chi, mask) patch of ``patch``^3 voxels (ppm, ppm, bool), and its voxel size (mm)."""
    voxel = float(rng.uniform(*VOXEL_RANGE_MM))
    rot = _random_rotation(rng, MAX_TILT_DEG)
    centre_vox = brain.brain_voxels[rng.integers(len(brain.brain_voxels))] + rng.uniform(-0.5, 0.5, 3)
    # sampling grid: region voxels of `voxel` mm, rotated, centred on a brain voxel (base grid units)
    g = (np.indices((region,) * 3, dtype=np.float64).reshape(3, -1) - (region - 1) / 2) * voxel
    coords = (rot @ g) / brain.voxel_size_mm + centre_vox[:, None]
    p = np.stack([ndimage.map_coordinates(brain.probseg[..., c], coords, order=1, mode="constant", cval=1.0 if c == LABEL["air"] else 0.0) for c in range(N_CLASSES)], -1).reshape((region,) * 3 + (N_CLASSES,))
    brain_p = p[..., list(BRAIN_LABELS)].sum(-1)
    true_mask = brain_p > 0.5
    chi = p @ random_table(rng) / np.maximum(brain_p, 1e-6)  # brain tissue mixture (air/bone excluded)
    sigma_mm = rng.uniform(1.0, 4.0)
    chi += rng.uniform(0.0, 0.03) * _smooth_field(chi.shape, sigma_mm / voxel, rng)
    chi += rng.uniform(0.0, 0.02) * _smooth_field(chi.shape, 20.0 / voxel, rng)
    shapes = random_shapes(chi.shape, voxel, rng, int(rng.integers(0, 9)))
    chi = np.where(shapes != 0, shapes, chi)
    chi = np.where(true_mask, chi, 0.0)
    field = forward_field(chi, voxel, (0.0, 0.0, 1.0), pad=True)
    # residual background field: a random 2nd-order polynomial over the region
    x = np.indices(chi.shape, dtype=np.float64).reshape(3, -1) / region - 0.5
    terms = np.concatenate([x, x**2, x[[0]] * x[[1]], x[[0]] * x[[2]], x[[1]] * x[[2]]])
    bg = (rng.normal(size=terms.shape[0]) @ terms).reshape(chi.shape)
    field = field + rng.uniform(0.0, BACKGROUND_MAX_PPM) * bg / (np.abs(bg).max() + 1e-12)
    field = field + rng.normal(0.0, rng.uniform(*NOISE_RANGE_PPM), field.shape)
    mask = true_mask
    k = int(rng.integers(-1, 2))
    if k > 0:
        mask = ndimage.binary_dilation(mask) & (brain_p > 0.05)
    elif k < 0:
        mask = ndimage.binary_erosion(mask)
    lo = (region - patch) // 2
    sl = (slice(lo, lo + patch),) * 3
    m = mask[sl]
    return np.where(m, field[sl], 0.0).astype(np.float32), np.where(m, chi[sl], 0.0).astype(np.float32), m, voxel
