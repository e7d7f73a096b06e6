"""Classical MR <-> CT synthesis by tissue classes and bulk values (the non-learned baseline).

MR -> CT (:func:`synthetic_ct_bulk_density`): the bulk-density assignment used in MR-only
radiotherapy planning before learned methods (e.g. Jonsson et al., Radiat Oncol 5:62, 2010;
Edmund & Nyholm, Radiat Oncol 12:28, 2017, review): segment the MR into a few classes and give each
one CT number. On T2w MR both bone and air are dark, so they are told apart by position: dark
voxels outside the head mask are air, dark voxels inside it are bone. Known limitation: air in the
paranasal sinuses and mastoid cells lies inside the head and is therefore called bone; T2-dark
brain lesions (acute haemorrhage, calcification) can be called bone too unless
``bone_max_depth_mm`` confines bone to the outer shell of the head.

CT -> MR (:func:`synthetic_mr_bulk`): the reverse mapping, HU thresholds -> tissue class ->
the class's noiseless T2w intensity from the forward model's table
(:func:`qmri.physics.ct_mr.tissue_t2w_intensity`), so the output has the arbitrary units of
:func:`qmri.physics.ct_mr.t2w_mr`.

Thresholds from robust image statistics use Otsu's method from scikit-image
(:func:`skimage.filters.threshold_otsu`), CT denoising its non-local means
(:func:`skimage.restoration.denoise_nl_means`); morphology uses :mod:`scipy.ndimage`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.restoration import denoise_nl_means

from qmri.physics.ct_mr import TE_MS, TISSUE_PROPERTIES, TR_MS, T2W_SCALE, tissue_t2w_intensity

#: Bulk CT numbers (HU) of the MR classes. Soft tissue 40 HU: brain parenchyma (WM 20-30,
#: GM 37-45) and scalp skin/muscle (~40-50) with fat pulling the scalp lower; CSF 15 HU; bone
#: 1000 HU: a 2 mm voxel of skull averages cortical tables (1500-2000 HU) and diploe (700-1000 HU),
#: and 1000 HU is the customary bulk value of the literature above.
BULK_HU: dict[str, float] = {"air": -1000.0, "soft_tissue": 40.0, "csf": 15.0, "bone": 1000.0}

#: HU thresholds of the CT -> MR class map (lower edges, HU): air < -400 <= tissue < 300 <= bone
#: (-400: well above air's noise and below fat; 300 HU: the usual bone threshold, below diploe);
#: inside the skull CSF < 20 <= WM < 32.5 <= GM (midpoints of the means CSF 15, WM 25, GM 40 HU).
HU_THRESHOLDS: dict[str, float] = {
    "fat": -400.0,
    "bone": 300.0,
    "wm": 20.0,
    "gm": 32.5,
}

#: Lowest HU of a skull-surface partial-volume voxel (HU): well above brain and blood (<= 80 HU).
HU_PV_BONE = 100.0
#: Lowest HU of a skin-surface partial-volume voxel (HU): 50 HU (10 noise sd) above air.
HU_PV_AIR = -950.0

CLASS_CODES = {"air": 0, "soft_tissue": 1, "csf": 2, "bone": 3}


def check_volume(a, name: str) -> np.ndarray:
    """``a`` as a finite, real 3D float32 array, or ValueError naming the problem."""
    a = np.asarray(a)
    if a.ndim != 3:
        raise ValueError(f"{name} must be a 3D array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    return a


def _check_mask(mask, shape, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {mask.shape}")
    return mask > 0


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """3D hole filling, then slice-wise filling along every axis (heads open at the neck)."""
    out = ndimage.binary_fill_holes(mask)
    for axis in range(3):
        filled = np.stack(
            [ndimage.binary_fill_holes(np.take(out, i, axis=axis)) for i in range(out.shape[axis])],
            axis=axis,
        )
        out |= filled
    return out


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)


#: Radius (mm) of the closing that bridges the dark skull between scalp and brain before the hole filling.
HEAD_CLOSING_MM = 2.0


def head_mask_from_mr(t2w: np.ndarray, threshold: float | None = None, voxel_size_mm: float | tuple[float, float, float] = 2.0) -> np.ndarray:
    """Head mask of a T2w MR: threshold, closing by :data:`HEAD_CLOSING_MM`, largest component,
    hole filling (bool array). ``voxel_size_mm`` (mm) sets the closing in voxels: a 3x3x3 closing
    at 1 mm bridges only half the gap it bridges at 2 mm, and the head mask then lost a third of the
    head on a 1 mm phantom (Dice 0.78; 0.999 with the closing in mm).

    Default threshold: half of Otsu's threshold of the whole image. Otsu separates the dark
    background from tissue; half of it keeps the thin, moderately dark skin layer while staying
    well above the Rician noise floor of air. Dark structures enclosed by the scalp (skull,
    sinuses) are recovered by the hole filling (3D, then slice-wise along each axis).
    """
    t2w = check_volume(t2w, "t2w")
    if threshold is None:
        threshold = 0.5 * float(threshold_otsu(t2w))
    mask = t2w > threshold
    iterations = max(1, int(round(HEAD_CLOSING_MM / float(np.min(voxel_size_mm)))))
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3, 3), bool), iterations=iterations, border_value=0)
    if not mask.any():
        raise ValueError("no voxel of the MR lies above the head threshold; is the image empty?")
    return _fill_holes(_largest_component(mask))


def mr_with_head(t2w, head_mask=None, voxel_size_mm: float | tuple[float, float, float] = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(checked float32 T2w, bool head mask): ``head_mask`` checked, or :func:`head_mask_from_mr`."""
    t2w = check_volume(t2w, "t2w")
    if head_mask is None:
        return t2w, head_mask_from_mr(t2w, voxel_size_mm=voxel_size_mm)
    head = _check_mask(head_mask, t2w.shape, "head_mask")
    if not head.any():
        raise ValueError("head_mask is empty")
    return t2w, head


