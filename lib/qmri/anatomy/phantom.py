"""Per-subject digital head phantoms: the template anatomy under a random affine + elastic warp.

A subject is fully determined by its integer seed. The template anatomy
(:func:`qmri.anatomy.template.template_anatomy`, MNI mm) is pulled back through

    x_template = c + R^T diag(1/s) (x_subject - c) - t + u(x_subject)

with per-axis scale ``s`` (about +-6 %), rotation ``R`` (about +-6 deg per axis), translation ``t``
(about +-3 mm) and a smooth random displacement field ``u`` (RMS about 2.5 mm, correlation length
about 16 mm), all in mm. The warp is evaluated on a fine working grid (about 1 mm) and block-averaged
to the output voxel size, so that coarse voxels (2 mm default) carry physical partial volumes in
``probseg``; ``labels`` is the most probable class of each output voxel.

Lesions (infarct, haemorrhage, calcification, amyloid-positive cortex) are drawn in subject space
and recorded both as ``lesions`` (codes in :data:`qmri.anatomy.labels.LESIONS`) and as a list with
centres and radii in mm.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .labels import BRAIN_LABELS, LABEL, LESION_CODE, LESIONS, N_CLASSES, NAMES, TISSUES
from .template import TemplateAnatomy, template_anatomy

log = logging.getLogger(__name__)

BRAIN_CENTRE_MM = np.array([0.0, -18.0, 10.0])  # rotation/scaling centre in MNI mm
HEAD_MARGIN_MM = 14.0  # field-of-view margin around the template head (mm)
LESION_TYPES = ("infarct", "haemorrhage", "calcification")

# Amyloid-prone cortex (typical Abeta deposition: precuneus/posterior cingulate, medial and lateral
# frontal, lateral temporo-parietal), as spheres in MNI mm: (centre, radius).
AMYLOID_REGIONS_MNI = (
    ((0.0, -60.0, 35.0), 24.0),
    ((0.0, 45.0, 20.0), 28.0),
    ((48.0, -48.0, 22.0), 22.0),
    ((-48.0, -48.0, 22.0), 22.0),
    ((38.0, 30.0, 30.0), 20.0),
    ((-38.0, 30.0, 30.0), 20.0),
)


@dataclass
class Subject:
    """One phantom subject on an isotropic grid.

    Attributes:
        subject_id: e.g. ``"sub-000"``.
        seed: the integer that reproduces it.
        voxel_size_mm: isotropic voxel size (mm).
        affine: voxel -> world (MNI-like RAS, mm).
        labels: uint8 tissue labels (:mod:`qmri.anatomy.labels`).
        probseg: float32 (x, y, z, N_CLASSES) partial volumes, voxel sums 1.
        lesions: uint8 lesion codes (:data:`qmri.anatomy.labels.LESIONS`).
        t1w: float32 skull-stripped T1-weighted intensity (template units, 0..1).
        lesion_list: lesions with type, centre (mm) and semi-axes (mm).
        amyloid_positive: whether the subject has amyloid-positive cortex (PET task).
        warp: the deformation parameters (scale, rotation in degrees, translation in mm, elastic RMS mm).
    """

    subject_id: str
    seed: int
    voxel_size_mm: float
    affine: np.ndarray
    labels: np.ndarray
    probseg: np.ndarray
    lesions: np.ndarray
    t1w: np.ndarray
    lesion_list: list = field(default_factory=list)
    amyloid_positive: bool = False
    warp: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.labels.shape)

    @property
    def brain_mask(self) -> np.ndarray:
        """Intracranial brain tissue (CSF, GM, WM, deep grey), bool."""
        return np.isin(self.labels, BRAIN_LABELS)

    @property
    def head_mask(self) -> np.ndarray:
        """Everything that is not outside air, bool."""
        return self.labels != LABEL["air"]

    def tissue_volumes_ml(self) -> dict[str, float]:
        """Partial-volume tissue volumes (ml) from ``probseg``."""
        vox_ml = self.voxel_size_mm**3 / 1000.0
        sums = self.probseg.reshape(-1, N_CLASSES).sum(0, dtype=np.float64) * vox_ml
        return {n: round(float(v), 2) for n, v in zip(NAMES, sums)}

    def metadata(self) -> dict:
        return {
            "subject": self.subject_id,
            "seed": self.seed,
            "voxel_size_mm": self.voxel_size_mm,
            "shape": list(self.shape),
            "amyloid_positive": self.amyloid_positive,
            "lesions": self.lesion_list,
            "warp": self.warp,
            "tissue_volumes_ml": self.tissue_volumes_ml(),
            "labels": {t.label: t.name for t in TISSUES},
            "lesion_codes": LESIONS,
            "source": "MNI ICBM152 2009a (nilearn) warped by qmri.anatomy.phantom",
        }

    def save(self, out_dir: str | Path) -> Path:
        """Write ``<out_dir>/<subject_id>/`` with T1w, labels, probseg, lesions NIfTI and subject.json."""
        d = Path(out_dir) / self.subject_id
        d.mkdir(parents=True, exist_ok=True)
        _save(self.t1w.astype(np.float32), self.affine, d / "T1w.nii.gz")
        _save(self.labels.astype(np.uint8), self.affine, d / "labels.nii.gz")
        _save(self.lesions.astype(np.uint8), self.affine, d / "lesions.nii.gz")
        # Partial volumes stored as uint8 with scl_slope 1/255 (NIfTI scaling; nibabel applies it on
        # load): ~10x smaller than float32 at a quantisation of 0.004, renormalised by load().
        pv = nib.Nifti1Image(np.rint(self.probseg * 255).astype(np.uint8), self.affine)
        pv.header.set_slope_inter(1.0 / 255.0, 0.0)
        pv.header.set_xyzt_units("mm")
        nib.save(pv, d / "probseg.nii.gz")
        (d / "subject.json").write_text(json.dumps(self.metadata(), indent=2))
        return d

    @classmethod
    def load(cls, subject_dir: str | Path) -> "Subject":
        d = Path(subject_dir)
        meta = json.loads((d / "subject.json").read_text())
        lab = nib.load(d / "labels.nii.gz")
        pv = nib.load(d / "probseg.nii.gz").get_fdata(dtype=np.float32)
        pv /= np.maximum(pv.sum(-1, keepdims=True), 1e-6)
        return cls(
            subject_id=meta["subject"],
            seed=meta["seed"],
            voxel_size_mm=float(meta["voxel_size_mm"]),
            affine=lab.affine,
            labels=np.asarray(lab.dataobj, dtype=np.uint8),
            probseg=pv,
            lesions=np.asarray(nib.load(d / "lesions.nii.gz").dataobj, dtype=np.uint8),
            t1w=nib.load(d / "T1w.nii.gz").get_fdata(dtype=np.float32),
            lesion_list=meta["lesions"],
            amyloid_positive=bool(meta["amyloid_positive"]),
            warp=meta["warp"],
        )


def _save(arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, path)


def _rotation(deg: np.ndarray) -> np.ndarray:
    a, b, c = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


class _Warp:
    """Subject mm -> template mm mapping (affine part + smooth random displacement)."""

    def __init__(self, rng: np.random.Generator, lo_mm: np.ndarray, hi_mm: np.ndarray, deform: bool):
        if deform:
            self.scale = np.clip(1.0 + rng.normal(0, 0.03) + rng.normal(0, 0.015, 3), 0.92, 1.08)
            self.rot_deg = np.clip(rng.normal(0, 3.0, 3), -6, 6)
            self.trans_mm = np.clip(rng.normal(0, 1.5, 3), -3, 3)
            self.elastic_rms_mm = 2.5
        else:
            self.scale, self.rot_deg, self.trans_mm, self.elastic_rms_mm = np.ones(3), np.zeros(3), np.zeros(3), 0.0
        self.m = _rotation(self.rot_deg).T @ np.diag(1.0 / self.scale)
        # Smooth displacement: white noise on an 8 mm control grid, Gaussian-smoothed (sigma 2 nodes =
        # 16 mm correlation) and scaled to the requested RMS; trilinear between nodes.
        self.node_mm = 8.0
        self.lo = lo_mm - 2 * self.node_mm
        n = np.ceil((hi_mm - lo_mm) / self.node_mm).astype(int) + 5
        u = ndimage.gaussian_filter(rng.normal(size=(3, *n)), sigma=(0, 2, 2, 2), mode="wrap")
        rms = np.sqrt((u**2).sum(0).mean())
        self.u = (u * (self.elastic_rms_mm / max(rms, 1e-12))).astype(np.float32)

    def params(self) -> dict:
        return {
            "scale": [round(float(v), 4) for v in self.scale],
            "rotation_deg": [round(float(v), 3) for v in self.rot_deg],
            "translation_mm": [round(float(v), 3) for v in self.trans_mm],
            "elastic_rms_mm": self.elastic_rms_mm,
        }

    def __call__(self, xyz: np.ndarray) -> np.ndarray:
        """Map subject mm points (3, ...) to template mm points (3, ...)."""
        shp = xyz.shape[1:]
        p = xyz.reshape(3, -1)
        out = self.m @ (p - BRAIN_CENTRE_MM[:, None]) + BRAIN_CENTRE_MM[:, None] - self.trans_mm[:, None]
        if self.elastic_rms_mm > 0:
            nodes = (p - self.lo[:, None]) / self.node_mm
            for i in range(3):
                out[i] += ndimage.map_coordinates(self.u[i], nodes, order=1, mode="nearest")
        return out.reshape(3, *shp).astype(np.float32)


def _grid(shape, affine) -> np.ndarray:
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:4]).astype(np.float32).reshape(3, *shape)


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    if k == 1:
        return a
    s = [n // k for n in a.shape]
    a = a[: s[0] * k, : s[1] * k, : s[2] * k]
    return a.reshape(s[0], k, s[1], k, s[2], k).mean(axis=(1, 3, 5))


def _sample(tpl: TemplateAnatomy, vol: np.ndarray, xyz_t: np.ndarray, order: int) -> np.ndarray:
    inv = np.linalg.inv(tpl.affine)
    ijk = np.tensordot(inv[:3, :3], xyz_t, axes=1) + inv[:3, 3].reshape(3, 1, 1, 1)
    return ndimage.map_coordinates(vol, ijk, order=order, mode="constant", cval=0)


def _head_box(tpl: TemplateAnatomy) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argwhere(tpl.labels != LABEL["air"])
    lo = tpl.affine[:3, :3] @ idx.min(0) + tpl.affine[:3, 3] - HEAD_MARGIN_MM
    hi = tpl.affine[:3, :3] @ idx.max(0) + tpl.affine[:3, 3] + HEAD_MARGIN_MM
    return lo, hi


def make_subject(
    seed: int,
    voxel_size_mm: float = 2.0,
    lesions: str | tuple[str, ...] = "auto",
    amyloid_positive: bool | None = None,
    deform: bool = True,
    supersample: int | None = None,
    subject_id: str | None = None,
) -> Subject:
    """Generate one phantom subject.

    Args:
        seed: random seed; the same seed gives the same subject.
        voxel_size_mm: isotropic output voxel size (mm).
        lesions: ``"auto"`` (each lesion type with probability 0.5), ``"none"``, ``"all"`` or a tuple
            of lesion type names from :data:`LESION_TYPES`.
        amyloid_positive: force the amyloid status (None: drawn with probability 0.5).
        deform: apply the random affine + elastic warp (False: the template itself, resampled).
        supersample: working-grid subdivision per output voxel (None: 2 for voxels >= 1.5 mm, else 1).
        subject_id: name of the subject (default ``sub-<seed>``).
    """
    if voxel_size_mm <= 0:
        raise ValueError(f"voxel size must be positive, got {voxel_size_mm} mm")
    rng = np.random.default_rng(seed)
    tpl = template_anatomy()
    k = int(supersample) if supersample else min(2, max(1, int(round(voxel_size_mm))))
    work = voxel_size_mm / k
    lo, hi = _head_box(tpl)
    shape = tuple(int(v) for v in np.ceil((hi - lo) / voxel_size_mm))
    affine = np.diag([voxel_size_mm] * 3 + [1.0])
    affine[:3, 3] = lo + voxel_size_mm / 2.0  # centre of the first output voxel
    w_affine = np.diag([work] * 3 + [1.0])
    w_affine[:3, 3] = lo + work / 2.0

    warp = _Warp(rng, lo, hi, deform)
    xyz_t = warp(_grid(tuple(n * k for n in shape), w_affine))
    w_labels = _sample(tpl, tpl.labels, xyz_t, order=0).astype(np.uint8)
    brain3 = {LABEL["csf"]: tpl.p_csf, LABEL["cortical_gm"]: tpl.p_gm, LABEL["wm"]: tpl.p_wm}
    in3 = np.isin(w_labels, tuple(brain3))
    p3 = {c: _sample(tpl, v, xyz_t, order=1) for c, v in brain3.items()}
    tot3 = np.maximum(sum(p3.values()), 1e-6)
    probseg = np.zeros((*shape, N_CLASSES), dtype=np.float32)
    for c in range(N_CLASSES):
        ch = (w_labels == c).astype(np.float32)
        if c in brain3:
            ch = np.where(in3, p3[c] / tot3, 0.0).astype(np.float32)
        probseg[..., c] = _block_mean(ch, k)
    probseg /= np.maximum(probseg.sum(-1, keepdims=True), 1e-6)
    labels = np.argmax(probseg, axis=-1).astype(np.uint8)
    t1w = _block_mean(_sample(tpl, tpl.t1, xyz_t, order=1), k).astype(np.float32)
    del xyz_t, w_labels, p3

    if amyloid_positive is None:
        amyloid_positive = bool(rng.random() < 0.5)
    if lesions == "auto":
        chosen = tuple(t for t in LESION_TYPES if rng.random() < 0.5)
    elif lesions == "none":
        chosen = ()
    elif lesions == "all":
        chosen = LESION_TYPES
    else:
        chosen = tuple(lesions)
        bad = [t for t in chosen if t not in LESION_TYPES]
        if bad:
            raise ValueError(f"unknown lesion type(s) {bad}; choose from {LESION_TYPES}")
    les_map, les_list = _draw_lesions(rng, labels, affine, warp, chosen, amyloid_positive)

    sid = subject_id or f"sub-{seed:03d}"
    log.info("subject %s: %s voxels of %.2f mm, lesions %s, amyloid %s", sid, shape, voxel_size_mm, chosen, amyloid_positive)
    return Subject(
        subject_id=sid,
        seed=int(seed),
        voxel_size_mm=float(voxel_size_mm),
        affine=affine,
        labels=labels,
        probseg=probseg,
        lesions=les_map,
        t1w=t1w,
        lesion_list=les_list,
        amyloid_positive=amyloid_positive,
        warp=warp.params(),
    )


def _draw_lesions(rng, labels, affine, warp, chosen, amyloid_positive):
    xyz = _grid(labels.shape, affine)
    les = np.zeros(labels.shape, dtype=np.uint8)
    out = []
    if amyloid_positive:
        xyz_t = warp(xyz)
        region = np.zeros(labels.shape, dtype=bool)
        for c, r in AMYLOID_REGIONS_MNI:
            region |= ((xyz_t - np.reshape(c, (3, 1, 1, 1))) ** 2).sum(0) <= r**2
        cortex = region & (labels == LABEL["cortical_gm"])
        les[cortex] = LESION_CODE["amyloid_positive_cortex"]
        out.append({"type": "amyloid_positive_cortex", "voxels": int(cortex.sum()), "regions_mni": [[list(c), r] for c, r in AMYLOID_REGIONS_MNI]})
    spec = {
        # type: (host tissues for the centre, semi-axis range mm, tissues the lesion may occupy)
        "infarct": (("wm", "cortical_gm"), (5.0, 10.0), ("wm", "cortical_gm")),
        "haemorrhage": (("putamen", "thalamus", "wm"), (4.0, 7.0), ("putamen", "thalamus", "wm", "globus_pallidus", "caudate", "cortical_gm")),
        "calcification": (("globus_pallidus", "wm"), (1.5, 3.0), ("globus_pallidus", "wm", "putamen", "cortical_gm")),
    }
    for t in chosen:
        host, (rmin, rmax), occupy = spec[t]
        cand = np.argwhere(np.isin(labels, [LABEL[h] for h in host]))
        if len(cand) == 0:
            continue
        ijk = cand[rng.integers(len(cand))]
        centre = affine[:3, :3] @ ijk + affine[:3, 3]
        axes = rng.uniform(rmin, rmax, 3)
        m = (((xyz - centre.reshape(3, 1, 1, 1)) / axes.reshape(3, 1, 1, 1)) ** 2).sum(0) <= 1.0
        m &= np.isin(labels, [LABEL[o] for o in occupy])
        m[tuple(ijk)] = True
        les[m] = LESION_CODE[t]
        out.append({"type": t, "centre_mm": [round(float(v), 1) for v in centre], "semi_axes_mm": [round(float(v), 2) for v in axes], "voxels": int(m.sum())})
    return les, out
