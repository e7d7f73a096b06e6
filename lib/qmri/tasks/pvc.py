"""Partial-volume correction of amyloid PET (classical methods in PETPVC's conventions)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..classical import pvc
from ..io.maps import QuantMap
from .spec import TaskSpec, voxel_size

SEGMENTATION_METHODS = ("rbv", "iterative_yang", "gtm", "muller_gartner")
PET_ONLY_METHODS = ("richardson_lucy", "van_cittert", "sharpen")
TISSUE_CHANNELS = ("gm", "wm", "csf", "other")


def _fwhm(sidecar: dict[str, Any]) -> tuple[float, float, float]:
    f = sidecar.get("psf_fwhm_mm")
    if f is None:
        raise ValueError("sidecar lacks psf_fwhm_mm: the scanner's PSF FWHM in mm (one value or one per axis)")
    f = [float(v) for v in (f if isinstance(f, (list, tuple)) else [f, f, f])]
    if len(f) != 3 or not all(0 < v < 30 for v in f):
        raise ValueError(f"psf_fwhm_mm must be one or three values in (0, 30) mm, got {sidecar.get('psf_fwhm_mm')}")
    return tuple(f)


def split_pet(image: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray | None]:
    """PET (3D) and the optional tissue probabilities (x, y, z, 4: GM, WM, CSF, other)."""
    if image.ndim == 3 or (image.ndim == 4 and image.shape[3] == 1):
        pet, seg = image.reshape(image.shape[:3]), None
    elif image.ndim == 4 and image.shape[3] == 1 + len(TISSUE_CHANNELS):
        pet, seg = image[..., 0], image[..., 1:]
    else:
        raise ValueError(f"PET input must be 3D, or 4D with 5 channels (PET, GM, WM, CSF, other probabilities); got shape {tuple(image.shape)}")
    if method in SEGMENTATION_METHODS and seg is None:
        raise ValueError(f"method '{method}' needs a tissue segmentation: send a 4D image with channels PET, GM, WM, CSF, other")
    return pet, seg


def run_pvc(image: np.ndarray, affine: np.ndarray, sidecar: dict[str, Any], method: str) -> list[QuantMap]:
    if method not in SEGMENTATION_METHODS + PET_ONLY_METHODS:
        raise ValueError(f"unknown method '{method}' for pvc")
    pet, seg = split_pet(image, method)
    vs = voxel_size(affine)
    fwhm = _fwhm(sidecar)
    if method == "rbv":
        out = pvc.rbv(pet, seg, fwhm, vs)
    elif method == "iterative_yang":
        out = pvc.iterative_yang(pet, seg, fwhm, vs)
    elif method == "gtm":
        res = pvc.gtm(pet, seg, fwhm, vs)
        out = np.tensordot(seg, np.asarray(res.values, dtype=np.float32), axes=([3], [0]))
    elif method == "muller_gartner":
        # WM reference from voxels that are >= 90 % WM after PETPVC's erosion: the phantom's (and a
        # real segmentation's) WM probabilities rarely reach PETPVC's default 0.99.
        core = pvc.eroded_wm_mask(seg[..., 1], vs, threshold=0.9)
        if not core.any():
            raise ValueError("Muller-Gartner needs a white-matter core: no voxel has WM probability >= 0.9 after erosion")
        out = pvc.muller_gartner(pet, seg[..., 0], seg[..., 1], fwhm, vs, c_wm=float(pet[core].mean()), concentration=True)
    elif method == "richardson_lucy":
        out = pvc.richardson_lucy(pet, fwhm, vs)
    elif method == "van_cittert":
        out = pvc.reblurred_van_cittert(pet, fwhm, vs)
    else:
        out = pvc.sharpen(pet)
    out = np.asarray(out, dtype=np.float32)
    units = sidecar.get("units", "SUV")
    units = units[0] if isinstance(units, list) else units
    hi = float(np.percentile(out, 99.5)) if out.size else 1.0
    return [QuantMap("PVC", out, units, (0.0, hi), f"partial-volume corrected PET ({method})")]


PVC = TaskSpec(
    name="pvc",
    description="Partial-volume corrected amyloid PET (same units as the input, e.g. SUV)",
    inputs={"image": "3D PET, or 4D with channels PET, GM, WM, CSF, other (tissue probabilities) for segmentation-based methods", "sidecar": "psf_fwhm_mm (one or three values, mm)"},
    outputs={"PVC": {"units": "input units (SUV)", "display_range": "0 to the 99.5th percentile", "colormap": "PET-Heat"}},
    methods=SEGMENTATION_METHODS + PET_ONLY_METHODS,
    default_method="rbv",
    run=run_pvc,
    required_sidecar=("psf_fwhm_mm",),
)