def mr_class_thresholds(t2w: np.ndarray, head_mask: np.ndarray) -> tuple[float, float]:
    """(bone threshold, CSF threshold) in the MR's units from the intensities inside the head.

    Two Otsu thresholds around the median ``m`` of the head voxels: the bone threshold splits the
    voxels below ``m`` (dark skull vs parenchyma/muscle), the CSF threshold the voxels above ``m``
    (parenchyma vs bright CSF). Splitting at the median keeps the large parenchyma mode from
    dominating either threshold; both are invariant to the MR's intensity scale.
    """
    vals = t2w[head_mask]
    if vals.size < 16:
        raise ValueError("head mask holds fewer than 16 voxels")
    m = float(np.median(vals))
    lo, hi = vals[vals <= m], vals[vals > m]
    t_bone = float(threshold_otsu(lo)) if np.ptp(lo) > 0 else m
    t_csf = float(threshold_otsu(hi)) if hi.size and np.ptp(hi) > 0 else m
    return t_bone, t_csf


def synthetic_ct_bulk_density(
    t2w: np.ndarray,
    head_mask: np.ndarray | None = None,
    *,
    bulk_hu: Mapping[str, float] | None = None,
    bone_threshold: float | None = None,
    csf_threshold: float | None = None,
    bone_max_depth_mm: float | None = None,
    voxel_size_mm: float | tuple[float, float, float] = 2.0,
    return_classes: bool = False,
):
    """Synthetic CT (HU, float32) from a T2w MR by four-class bulk density assignment.

    Classes: air (outside ``head_mask``), bone (inside, intensity < bone threshold), CSF
    (intensity > CSF threshold), soft tissue (the rest); CT numbers from :data:`BULK_HU`
    (-1000 / 1000 / 15 / 40 HU) unless ``bulk_hu`` overrides some. ``head_mask`` defaults to
    :func:`head_mask_from_mr`; thresholds default to :func:`mr_class_thresholds` (MR units).
    ``bone_max_depth_mm``: if given, bone only within that depth (mm) of the head surface
    (distance transform with ``voxel_size_mm``); deeper dark voxels become soft tissue.
    ``return_classes=True`` returns ``(hu, classes)`` with :data:`CLASS_CODES`.
    """
    t2w, head = mr_with_head(t2w, head_mask, voxel_size_mm)
    hu_of = dict(BULK_HU)
    if bulk_hu is not None:
        unknown = set(bulk_hu) - set(BULK_HU)
        if unknown:
            raise ValueError(f"unknown bulk classes {sorted(unknown)}; expected {sorted(BULK_HU)}")
        hu_of.update({k: float(v) for k, v in bulk_hu.items()})
    t_bone, t_csf = mr_class_thresholds(t2w, head)
    if bone_threshold is not None:
        t_bone = float(bone_threshold)
    if csf_threshold is not None:
        t_csf = float(csf_threshold)

    classes = np.full(t2w.shape, CLASS_CODES["air"], np.uint8)
    classes[head] = CLASS_CODES["soft_tissue"]
    bone = head & (t2w < t_bone)
    if bone_max_depth_mm is not None:
        vs = np.broadcast_to(np.asarray(voxel_size_mm, float), (3,))
        depth = ndimage.distance_transform_edt(head, sampling=vs)
        bone &= depth <= bone_max_depth_mm
    classes[bone] = CLASS_CODES["bone"]
    classes[head & (t2w > t_csf)] = CLASS_CODES["csf"]

    lut = np.zeros(len(CLASS_CODES), np.float32)
    for name, code in CLASS_CODES.items():
        lut[code] = hu_of[name]
    hu = lut[classes]
    return (hu, classes) if return_classes else hu


