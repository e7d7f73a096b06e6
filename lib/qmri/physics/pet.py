"""Amyloid PET forward model: tracer activity from the phantom, scanner PSF, noise, PVC masks.

Units and conventions
---------------------
* Activity is in SUV-like units normalised so that **cerebellar grey matter = 1.0**; any regional
  mean is therefore directly an SUVR (cerebellar-GM reference), the ratio used for amyloid
  positivity (REFERENCE.md section 3: PiB young controls 1.00 +- 0.05, typical AD 2.07 +- 0.20,
  florbetapir positivity threshold about 1.10).
* The scanner point-spread function is an isotropic-in-physical-space (or per-axis) Gaussian with
  FWHM in mm; variance ``(FWHM / 2.3548)**2`` mm^2, converted to voxels with the voxel size in mm
  (PETPVC convention, Thomas et al. 2016, Phys. Med. Biol. 61:7975; REFERENCE.md section 3).
* Arrays are (x, y, z) in the phantom's RAS voxel grid; 4D arrays are channel-first for
  :func:`gaussian_psf` and channel-last (x, y, z, region) for PVC masks (PETPVC / NIfTI layout).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from qmri.anatomy.labels import DEEP_GM_LABELS, GM_LABELS, LABEL, LESION_CODE, N_CLASSES

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))  # 1 / 2.3548
_BOUNDARIES = {"replicate", "zeros", "reflect", "circular"}


def _triple(value, name: str) -> tuple[float, float, float]:
    """Broadcast a scalar or a 3-sequence of positive-or-zero floats to a 3-tuple."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.atleast_1d(np.asarray(value, dtype=float)).ravel()
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3:
        raise ValueError(f"{name} must be a scalar or 3 values (one per axis), got {arr.size} values")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    return float(arr[0]), float(arr[1]), float(arr[2])


def fwhm_to_sigma_voxels(fwhm_mm, voxel_size_mm) -> tuple[float, float, float]:
    """Per-axis Gaussian standard deviation in voxels for a FWHM (mm) on a grid (voxel size mm)."""
    fwhm = _triple(fwhm_mm, "fwhm_mm")
    vox = _triple(voxel_size_mm, "voxel_size_mm")
    if min(fwhm) < 0:
        raise ValueError(f"fwhm_mm must be >= 0 mm on every axis, got {fwhm}")
    if min(vox) <= 0:
        raise ValueError(f"voxel_size_mm must be > 0 mm on every axis, got {vox}")
    return tuple(f * FWHM_TO_SIGMA / v for f, v in zip(fwhm, vox))  # type: ignore[return-value]


def gaussian_kernels_1d(fwhm_mm, voxel_size_mm, truncated: float = 4.0) -> list[torch.Tensor]:
    """The three normalised 1D sampled-Gaussian kernels (float64) that :func:`gaussian_psf` applies.

    Identical to MONAI's ``gaussian_1d(sigma, truncated, approx="sampled", normalize=True)`` (same
    half-width ``int(max(sigma * truncated, 0.5) + 0.5)``; equality is checked in the tests). It is
    computed here rather than imported because ``import monai`` pulls in monai.apps, handlers and
    mlflow (about 10 s of CPU), which the light CLI / data-generation paths should not pay for a
    two-line kernel. The *sampled* kernel keeps the requested variance; MONAI's default ``"erf"``
    (bin-integrated) kernel adds 1/12 voxel^2, i.e. +3.6 % FWHM for 5 mm on 2 mm voxels. An axis
    with FWHM 0 gets the identity kernel ``[1]``.
    """
    kernels = []
    for s in fwhm_to_sigma_voxels(fwhm_mm, voxel_size_mm):
        if s <= 1e-6:
            kernels.append(torch.ones(1, dtype=torch.float64))
            continue
        tail = int(max(s * truncated, 0.5) + 0.5)
        x = torch.arange(-tail, tail + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (x / s) ** 2)
        kernels.append(k / k.sum())
    return kernels


