"""Template-space head anatomy built once from the MNI ICBM152 2009a maps shipped inside nilearn.

nilearn ships the skull-stripped ICBM152 2009a T1, GM and WM probability maps at 1 mm
(197 x 233 x 189, MNI coordinates in mm). From them this module builds, in template space:

* brain tissue probabilities (CSF = intracranial minus GM and WM);
* deep grey nuclei as ellipsoids at their MNI positions (the template has no nuclei labels);
* dural venous sinuses as tubes traced along the brain surface;
* a head outside the brain: a thin CSF/dura gap, the skull shell, the scalp and a frontal sinus.

The grid is padded so that skull and scalp fit inside the field of view. Distances are in mm and
coordinates are MNI (RAS) mm throughout. Subjects are derived from this template by
:mod:`qmri.anatomy.phantom` (random affine + elastic deformation).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .labels import LABEL

log = logging.getLogger(__name__)

PAD_MM = 20  # margin added around the 1 mm MNI grid so the skull and scalp fit (mm)
CSF_GAP_MM = 1.5  # subarachnoid/dural gap between brain mask and skull (mm)
SKULL_MM = 6.5  # skull thickness (mm); the subject deformation makes it vary
SCALP_MM = 5.0  # skin + subcutaneous fat + muscle (mm)

# Deep grey nuclei: centre (x, y, z) in MNI mm and semi-axes (mm). Centres from standard MNI atlases
# (Harvard-Oxford / ATAG / Keuken 2014 averages), semi-axes chosen to give realistic volumes. Each
# entry is mirrored to both hemispheres (x -> -x).
NUCLEI_MNI: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "caudate": ((13.0, 12.0, 10.0), (5.0, 14.0, 9.0)),
    "putamen": ((25.0, 2.0, 1.0), (6.0, 15.0, 10.0)),
    "globus_pallidus": ((19.0, -3.0, -1.0), (4.0, 9.0, 5.0)),
    "thalamus": ((11.0, -18.0, 7.0), (8.0, 14.0, 10.0)),
    "red_nucleus": ((5.0, -20.0, -9.0), (3.5, 4.0, 3.5)),
    "substantia_nigra": ((11.0, -17.0, -12.0), (4.0, 8.0, 3.0)),
    "dentate": ((15.0, -57.0, -35.0), (7.0, 8.0, 6.0)),
}
VEIN_RADIUS_MM = {"superior_sagittal": 3.5, "straight": 2.5, "transverse": 3.5}


@dataclass
class TemplateAnatomy:
    """Template-space anatomy on a padded 1 mm MNI grid.

    Attributes:
        affine: voxel -> MNI mm (4x4).
        labels: uint8 tissue labels (see :mod:`qmri.anatomy.labels`).
        p_csf, p_gm, p_wm: float32 brain tissue probabilities (0 outside the intracranial mask).
        t1: float32 skull-stripped T1w template intensity (0..1).
    """

    affine: np.ndarray
    labels: np.ndarray
    p_csf: np.ndarray
    p_gm: np.ndarray
    p_wm: np.ndarray
    t1: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.labels.shape)


def _load_mni() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from nilearn import datasets  # heavy import, only here

    t1_img = datasets.load_mni152_template(resolution=1)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, dtype=np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj) > 0
    return np.asarray(t1_img.dataobj, dtype=np.float32), gm, wm, mask, t1_img.affine.copy()


def _pad(a: np.ndarray, p: int) -> np.ndarray:
    return np.pad(a, p, mode="constant")


def _world_grid(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """MNI mm coordinates of every voxel centre, shape (3, *shape)."""
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    xyz = affine[:3, :3].astype(np.float32) @ idx + affine[:3, 3:4].astype(np.float32)
    return xyz.reshape(3, *shape)


def _ellipsoid(xyz: np.ndarray, centre, semi_axes) -> np.ndarray:
    c = np.asarray(centre, dtype=np.float32).reshape(3, 1, 1, 1)
    r = np.asarray(semi_axes, dtype=np.float32).reshape(3, 1, 1, 1)
    return (((xyz - c) / r) ** 2).sum(0) <= 1.0


def _tube(xyz: np.ndarray, points: np.ndarray, radius: float) -> np.ndarray:
    """Voxels within ``radius`` mm of a polyline through ``points`` (N, 3) in mm."""
    out = np.zeros(xyz.shape[1:], dtype=bool)
    # Dense resampling of the polyline (0.5 mm steps) keeps this a union of balls: simple and exact
    # enough for a phantom vessel; only a bounding box around each ball is touched.
    seg = []
    for a, b in zip(points[:-1], points[1:]):
        n = max(2, int(np.ceil(np.linalg.norm(b - a) / 0.5)))
        seg.append(a + (b - a) * np.linspace(0, 1, n)[:, None])
    dense = np.concatenate(seg)
    origin = xyz[:, 0, 0, 0]
    step = xyz[:, 1, 1, 1] - origin
    for p in dense:
        lo = np.maximum(np.floor((p - radius - origin) / step).astype(int), 0)
        hi = np.minimum(np.ceil((p + radius - origin) / step).astype(int) + 1, out.shape)
        if np.any(hi <= lo):
            continue
        sl = tuple(slice(l, h) for l, h in zip(lo, hi))
        d2 = ((xyz[(slice(None),) + sl] - p.reshape(3, 1, 1, 1)) ** 2).sum(0)
        out[sl] |= d2 <= radius**2
    return out


def _surface_ray(mask: np.ndarray, affine: np.ndarray, origin_mm, direction) -> np.ndarray | None:
    """Last point (mm) of ``mask`` along a ray from ``origin_mm``; None if the ray never hits."""
    inv = np.linalg.inv(affine)
    d = np.asarray(direction, dtype=float)
    d /= np.linalg.norm(d)
    last = None
    for t in np.arange(0.0, 160.0, 0.5):
        p = np.asarray(origin_mm, dtype=float) + t * d
        i = np.rint(inv[:3, :3] @ p + inv[:3, 3]).astype(int)
        if np.any(i < 0) or np.any(i >= mask.shape):
            break
        if mask[tuple(i)]:
            last = p
    return last


def _sinus_paths(brain: np.ndarray, affine: np.ndarray) -> dict[str, np.ndarray]:
    """Polylines (mm) of the superior sagittal, straight and transverse sinuses.

    The superior sagittal sinus follows the midline brain surface from the frontal lobe over the
    vertex to the occipital pole (rays in the sagittal plane from a centre near the thalamus);
    it ends at the confluence, from which the straight sinus runs forward to the vein of Galen
    (MNI ~ (0, -48, 6)) and the transverse sinuses run laterally along the tentorial surface.
    """
    centre = np.array([0.0, -18.0, 10.0])
    sss = []
    for ang in np.deg2rad(np.arange(25.0, 206.0, 5.0)):  # 0 deg = anterior, 90 = up, 180 = posterior
        p = _surface_ray(brain, affine, centre, (0.0, np.cos(ang), np.sin(ang)))
        if p is not None:
            sss.append(p + 1.0 * np.array([0.0, np.cos(ang), np.sin(ang)]))
    sss = np.array(sss)
    confluence = sss[-1]
    galen = np.array([0.0, -48.0, 6.0])
    transverse = {}
    for side in (1.0, -1.0):
        pts = [confluence]
        for ang in np.deg2rad(np.arange(175.0, 110.0, -8.0)):  # from posterior sweeping laterally
            d = np.array([side * abs(np.sin(ang - np.pi)) * 1.0, np.cos(ang), 0.0])
            p = _surface_ray(brain, affine, np.array([0.0, -30.0, confluence[2]]), d)
            if p is not None:
                pts.append(p + d / np.linalg.norm(d))
        transverse["transverse_left" if side < 0 else "transverse_right"] = np.array(pts)
    return {"superior_sagittal": sss, "straight": np.array([galen, confluence]), **transverse}


@functools.lru_cache(maxsize=1)
def template_anatomy() -> TemplateAnatomy:
    """Build (once per process) the template-space head anatomy on a padded 1 mm grid."""
    log.info("building template anatomy from nilearn MNI152 2009a")
    t1, gm, wm, mask, affine = _load_mni()
    p = PAD_MM
    t1, gm, wm, mask = (_pad(a, p) for a in (t1, gm, wm, mask))
    affine = affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, p)

    intracranial = ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))
    gm = np.where(intracranial, np.clip(gm, 0, 1), 0).astype(np.float32)
    wm = np.where(intracranial, np.clip(wm, 0, 1), 0).astype(np.float32)
    total = np.maximum(gm + wm, 1.0)  # the two maps may overlap to a sum > 1 at boundaries
    gm /= total
    wm /= total
    csf = np.where(intracranial, np.clip(1.0 - gm - wm, 0, 1), 0).astype(np.float32)

    labels = np.zeros(mask.shape, dtype=np.uint8)
    brain_tissue = np.argmax(np.stack([csf, gm, wm]), axis=0)
    labels[intracranial] = (np.array([LABEL["csf"], LABEL["cortical_gm"], LABEL["wm"]], dtype=np.uint8))[brain_tissue[intracranial]]

    xyz = _world_grid(mask.shape, affine)
    parenchyma = intracranial & (csf < 0.5)
    for name, (centre, axes) in NUCLEI_MNI.items():
        for sx in (1.0, -1.0):
            c = (sx * centre[0], centre[1], centre[2])
            labels[_ellipsoid(xyz, c, axes) & parenchyma] = LABEL[name]

    # Head outside the brain, by distance (mm) from the intracranial mask.
    dist = ndimage.distance_transform_edt(~intracranial, sampling=np.abs(np.diag(affine)[:3])).astype(np.float32)
    gap = (dist > 0) & (dist <= CSF_GAP_MM)
    bone = (dist > CSF_GAP_MM) & (dist <= CSF_GAP_MM + SKULL_MM)
    scalp = (dist > CSF_GAP_MM + SKULL_MM) & (dist <= CSF_GAP_MM + SKULL_MM + SCALP_MM)
    labels[gap] = LABEL["csf"]
    labels[bone] = LABEL["bone"]
    labels[scalp] = LABEL["soft_tissue"]
    csf = np.where(gap, 1.0, csf).astype(np.float32)

    # Frontal sinus: an air cavity in the frontal bone anterior to the frontal pole at z ~ 0 mm.
    front = _surface_ray(intracranial, affine, (0.0, 0.0, 2.0), (0.0, 1.0, 0.0))
    if front is not None:
        sinus = _ellipsoid(xyz, (0.0, front[1] + CSF_GAP_MM + 4.0, 2.0), (16.0, 5.0, 12.0)) & bone
        labels[sinus] = LABEL["sinus_air"]

    # Venous sinuses (override tissue: they sit in the dura between brain and skull).
    for name, pts in _sinus_paths(intracranial, affine).items():
        key = "transverse" if name.startswith("transverse") else name
        tube = _tube(xyz, pts, VEIN_RADIUS_MM[key]) & (labels != LABEL["air"])
        labels[tube] = LABEL["venous_blood"]

    nonbrain = ~np.isin(labels, (LABEL["csf"], LABEL["cortical_gm"], LABEL["wm"]))
    for a in (csf, gm, wm):
        a[nonbrain] = 0.0
    t1 = np.where(intracranial, t1, 0).astype(np.float32)
    return TemplateAnatomy(affine=affine, labels=labels, p_csf=csf, p_gm=gm, p_wm=wm, t1=t1)