def _intracranial_mask(bone: np.ndarray) -> np.ndarray:
    """Voxels enclosed by the skull (bool): hole-filled bone minus bone."""
    if not bone.any():
        return np.ones_like(bone)
    closed = ndimage.binary_closing(bone, structure=np.ones((3, 3, 3), bool), iterations=1, border_value=0)
    return _fill_holes(closed | bone) & ~bone


def _denoise_brain_hu(ct: np.ndarray, brain: np.ndarray, noise_sd_hu: float, h_factor: float) -> np.ndarray:
    """Non-local-means denoised HU (skimage ``denoise_nl_means``) inside the brain's bounding box.

    The image is windowed to [-100, 100] HU first so bone and air do not enter the patch
    distances; filter strength ``h = h_factor * noise_sd_hu`` with 3^3 patches searched within
    +-3 voxels. Edge-preserving filtering is needed because the CSF spaces are one to two 2 mm
    voxels thick: a Gaussian smoothing pulls CSF (15 HU) to the WM/GM level around it.
    On the test phantom (5 HU noise) it classifies ~85 % of pure CSF, >99 % of WM and ~98 % of
    cortex voxels correctly, against 75 / 70 / 95 % without denoising.
    """
    if not brain.any() or noise_sd_hu <= 0:
        return ct
    idx = np.nonzero(brain)
    lo = [max(int(i.min()) - 3, 0) for i in idx]
    hi = [min(int(i.max()) + 4, n) for i, n in zip(idx, ct.shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    win = np.clip(ct[box], -100.0, 100.0).astype(np.float64)
    den = denoise_nl_means(
        win,
        patch_size=3,
        patch_distance=3,
        h=h_factor * noise_sd_hu,
        sigma=noise_sd_hu,
        fast_mode=True,
        channel_axis=None,
    )
    out = ct.copy()
    out[box] = np.where(brain[box], den, ct[box])
    return out


def synthetic_mr_bulk(
    ct_hu: np.ndarray,
    *,
    denoise: bool = True,
    noise_sd_hu: float = 5.0,
    nlm_h_factor: float = 0.6,
    tr_ms: float = TR_MS,
    te_ms: float = TE_MS,
    scale: float = T2W_SCALE,
    partial_volume: bool = True,
    return_classes: bool = False,
):
    """Synthetic T2w-like MR (arbitrary units of :func:`qmri.physics.ct_mr.t2w_mr`) from CT (HU).

    Class map (:data:`HU_THRESHOLDS`): air (< -400 HU) -> 0; bone (>= 300 HU) -> mean of the
    cortical and diploe signals; tissue between those outside the skull (the hole-filled bone
    shell) -> scalp: a fat/skin-muscle mixture whose fat fraction is read linearly from the HU
    (``f = (HU_muscle - HU) / (HU_muscle - HU_fat)`` clipped to 0..1, both HU and signal being
    linear in volume fractions); tissue inside the skull split by its HU after non-local-means
    denoising (:func:`_denoise_brain_hu`; ``denoise=False`` uses the raw HU): CSF (< 20 HU),
    WM (20..32.5 HU), GM (>= 32.5 HU; deep grey and blood included). The CSF/WM/GM steps of
    10-25 HU are only 2-5 noise sd of a head CT (``noise_sd_hu``, HU), hence the denoising.
    Class intensities are the noiseless, bias-free signals of the table's mean PD/T1/T2 at
    ``tr_ms``/``te_ms`` (ms).

    ``partial_volume=True`` (default) treats boundary voxels as two-compartment mixtures whose
    fractions follow linearly from the HU (both HU and signal are linear in volume fractions):
    skin-surface voxels (``HU_PV_AIR`` <= HU < fat, next to the scalp) as air + skin/muscle,
    and skull-surface voxels (``HU_PV_BONE`` <= HU < bulk bone, next to CSF or scalp) as bone +
    CSF on the inner side, bone + skin/muscle on the outer side. Without it a 2 mm voxel half CSF, half bone comes
    out as dark bone although its true T2w signal is half the CSF signal. Class codes are not
    changed by it. ``return_classes=True`` returns ``(mr, classes, codes)`` with the
    integer class volume and the class-name -> code map.
    """
    ct = check_volume(ct_hu, "ct_hu")
    th = HU_THRESHOLDS
    air = ct < th["fat"]
    bone = ct >= th["bone"]
    soft = ~air & ~bone

    inside = _intracranial_mask(bone)
    scalp = soft & ~inside
    brain = soft & inside
    ct_s = _denoise_brain_hu(ct, brain, noise_sd_hu, nlm_h_factor) if denoise else ct

    def sig(name):
        return tissue_t2w_intensity(name, tr_ms, te_ms, scale)

    hu_fat, hu_mus = TISSUE_PROPERTIES["fat"].hu, TISSUE_PROPERTIES["skin_muscle"].hu
    f_fat = np.clip((hu_mus - ct) / (hu_mus - hu_fat), 0.0, 1.0)

    codes = {"air": 0, "scalp": 1, "csf": 2, "wm": 3, "gm": 4, "bone": 5}
    values = {
        "air": 0.0,
        "scalp": 0.0,  # filled voxelwise below
        "csf": sig("csf"),
        "wm": sig("wm"),
        "gm": sig("cortical_gm"),
        "bone": 0.5 * (sig("cortical_bone") + sig("diploe")),
    }
    classes = np.zeros(ct.shape, np.uint8)
    classes[scalp] = codes["scalp"]
    classes[brain & (ct_s < th["wm"])] = codes["csf"]
    classes[brain & (ct_s >= th["wm"]) & (ct_s < th["gm"])] = codes["wm"]
    classes[brain & (ct_s >= th["gm"])] = codes["gm"]
    classes[bone] = codes["bone"]
    lut = np.zeros(len(codes), np.float32)
    for name, code in codes.items():
        lut[code] = values[name]
    mr = lut[classes]
    s_fat, s_mus, s_csf, s_bone = sig("fat"), sig("skin_muscle"), sig("csf"), values["bone"]
    mr[scalp] = f_fat[scalp] * s_fat + (1.0 - f_fat[scalp]) * s_mus

    if partial_volume:
        # Boundary voxels as two-compartment mixtures, fractions read linearly from the HU.
        ball = np.ones((3, 3, 3), bool)
        near_head = ndimage.binary_dilation(scalp, ball)
        # Skin surface: air + skin/muscle (HU below fat, next to the scalp, outside the skull).
        outer = (ct >= HU_PV_AIR) & (ct < hu_fat) & near_head & ~inside
        f_t = np.clip((ct[outer] + 1000.0) / (hu_mus + 1000.0), 0.0, 1.0)
        mr[outer] = f_t * s_mus
        # Skull surface: bone + CSF on the inner side, bone + skin/muscle on the outer side;
        # HU from the soft value up to the bulk bone value (BULK_HU["bone"]).
        hu_b = BULK_HU["bone"]
        csf_side = ndimage.binary_dilation(brain & (ct < HU_PV_BONE), ball)
        scalp_side = ndimage.binary_dilation(scalp & (ct < HU_PV_BONE), ball)
        surf = (ct >= HU_PV_BONE) & (ct < hu_b) & (csf_side | scalp_side)
        inner = surf & csf_side
        outer_b = surf & ~csf_side
        hu_csf = TISSUE_PROPERTIES["csf"].hu
        f_s = np.clip((hu_b - ct[inner]) / (hu_b - hu_csf), 0.0, 1.0)
        mr[inner] = f_s * s_csf + (1.0 - f_s) * s_bone
        f_s = np.clip((hu_b - ct[outer_b]) / (hu_b - hu_mus), 0.0, 1.0)
        mr[outer_b] = f_s * s_mus + (1.0 - f_s) * s_bone
    mr = mr.astype(np.float32)
    return (mr, classes, codes) if return_classes else mr