def gaussian_psf(volume, fwhm_mm, voxel_size_mm, boundary: str = "replicate", truncated: float = 4.0):
    """Blur ``volume`` with a Gaussian PSF of FWHM ``fwhm_mm`` (mm, scalar or per axis).

    Parameters
    ----------
    volume : numpy array or torch tensor, 3D (x, y, z) or channel-first 4D (c, x, y, z); each channel
        is blurred independently. Units are preserved (e.g. SUV or kBq/mL).
    fwhm_mm : float or 3 floats, PSF full width at half maximum in mm per axis (0 = no blur on that axis).
    voxel_size_mm : float or 3 floats, voxel size in mm per axis.
    boundary : padding of the separable convolution. ``"replicate"`` (default) extends the edge voxel,
        which matches ITK's ``DiscreteGaussianImageFilter`` used by PETPVC (zero-flux Neumann): a constant
        image stays exactly constant everywhere, including at the borders, and activity that lies
        further than ~4 sigma from the borders keeps its total exactly. ``"zeros"`` treats the outside
        as empty (total activity is then lost near borders but the operator is exactly symmetric);
        ``"reflect"`` and ``"circular"`` are also accepted.
    truncated : kernel half-width in standard deviations (MONAI default 4); kernels are renormalised to
        sum 1, so the cut tail (6e-5 of the mass) does not lose activity.

    Returns
    -------
    The blurred volume with the input's type (numpy in, numpy out; torch in, torch out on the same
    device), shape and floating dtype (integer inputs become float32).

    Notes
    -----
    Variance ``(FWHM / 2.3548)^2`` mm^2 per axis converted to voxels (PETPVC convention). The
    kernels equal MONAI's sampled Gaussians (``gaussian_1d(approx="sampled", normalize=True)``, see
    :func:`gaussian_kernels_1d`); they are applied as three separable 1D passes that give exactly
    what ``monai.networks.layers.separable_filtering`` gives with the same padding mode (see
    :func:`_apply_separable` for why not that call). MONAI's ``GaussianFilter`` does not fit: it
    fixes zero padding and its default ``erf`` kernel widens the PSF.
    """
    if boundary not in _BOUNDARIES:
        raise ValueError(f"boundary must be one of {sorted(_BOUNDARIES)}, got {boundary!r}")
    is_numpy = not isinstance(volume, torch.Tensor)
    x = torch.as_tensor(np.asarray(volume)) if is_numpy else volume
    if not torch.is_floating_point(x):
        x = x.to(torch.float32)
    if x.ndim not in (3, 4):
        raise ValueError(f"volume must be 3D (x,y,z) or channel-first 4D (c,x,y,z), got shape {tuple(x.shape)}")
    kernels = gaussian_kernels_1d(fwhm_mm, voxel_size_mm, truncated)
    mats = [_band_matrix(n, tuple(k.tolist()), boundary).to(device=x.device, dtype=x.dtype) for n, k in zip(x.shape[-3:], kernels)]
    return _apply_separable(x, mats, is_numpy)


def _pad_indices(n: int, p: int, boundary: str) -> np.ndarray:
    """Source index of each of the n + 2p padded samples along one axis (-1 = zero sample)."""
    idx = np.arange(-p, n + p)
    if boundary == "replicate":
        return np.clip(idx, 0, n - 1)
    if boundary == "circular":
        return idx % n
    if boundary == "reflect":  # torch/MONAI 'reflect': mirror about the edge voxel, edge not repeated
        if p >= n:
            raise ValueError(f"reflect boundary needs the kernel half-width ({p}) < axis length ({n})")
        idx = np.abs(idx)
        return np.where(idx > n - 1, 2 * (n - 1) - idx, idx)
    return np.where((idx < 0) | (idx > n - 1), -1, idx)  # zeros


@functools.lru_cache(maxsize=64)
def _band_matrix(n: int, kernel: tuple[float, ...], boundary: str) -> torch.Tensor:
    """(n, n) matrix B with ``(B @ v)[i] = sum_j k[j] * v_padded[i + j]``: 1D filtering of a length-n
    axis, the padding folded into the edge rows (e.g. replicate adds the outside taps to the edge
    column). float64 on CPU; cached per (n, kernel, boundary)."""
    k = np.asarray(kernel, dtype=np.float64)
    p = k.size // 2
    idx = _pad_indices(n, p, boundary)
    mat = np.zeros((n, n))
    rows = np.arange(n)
    for j in range(k.size):
        src = idx[j : j + n]
        ok = src >= 0
        np.add.at(mat, (rows[ok], src[ok]), k[j])
    return torch.from_numpy(mat)


