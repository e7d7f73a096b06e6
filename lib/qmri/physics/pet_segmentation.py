"""A realistic PVC segmentation: the phantom's true tissue probabilities as a user would have them.

Segmentation-based PVC (RBV, iterative Yang, GTM, Muller-Gartner) is exact when it is given the
true tissue fractions and the true PSF. In practice the GM/WM/CSF/other probabilities come from a
T1w segmentation registered to the PET, which is wrong in two ways that this module simulates:

1. **Class errors of the T1 segmenter** (in T1 space, before registration):

   * the GM/WM boundary and the pial (GM/CSF) boundary are displaced along their normals by smooth
     random fields (zero mean, standard deviations ``gm_wm_shift_sd_mm`` and ``pial_shift_sd_mm``
     in mm, correlated over ``correlation_mm``). The displacement is applied to first order: a
     fraction ``d * |grad p|`` (``d`` in mm, the gradient of the smoothed tissue map in 1/mm) moves
     between the two classes, so the integrated volume moved per unit boundary area is ``d``;
   * a fraction ``mislabel_fraction`` of the voxels on a hard-label boundary (a face neighbour has
     another most-probable class) is mislabelled: its two largest class probabilities are swapped;
   * the probabilities are blurred and mixed with a spatially varying weight: ``p <- (1 - a) p +
     a (G * p)``, ``G`` a Gaussian of FWHM ``blur_fwhm_mm`` (mm) and ``a`` in ``[0, blur_weight_max]``
     a smooth random field (segmenters are sharper or smoother than the truth in different places).

2. **A rigid PET-MR misregistration**: a translation of ``|t|`` mm (drawn uniformly in
   ``translation_mm``, random direction uniform on the sphere) and a rotation by an angle drawn
   uniformly in ``rotation_deg`` (degrees) about a random axis through the brain's centroid, applied
   with :func:`scipy.ndimage.affine_transform` (trilinear, edge values extended). The segmentation
   content moves by ``+t``: a point at ``x`` (mm) in the truth is at ``c + R (x - c) + t``.

All operations keep the probabilities >= 0 and summing to 1 per voxel (convex mixtures, transfers
clamped to what the donor class has, trilinear interpolation of a partition of unity; a final
renormalisation removes rounding). Everything is reproducible from the numpy ``rng``.
Units: mm for lengths and voxel sizes, degrees for the rotation, probabilities dimensionless.
Layout: (x, y, z, 4) channel-last with the channel order GM, WM, CSF, other
(:data:`qmri.physics.pet.PVC_REGIONS`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from .pet import FWHM_TO_SIGMA, _triple, smooth_field

GM, WM, CSF, OTHER = range(4)


@dataclass(frozen=True)
class SegmentationErrors:
    """Size of the errors a registered T1 segmentation carries (mm, degrees, fractions).

    ``translation_mm`` and ``rotation_deg`` are (low, high) ranges the magnitudes are drawn from.
    """

    translation_mm: tuple[float, float] = (1.0, 2.0)
    rotation_deg: tuple[float, float] = (0.5, 1.5)
    gm_wm_shift_sd_mm: float = 0.75
    pial_shift_sd_mm: float = 0.5
    correlation_mm: float = 20.0
    blur_fwhm_mm: float = 2.5
    blur_weight_max: float = 0.6
    mislabel_fraction: float = 0.05


@dataclass
class RealisticSegmentation:
    """The degraded (x, y, z, 4) probabilities and what was done to them (mm, degrees)."""

    seg: np.ndarray
    translation_mm: np.ndarray
    rotation_axis: np.ndarray
    rotation_deg: float
    centre_mm: np.ndarray
    mislabelled_voxels: int
    errors: SegmentationErrors = field(default_factory=SegmentationErrors)

    def describe(self) -> dict:
        """JSON-friendly record of the misregistration and error sizes."""
        return {
            "translation_mm": [round(float(v), 3) for v in self.translation_mm],
            "translation_norm_mm": round(float(np.linalg.norm(self.translation_mm)), 3),
            "rotation_deg": round(float(self.rotation_deg), 3),
            "rotation_axis": [round(float(v), 3) for v in self.rotation_axis],
            "mislabelled_voxels": int(self.mislabelled_voxels),
            "errors": asdict(self.errors),
        }


def rotation_matrix(axis, angle_deg: float) -> np.ndarray:
    """3x3 rotation by ``angle_deg`` degrees about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    th = np.deg2rad(angle_deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * (k @ k)


def rigid_resample(seg: np.ndarray, voxel_size_mm, translation_mm, rotation: np.ndarray, centre_mm) -> np.ndarray:
    """Move the content of each channel of ``seg`` (x, y, z, C) by ``x -> c + R (x - c) + t`` (mm).

    :func:`scipy.ndimage.affine_transform` maps output voxels to input voxels:
    ``v_in = D^-1 R^T D v_out + D^-1 (c - R^T (c + t))`` with ``D = diag(voxel size)``.
    """
    d = np.diag(_triple(voxel_size_mm, "voxel_size_mm"))
    dinv = np.linalg.inv(d)
    c = np.asarray(centre_mm, dtype=float)
    t = np.asarray(translation_mm, dtype=float)
    rt = np.asarray(rotation, dtype=float).T
    matrix = dinv @ rt @ d
    offset = dinv @ (c - rt @ (c + t))
    return np.stack([ndimage.affine_transform(seg[..., k].astype(np.float64), matrix, offset, order=1, mode="nearest") for k in range(seg.shape[-1])], axis=-1)


def _gradient_magnitude(p: np.ndarray, vox, sigma_vox: float = 0.7) -> np.ndarray:
    """|grad (G * p)| in 1/mm (G a small Gaussian, so one-voxel steps give a smooth band)."""
    g = np.gradient(ndimage.gaussian_filter(p, sigma_vox, mode="nearest"), *vox)
    return np.sqrt(sum(gi**2 for gi in g))


def _transfer(p: np.ndarray, a: int, b: int, amount: np.ndarray) -> None:
    """Move ``amount`` (>0: from b to a; <0: from a to b) in place, clamped to the donor's share."""
    to_a = np.minimum(np.clip(amount, 0, None), p[..., b])
    to_b = np.minimum(np.clip(-amount, 0, None), p[..., a])
    p[..., a] += to_a - to_b
    p[..., b] += to_b - to_a


def _normalise(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0, None)
    s = p.sum(-1, keepdims=True)
    out = np.where(s > 0, p / np.where(s > 0, s, 1.0), 0.0)
    out[..., OTHER] = np.where(s[..., 0] > 0, out[..., OTHER], 1.0)
    return out


def realistic_segmentation(seg, voxel_size_mm, rng: np.random.Generator, errors: SegmentationErrors | None = None, translation_mm=None, rotation_deg: float | None = None, rotation_axis=None) -> RealisticSegmentation:
    """Degrade true (x, y, z, 4) GM/WM/CSF/other probabilities into a registered T1 segmentation.

    ``voxel_size_mm``: scalar or per axis (mm). ``rng``: numpy Generator (the same seed gives the same
    result). ``errors``: :class:`SegmentationErrors` (defaults: 1-2 mm translation, 0.5-1.5 deg
    rotation). ``translation_mm`` (3 values, mm), ``rotation_deg`` and ``rotation_axis`` override the
    drawn misregistration (the random draws are made anyway, so the other errors do not change).
    Returns a :class:`RealisticSegmentation` whose ``seg`` is float32, >= 0, summing to 1 per voxel.
    """
    e = errors or SegmentationErrors()
    p = np.asarray(seg, dtype=np.float64)
    if p.ndim != 4 or p.shape[-1] != 4:
        raise ValueError(f"seg must be (x, y, z, 4) GM/WM/CSF/other probabilities, got shape {p.shape}")
    p = _normalise(p.copy())
    vox = np.array(_triple(voxel_size_mm, "voxel_size_mm"))
    shape = p.shape[:3]

    # Misregistration draws first (fixed order keeps every draw reproducible).
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    t = direction * rng.uniform(*e.translation_mm)
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = float(rng.uniform(*e.rotation_deg)) * float(rng.choice([-1.0, 1.0]))
    if translation_mm is not None:
        t = np.array(_triple(translation_mm, "translation_mm"))
    if rotation_deg is not None:
        angle = float(rotation_deg)
    if rotation_axis is not None:
        axis = np.asarray(rotation_axis, dtype=float) / np.linalg.norm(rotation_axis)

    corr = e.correlation_mm / float(vox.mean())
    # 1. Mislabelled voxels on hard-label boundaries: swap the two most probable classes.
    lab = p.argmax(-1)
    edge = np.zeros(shape, bool)
    for ax in range(3):
        diff = np.diff(lab, axis=ax) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= diff
        edge[tuple(hi)] |= diff
    edge &= lab != OTHER
    pick = np.zeros(shape, bool)
    pick[edge] = rng.random(int(edge.sum())) < e.mislabel_fraction
    idx = np.argwhere(pick)
    if len(idx):
        v = p[pick]
        order = np.argsort(-v, axis=1)
        rows = np.arange(len(v))
        first, second = v[rows, order[:, 0]].copy(), v[rows, order[:, 1]].copy()
        v[rows, order[:, 0]], v[rows, order[:, 1]] = second, first
        p[pick] = v

    # 2. Boundary displacements (mm; positive grows GM), first order along the normal.
    d_gw = e.gm_wm_shift_sd_mm * smooth_field(shape, rng, corr)
    d_pial = e.pial_shift_sd_mm * smooth_field(shape, rng, corr)
    _transfer(p, GM, WM, d_gw * _gradient_magnitude(p[..., WM], vox))
    _transfer(p, GM, CSF, d_pial * _gradient_magnitude(p[..., GM] + p[..., WM], vox))

    # 3. Blurred and mixed probabilities with a smooth weight in [0, blur_weight_max].
    a = e.blur_weight_max * (0.5 + 0.5 * np.tanh(smooth_field(shape, rng, corr)))[..., None]
    sigma = e.blur_fwhm_mm * FWHM_TO_SIGMA / vox
    blurred = np.stack([ndimage.gaussian_filter(p[..., k], sigma, mode="nearest") for k in range(4)], axis=-1)
    p = (1 - a) * p + a * blurred

    # 4. Rigid misregistration about the brain's centroid (mm).
    brain = p[..., GM] + p[..., WM] + p[..., CSF]
    centre = (np.array(ndimage.center_of_mass(brain)) if brain.sum() > 0 else (np.array(shape) - 1) / 2) * vox
    p = rigid_resample(p, vox, t, rotation_matrix(axis, angle), centre)
    return RealisticSegmentation(_normalise(p).astype(np.float32), t, axis, angle, centre, int(len(idx)), e)


def dice(a: np.ndarray, b: np.ndarray, channel: int = GM, threshold: float = 0.5) -> float:
    """Dice overlap of ``channel > threshold`` between two (x, y, z, 4) probability maps."""
    x, y = a[..., channel] > threshold, b[..., channel] > threshold
    s = int(x.sum() + y.sum())
    return 2.0 * float((x & y).sum()) / s if s else 1.0


__all__ = ["SegmentationErrors", "RealisticSegmentation", "realistic_segmentation", "rigid_resample", "rotation_matrix", "dice"]
