"""Partial-volume correction of amyloid PET (classical methods in PETPVC's conventions)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..classical import pvc
from ..io import sidecar_values as sv
from ..io.display import display, slot
from ..io.maps import QuantMap
from ..networks.weights import ReloadingWeights
from .spec import TaskSpec, real_volume, voxel_size

SEGMENTATION_METHODS = ("rbv", "iterative_yang", "gtm", "muller_gartner")
PET_ONLY_METHODS = ("richardson_lucy", "van_cittert", "sharpen")
TISSUE_CHANNELS = ("gm", "wm", "csf", "other")
#: Largest PSF FWHM in voxels along any axis (a clinical PET has 2-8 voxels; wider PSFs make the
#: deconvolutions slow and meaningless on the grid).
MAX_FWHM_VOXELS = 32


def _fwhm(sidecar: dict[str, Any]) -> tuple[float, float, float]:
    """The scanner's PSF FWHM per array axis (mm) from the sidecar's ``psf_fwhm_mm``."""
    return sv.fwhm_mm(sidecar, "psf_fwhm_mm")


def split_pet(image: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray | None]:
    """PET (3D) and the optional tissue probabilities (x, y, z, 4: GM, WM, CSF, other)."""
    image = np.asarray(image)
    if image.ndim == 3 or (image.ndim == 4 and image.shape[3] == 1):
        pet, seg = image.reshape(image.shape[:3]), None
    elif image.ndim == 4 and image.shape[3] == 1 + len(TISSUE_CHANNELS):
        pet, seg = image[..., 0], image[..., 1:]
    else:
        raise ValueError(f"PET input must be 3D, or 4D with 5 channels (PET, GM, WM, CSF, other probabilities); got shape {tuple(image.shape)}")
    pet = real_volume(pet, "the PET")
    if seg is not None:
        seg = real_volume(seg, "the tissue probabilities (channels 2-5)")
        if seg.min() < -0.01 or seg.max() > 1.01:
            raise ValueError(f"the tissue probabilities (channels 2-5) must lie in 0..1, got {seg.min():.3g}..{seg.max():.3g}")
    if method in SEGMENTATION_METHODS and seg is None:
        raise ValueError(f"method '{method}' needs a tissue segmentation: send a 4D image with channels PET, GM, WM, CSF, other")
    return pet, seg


def _network(pet: np.ndarray, vs, fwhm, net: ReloadingWeights) -> tuple[np.ndarray, str]:
    """The network's PVC map on the PET's grid, and a note for the map's description when it was resampled.

    On another grid than the network's, the PET is box-averaged to the training voxel size, corrected
    there and the map interpolated back (:func:`~qmri.networks.grid.on_network_grid`; 0.5-4 mm per
    axis accepted, else a ValueError naming the range). Chosen over adding the interpolated correction
    to the native PET, which kept the native grid's noise: lower RMSE and higher SSIM against the truth
    on every 1 mm and 2 x 2 x 3 mm case of ``bench_pvc_ood``."""
    from ..models.pvcnet.predict import predict_pvc
    from ..networks.grid import on_network_grid

    model, cfg = net.get()
    return on_network_grid(lambda x: predict_pvc(model, x, fwhm_mm=float(np.mean(fwhm))), pet, vs, cfg["voxel_size_mm"], "the PVC network")


def run_pvc(image: np.ndarray, affine: np.ndarray, sidecar: dict[str, Any], method: str, nets: dict[str, ReloadingWeights] | None = None) -> list[QuantMap]:
    nets = nets or {}
    if method not in SEGMENTATION_METHODS + PET_ONLY_METHODS + tuple(nets):
        raise ValueError(f"unknown method '{method}' for pvc")
    pet, seg = split_pet(image, method)
    vs = voxel_size(affine)
    fwhm = _fwhm(sidecar)
    units = sv.units_label(sidecar, "SUV", channel=0)
    wide = [f / v for f, v in zip(fwhm, vs)]
    if max(wide) > MAX_FWHM_VOXELS:
        raise ValueError(f"psf_fwhm_mm {list(fwhm)} mm spans {max(wide):.3g} voxels of {[round(v, 3) for v in vs]} mm (at most {MAX_FWHM_VOXELS} accepted): check the voxel size and the FWHM units (mm), or resample the PET")
    note = ""
    if method in nets:
        out, note = _network(pet, vs, fwhm, nets[method])
    elif method == "rbv":
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
    hi = float(np.percentile(out, 99.5)) if out.size else 1.0
    return [QuantMap("PVC", out, units, (0.0, hi), f"partial-volume corrected PET ({method}){note}")]


NETWORK_METHODS = {
    "pvcnet_fwhm": "PET-only 3D residual U-Net conditioned on the sidecar's PSF FWHM",
    "pvcnet": "PET-only 3D residual U-Net trained across FWHM 5-8 mm without being told the FWHM (seed 002's design)",
}
DEFAULT_NETWORK = "pvcnet_fwhm"


def pvc_spec(weights: dict[str, str | Path] | None = None, default: str = DEFAULT_NETWORK) -> TaskSpec:
    """The ``pvc`` task; ``weights`` maps network method names to checkpoints (reloaded when the
    file changes, so a model the trainer publishes is used at once). With weights, ``default`` (a
    network) is the default method; the classical methods stay selectable."""
    from ..models.pvcnet.predict import load_pvcnet

    nets = {m: ReloadingWeights(w, load_pvcnet, f"PVC network '{m}'") for m, w in (weights or {}).items()}
    unknown = set(nets) - set(NETWORK_METHODS)
    if unknown:
        raise ValueError(f"unknown PVC network methods {sorted(unknown)}")
    methods = tuple(nets) + SEGMENTATION_METHODS + PET_ONLY_METHODS
    return TaskSpec(
        name="pvc",
        description="Partial-volume corrected amyloid PET (same units as the input, e.g. SUV)",
        inputs={
            "image": "3D PET (networks, PET-only methods), or 4D with channels PET, GM, WM, CSF, other (tissue probabilities) for segmentation-based methods",
            "sidecar": "psf_fwhm_mm (one or three values, mm)",
            "slots": [slot("pet", "PET (SUV)"), slot("tissues", "Tissue probabilities GM, WM, CSF, other (multi-volume or sequence; for segmentation-based methods)", optional=True)],
        },
        outputs={"PVC": {"units": "input units (SUV)", "display_range": "0 to the 99.5th percentile", "display": display("heat", "PVC PET (SUV)", threshold=0.05, percentile=99.5)}},
        methods=methods,
        default_method=default if default in nets else "rbv",
        run=partial(run_pvc, nets=nets),
        required_sidecar=("psf_fwhm_mm",),
        bytes_per_voxel=400,  # qmri bench memory, two runs: the PVC networks 320-326 (PET + 4 tissue channels)
        networks=tuple(nets.values()),
    )


PVC = pvc_spec()