def _apply_separable(x: torch.Tensor, mats: list[torch.Tensor], to_numpy: bool):
    """Filter the last three axes of ``x`` (..., X, Y, Z) with per-axis band matrices.

    Written by hand instead of MONAI's ``separable_filtering`` (whose output it reproduces exactly,
    see tests): MONAI pads and runs a grouped ``conv3d`` per axis, which on CPU is ~20x slower for
    these 5-25 tap kernels (0.15 s vs 0.007 s per 96x112x96 blur) and degrades badly when the
    cores are shared; three dense matmuls with the small (n x n) band matrices are BLAS calls on
    CPU and GPU alike.
    """
    X, Y, Z = x.shape[-3:]
    lead = x.shape[:-3]
    bx, by, bz = mats
    y = (x.reshape(-1, Z) @ bz.T).reshape(*lead, X, Y, Z)
    y = torch.matmul(by, y)  # (Y, Y) @ (..., X, Y, Z): broadcast over leading dims and X
    y = torch.matmul(bx, y.reshape(*lead, X, Y * Z)).reshape(*lead, X, Y, Z)
    return y.cpu().numpy() if to_numpy else y


# --------------------------------------------------------------------------------------------
# Tracer distribution
# --------------------------------------------------------------------------------------------

#: Mean class activity (SUVR, cerebellar GM = 1) of an amyloid tracer (PiB / florbetapir-like) late
#: frame. Cortical GM is handled separately (negative ~1.0, positive ~2.0); WM is drawn per subject.
#: Amyloid tracers bind non-specifically to myelin, so WM is high in everyone (1.6-2.0); CSF has
#: almost no tracer; deep grey ~1.1; dentate (cerebellar) ~1.0; blood pool, bone and scalp are low.
CLASS_SUVR = {
    "air": 0.0,
    "csf": 0.05,
    "cortical_gm": 1.0,
    "wm": 1.8,
    "caudate": 1.1,
    "putamen": 1.1,
    "globus_pallidus": 1.1,
    "thalamus": 1.1,
    "red_nucleus": 1.1,
    "substantia_nigra": 1.1,
    "dentate": 1.0,
    "venous_blood": 0.4,
    "bone": 0.2,
    "soft_tissue": 0.3,
    "sinus_air": 0.0,
}
#: Activity multipliers inside lesion codes (phantom choice): an infarct has lost most binding
#: tissue; haemorrhage and calcification bind little tracer. Code 4 (amyloid-positive cortex) is
#: handled by :func:`amyloid_activity` itself.
LESION_FACTOR = {1: 0.3, 2: 0.5, 3: 0.5}


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def smooth_field(shape, rng, correlation_voxels: float = 8.0) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (Gaussian-filtered white noise, sigma in voxels).

    Used for the smooth regional variation of tracer uptake; ``rng`` is a numpy Generator or seed.
    """
    g = _rng(rng)
    field = ndimage.gaussian_filter(g.standard_normal(shape), correlation_voxels, mode="wrap")
    field -= field.mean()
    sd = field.std()
    return (field / sd if sd > 0 else field).astype(np.float32)


def cerebellar_gm_mask(labels: np.ndarray, voxel_size_mm=2.0) -> np.ndarray:
    """Boolean mask of cerebellum-like cortical GM (the SUVR reference region).

    The phantom labels cerebral and cerebellar cortex with the same class (``cortical_gm``), so the
    cerebellar part is located from the dentate nuclei: cortical GM voxels at most 15 mm above the
    dentate centroid and posterior to 10 mm in front of it (RAS: axis 1 = anterior, axis 2 =
    superior). Without a dentate label, the inferior 25 % of the brain's z extent in its posterior
    half is used. Returns all-False if there is no cortical GM.
    """
    labels = np.asarray(labels)
    gm = labels == LABEL["cortical_gm"]
    if not gm.any():
        return np.zeros_like(gm)
    vox = _triple(voxel_size_mm, "voxel_size_mm")
    _, yy, zz = np.indices(labels.shape, sparse=True)
    dentate = labels == LABEL["dentate"]
    if dentate.any():
        cy, cz = np.argwhere(dentate)[:, 1:].mean(axis=0)
        region = (zz <= cz + 15.0 / vox[2]) & (yy <= cy + 10.0 / vox[1])
    else:
        brain = np.isin(labels, [LABEL["csf"], LABEL["cortical_gm"], LABEL["wm"], *DEEP_GM_LABELS])
        idx = np.argwhere(brain)
        zmin, zmax = idx[:, 2].min(), idx[:, 2].max()
        ymid = idx[:, 1].mean()
        region = (zz <= zmin + 0.25 * (zmax - zmin)) & (yy <= ymid)
    return gm & region


def amyloid_activity(labels, probseg=None, lesions=None, amyloid_positive: bool = False, rng=None, voxel_size_mm=2.0, wm_suvr_range=(1.6, 2.0)) -> np.ndarray:
    """True amyloid-tracer activity map (SUV-like units, cerebellar GM = 1.0, so means are SUVR).

    Parameters
    ----------
    labels : (x,y,z) int array of tissue labels (:mod:`qmri.anatomy.labels`).
    probseg : optional (x,y,z,15) per-class partial volumes summing to 1; activity is
        ``sum_c p_c * a_c`` so partial volume is physical. One-hot of ``labels`` if None.
    lesions : optional (x,y,z) lesion codes; code 4 marks amyloid-positive cortex; codes 1-3 scale
        activity by :data:`LESION_FACTOR`.
    amyloid_positive : subject status. Negative: cortical GM SUVR 1.0 +- 0.05 (smooth regional
        variation). Positive: cortical GM inside code-4 voxels (or, when no code 4 is present, all
        cortical GM except the cerebellar reference) at SUVR 2.0 +- 0.2 (smooth regional variation,
        REFERENCE.md section 3: typical AD PiB 2.07 +- 0.20). Code-4 voxels are ignored for a
        negative subject.
    rng : numpy Generator or seed (results are reproducible for a seed).
    voxel_size_mm : voxel size in mm (locates the cerebellar reference region).
    wm_suvr_range : per-subject WM SUVR drawn uniformly from this range (non-specific WM binding).

    Returns
    -------
    (x,y,z) float32 activity in SUV units. The cerebellar GM reference is exactly 1.0.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be 3D (x,y,z), got shape {labels.shape}")
    g = _rng(rng)
    shape = labels.shape
    if probseg is None:
        probseg = np.eye(N_CLASSES, dtype=np.float32)[np.clip(labels, 0, N_CLASSES - 1)]
    probseg = np.asarray(probseg, dtype=np.float32)
    if probseg.shape != (*shape, N_CLASSES):
        raise ValueError(f"probseg must have shape {(*shape, N_CLASSES)}, got {probseg.shape}")
    if lesions is not None:
        lesions = np.asarray(lesions)
        if lesions.shape != shape:
            raise ValueError(f"lesions must have the labels' shape {shape}, got {lesions.shape}")

    vox = _triple(voxel_size_mm, "voxel_size_mm")
    corr = 20.0 / np.mean(vox)  # regional variation correlated over ~20 mm
    cereb = cerebellar_gm_mask(labels, vox)
    # Partial-volume GM voxels may carry a neighbouring label: grow region masks by 2 voxels so the
    # GM component of those voxels gets its region's value.
    cereb_grown = ndimage.binary_dilation(cereb, iterations=2)

    # Per-voxel class activity maps a_c(x).
    wm_value = float(g.uniform(*wm_suvr_range))
    cortex = 1.0 + 0.05 * smooth_field(shape, g, corr)  # amyloid-negative cortex, SUVR 1.0 +- 0.05
    if amyloid_positive:
        if lesions is not None and np.any(lesions == LESION_CODE["amyloid_positive_cortex"]):
            pos = lesions == LESION_CODE["amyloid_positive_cortex"]
        else:
            pos = ~cereb_grown
        pos = ndimage.binary_dilation(pos, iterations=2) & ~cereb_grown
        elevated = np.clip(2.0 + 0.2 * smooth_field(shape, g, corr), 1.3, None)
        cortex = np.where(pos, elevated, cortex)
    else:
        smooth_field(shape, g, corr)  # keep the stream aligned between statuses
    cortex = np.where(cereb_grown, 1.0, cortex).astype(np.float32)
    wm = (wm_value * (1.0 + 0.03 * smooth_field(shape, g, corr))).astype(np.float32)

    act = np.zeros(shape, dtype=np.float32)
    for name, value in CLASS_SUVR.items():
        c = LABEL[name]
        if name == "cortical_gm":
            act += probseg[..., c] * cortex
        elif name == "wm":
            act += probseg[..., c] * wm
        elif value:
            act += probseg[..., c] * np.float32(value)
    if lesions is not None:
        for code, factor in LESION_FACTOR.items():
            act = np.where(lesions == code, act * np.float32(factor), act)
    return act.astype(np.float32)


def suvr(activity, region_mask, reference_mask) -> float:
    """SUVR = weighted mean of ``activity`` over ``region_mask`` / that over ``reference_mask``.

    Masks may be boolean or probabilistic weights (same shape as ``activity``); numpy or torch.
    Dimensionless.
    """
    a = np.asarray(activity.detach().cpu() if isinstance(activity, torch.Tensor) else activity, dtype=np.float64)
    out = []
    for name, m in (("region_mask", region_mask), ("reference_mask", reference_mask)):
        w = np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m, dtype=np.float64)
        if w.shape != a.shape:
            raise ValueError(f"{name} shape {w.shape} does not match activity shape {a.shape}")
        if w.sum() <= 0:
            raise ValueError(f"{name} is empty")
        out.append(float((a * w).sum() / w.sum()))
    if out[1] == 0:
        raise ValueError("reference region has zero mean activity")
    return out[0] / out[1]


def simulate_pet(activity, voxel_size_mm, fwhm_mm, rng=None, noise_level: float = 0.05, boundary: str = "replicate", device=None) -> np.ndarray:
    """Scanner image of ``activity``: Gaussian PSF blur plus signal-dependent Gaussian noise.

    ``pet = h * activity + noise``, ``noise ~ N(0, sigma^2)`` with
    ``sigma(x) = noise_level * sqrt(max(h * activity, 0) / 1 SUV)`` (SUV units): a Poisson-like
    variance proportional to the blurred signal, scaled so that ``noise_level`` is the relative
    standard deviation at the reference level SUV 1.0 (cerebellar GM); at SUVR 2 the relative noise is
    ``noise_level / sqrt(2)``. ``noise_level=0`` gives the noiseless blurred image. The noise is
    voxel-independent (no reconstruction correlation) and values are not clipped at 0.

    Parameters: ``activity`` (x,y,z) SUV; ``voxel_size_mm`` and ``fwhm_mm`` in mm (scalar or per
    axis); ``rng`` numpy Generator or seed; ``device`` torch device for the blur (default CPU).
    Returns a float32 numpy array (SUV).
    """
    if noise_level < 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")
    x = torch.as_tensor(np.asarray(activity, dtype=np.float32), device=device)
    blurred = gaussian_psf(x, fwhm_mm, voxel_size_mm, boundary=boundary).cpu().numpy()
    if noise_level == 0:
        return blurred.astype(np.float32)
    sigma = noise_level * np.sqrt(np.clip(blurred, 0, None))
    return (blurred + sigma * _rng(rng).standard_normal(blurred.shape)).astype(np.float32)


#: Channel order of :func:`segmentation_probabilities`.
PVC_REGIONS = ("gm", "wm", "csf", "other")


def segmentation_probabilities(probseg, channel_last: bool = True) -> np.ndarray:
    """The 4D PVC region mask a T1 segmentation would give: GM, WM, CSF, other (background).

    ``probseg`` is the phantom's (x,y,z,15) class partial volumes (or a 3D label array, one-hot
    encoded). GM = cortical/cerebellar GM plus deep grey nuclei (``GM_LABELS``); WM; CSF; "other" =
    everything else (air, blood, bone, scalp, sinus) so that the voxel sums are exactly 1 (PETPVC
    convention: one region per volume, background included). Returns float32 (x,y,z,4) with channel
    order :data:`PVC_REGIONS`, or (4,x,y,z) if ``channel_last`` is False.
    """
    p = np.asarray(probseg)
    if p.ndim == 3 and not np.issubdtype(p.dtype, np.floating):
        p = np.eye(N_CLASSES, dtype=np.float32)[np.clip(p, 0, N_CLASSES - 1)]
    if p.ndim != 4 or p.shape[-1] != N_CLASSES:
        raise ValueError(f"probseg must be (x,y,z,{N_CLASSES}) partial volumes or 3D labels, got {p.shape}")
    p = np.clip(p.astype(np.float32), 0, None)
    total = p.sum(-1, keepdims=True)
    p = p / np.where(total > 0, total, 1.0)
    gm = p[..., list(GM_LABELS)].sum(-1)
    wm = p[..., LABEL["wm"]]
    csf = p[..., LABEL["csf"]]
    other = np.clip(1.0 - gm - wm - csf, 0.0, 1.0)
    out = np.stack([gm, wm, csf, other], axis=-1 if channel_last else 0).astype(np.float32)
    return out


__all__: Sequence[str] = (
    "FWHM_TO_SIGMA",
    "CLASS_SUVR",
    "LESION_FACTOR",
    "PVC_REGIONS",
    "fwhm_to_sigma_voxels",
    "gaussian_kernels_1d",
    "gaussian_psf",
    "smooth_field",
    "cerebellar_gm_mask",
    "amyloid_activity",
    "suvr",
    "simulate_pet",
    "segmentation_probabilities",
)
