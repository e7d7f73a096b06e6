"""Synthetic CT from T2w MR and synthetic T2w MR from CT.

Methods: ``sccyclegan`` (the structure-constrained CycleGAN's generators, slice by slice over the
axial slices, :mod:`qmri.models.synthnet.predict`) when weights are configured, and the classical
``bulk_density`` (tissue classes with bulk values, :mod:`qmri.classical.bulk_density`), always
selectable; for the synthetic CT also ``tissue_mixture`` (two-compartment mixtures read from the
T2w intensity, :mod:`qmri.classical.tissue_mixture_ct`). All keep the input's grid and affine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..classical.bulk_density import synthetic_ct_bulk_density, synthetic_mr_bulk
from ..classical.tissue_mixture_ct import synthetic_ct_tissue_mixture
from ..io.display import display, slot
from ..io.maps import QuantMap
from ..networks import compute
from ..models.synthnet.predict import MR_RANGE, load_synthnet, synthetic_ct, synthetic_mr
from ..networks.grid import on_network_grid
from ..networks.weights import ReloadingWeights
from .spec import TaskSpec, require_3d, voxel_size

NETWORK = "sccyclegan"
CLASSICAL = ("bulk_density",)
#: Classical methods of the synthetic CT only (MR -> CT).
CLASSICAL_SCT = CLASSICAL + ("tissue_mixture",)


#: A head CT in HU: at least 1 % of the voxels below -500 HU (air), and 98 % of them within this
#: range (scanners pad outside the field of view with -2048 or -3024 HU; metal can exceed 3071 HU).
CT_PLAUSIBLE_HU = (-4000.0, 10000.0)


def _check_ct(ct: np.ndarray) -> None:
    lo, hi = (float(v) for v in np.percentile(ct, [1, 99]))
    if lo > -500:
        raise ValueError("the CT has no air background below -500 HU: it does not look like a head CT in HU")
    if lo < CT_PLAUSIBLE_HU[0] or hi > CT_PLAUSIBLE_HU[1]:
        raise ValueError(f"the CT's 1st..99th percentiles are {lo:.4g}..{hi:.4g}: a head CT in HU lies within {CT_PLAUSIBLE_HU[0]:g}..{CT_PLAUSIBLE_HU[1]:g} HU")


def _check_mr(t2w: np.ndarray) -> None:
    if np.percentile(t2w, 1) < -500:
        raise ValueError("the image has values below -500 (air at ~-1000?): it looks like a CT in HU, not a T2w MR")
    top = float(np.percentile(t2w, 99.5))
    if top > 2.0 * MR_RANGE[1]:
        raise ValueError(f"the T2w MR's 99.5th percentile is {top:.4g}: the network expects the phantom's units (CSF ~580 a.u., range {MR_RANGE[0]:g}..{MR_RANGE[1]:g}); rescale it or use method bulk_density")


def _model(net: ReloadingWeights | None, method: str, methods: tuple[str, ...]):
    if method not in methods:
        raise ValueError(f"unknown method '{method}'; choose from {', '.join(methods)}")
    if method == NETWORK:
        if net is None:
            raise ValueError(f"method '{NETWORK}' is not available on this server (no weights configured)")
        return net.get()[0]
    return None


#: Voxel size (mm) of the phantoms the shipped generators were trained on (the checkpoint does not
#: record it); other voxel sizes are resampled to it and back (:class:`qmri.networks.grid.NetworkGrid`).
NETWORK_VOXEL_MM = 2.0
GENERATOR = "the scCycleGAN generator"  # named in the grid's notes and errors
#: Finest voxel size (mm, every axis) the sCT generator is run for: on a 1 mm T2w its 2 mm map scores
#: sCT MAE 155 HU against the 1 mm truth (a perfect 2 mm map: 145 HU; the tissue mixture at 1 mm:
#: 34 HU; bench_synth_ood.md), so finer inputs are refused with a pointer to tissue_mixture.
SCT_NETWORK_MIN_VOXEL_MM = 1.5
#: The same for the sMR generator: on a 1 mm CT its 2 mm map scores SSIM 0.75 against the 1 mm truth
#: (a perfect 2 mm map: 0.87; issue 25's goal 0.85; bench_synth_ood.md) and no classical sMR does
#: better (bulk density 0.64), so finer inputs are refused with the advice to resample the CT.
SMR_NETWORK_MIN_VOXEL_MM = 1.5


def run_synthetic_ct(image: np.ndarray, affine: np.ndarray, sidecar: dict[str, Any], method: str, net: ReloadingWeights | None = None, tta: int | None = None) -> list[QuantMap]:
    t2w = require_3d(image, "the T2w MR")
    vs = voxel_size(affine)  # also refuses a singular or non-finite affine, which the map is written with
    model = _model(net, method, ((NETWORK,) if net else ()) + CLASSICAL_SCT)
    note = ""
    if model is not None:
        _check_mr(np.asarray(t2w, np.float32))
        if min(vs) < SCT_NETWORK_MIN_VOXEL_MM:
            raise ValueError(
                f"method '{NETWORK}' computes sCT on a {NETWORK_VOXEL_MM:g} mm grid; this T2w has {[round(v, 3) for v in vs]} mm voxels (finer than "
                f"{SCT_NETWORK_MIN_VOXEL_MM:g} mm), where it loses the bone detail (sCT MAE 155 HU at 1 mm on held-out phantoms): use method 'tissue_mixture' (34 HU at 1 mm), or resample the T2w to 2 mm"
            )
        sct, note = on_network_grid(lambda x: synthetic_ct(model, x, device=compute.device(), **tta_passes(tta)), t2w, vs, NETWORK_VOXEL_MM, GENERATOR)
    elif method == "tissue_mixture":
        _check_mr(np.asarray(t2w, np.float32))  # it reads the phantom's T2w units, as the network does
        sct = synthetic_ct_tissue_mixture(t2w, voxel_size_mm=vs)
    else:
        sct = synthetic_ct_bulk_density(t2w, voxel_size_mm=vs)
    return [QuantMap("sCT", sct, "HU", (-160.0, 240.0), f"synthetic CT ({method}; brain window; bone window 300..1800 HU{note})")]


def run_synthetic_mr(image: np.ndarray, affine: np.ndarray, sidecar: dict[str, Any], method: str, net: ReloadingWeights | None = None, tta: int | None = None) -> list[QuantMap]:
    ct = require_3d(image, "the CT")
    vs = voxel_size(affine)  # the map is written with this affine: refuse a singular or non-finite one
    model = _model(net, method, ((NETWORK,) if net else ()) + CLASSICAL)
    _check_ct(ct)
    if model is not None and min(vs) < SMR_NETWORK_MIN_VOXEL_MM:
        raise ValueError(
            f"method '{NETWORK}' computes sMR on a {NETWORK_VOXEL_MM:g} mm grid; this CT has {[round(v, 3) for v in vs]} mm voxels (finer than "
            f"{SMR_NETWORK_MIN_VOXEL_MM:g} mm), where its map misses the fine detail (SSIM 0.75 at 1 mm on held-out phantoms): resample the CT to 2 mm"
        )
    smr, note = on_network_grid(lambda x: synthetic_mr(model, x, device=compute.device(), **tta_passes(tta)), ct, vs, NETWORK_VOXEL_MM, GENERATOR) if model is not None else (synthetic_mr_bulk(ct), "")
    return [QuantMap("sMR", smr, "a.u.", (0.0, float(np.percentile(smr, 99.5))), f"synthetic T2-weighted MR ({method}{note})")]


#: Test-time augmentation of the generators (the request's ``tta``): 1 pass; 2: averaged with the
#: left-right mirror; 8: mirror x the 2 x 2 in-plane offsets of the generators' stride grid
#: (:func:`qmri.models.synthnet.predict.translate_slices`). The default is 2: on the held-out bench
#: (bench_synth.md, rows "flip only") it keeps every goal (sCT MAE 59.2 HU, bone Dice 0.957, sMR
#: SSIM 0.905; with 8 passes 57.1 HU, 0.958, 0.908) at a quarter of the time (bench_speed.md).
TTA_CHOICES = (1, 2, 8)
TTA_DEFAULT = 2


def tta_passes(tta: int | None) -> dict:
    """``flip_average`` and ``shift_average`` of a ``tta`` choice (None: :data:`TTA_DEFAULT`)."""
    tta = TTA_DEFAULT if tta is None else int(tta)
    if tta not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {', '.join(map(str, TTA_CHOICES))}, got {tta}")
    return {"flip_average": tta >= 2, "shift_average": 2 if tta == 8 else 1}


TTA_OPTION = {"tta": {"choices": list(TTA_CHOICES), "default": TTA_DEFAULT, "help": "scCycleGAN test-time passes: 1 (fastest), 2 (with the left-right mirror), 8 (mirror x 2 x 2 in-plane offsets); classical methods ignore it"}}


#: Peak memory per voxel (bytes) of the most demanding method, from ``qmri bench memory`` (two
#: runs; scCycleGAN: 90 for sCT, 94-99 for sMR), rounded up.
BYTES_PER_VOXEL = 120


def synthesis_specs(weights: str | Path | None = None) -> tuple[TaskSpec, TaskSpec]:
    """The ``synthetic_ct`` and ``synthetic_mr`` tasks; with ``weights`` the scCycleGAN is their default.

    Both tasks share one :class:`ReloadingWeights` (one checkpoint holds both generators), reloaded
    whenever the file changes, so a model published by the trainer is used by the next request.
    """
    net = ReloadingWeights(weights, load_synthnet, "scCycleGAN") if weights else None
    methods = ((NETWORK,) if net else ()) + CLASSICAL
    sct_methods = ((NETWORK,) if net else ()) + CLASSICAL_SCT
    sct = TaskSpec(
        name="synthetic_ct",
        description="Synthetic CT (HU) from a T2-weighted head MR",
        inputs={"image": f"3D T2-weighted MR of the whole head (a.u.; the network expects CSF ~580, range {MR_RANGE[0]:g}..{MR_RANGE[1]:g})", "slots": [slot("t2w", "T2-weighted head MR")]},
        outputs={"sCT": {"units": "HU", "display_range": [-160, 240], "display": display("grey", "sCT (HU)", threshold=-900.0, windows={"brain": (0.0, 80.0), "bone": (-600.0, 1400.0)}, blend=False, interpolate=True)}},
        methods=sct_methods,
        default_method=sct_methods[0],
        run=lambda image, affine, sidecar, method, tta=None: run_synthetic_ct(image, affine, sidecar, method, net, tta),
        bytes_per_voxel=BYTES_PER_VOXEL,
        options=TTA_OPTION if net else {},
        networks=(net,) if net else (),
    )
    smr = TaskSpec(
        name="synthetic_mr",
        description="Synthetic T2-weighted MR from a head CT in HU",
        inputs={"image": "3D head CT in HU", "slots": [slot("ct", "Head CT (HU)")]},
        outputs={"sMR": {"units": "a.u.", "display_range": "0 to the 99.5th percentile", "display": display("grey", "sMR (a.u.)", threshold=1e-3, percentile=99.5, blend=False, interpolate=True)}},
        methods=methods,
        default_method=methods[0],
        run=lambda image, affine, sidecar, method, tta=None: run_synthetic_mr(image, affine, sidecar, method, net, tta),
        bytes_per_voxel=BYTES_PER_VOXEL,
        options=TTA_OPTION if net else {},
        networks=(net,) if net else (),
    )
    return sct, smr


#: The classical-only tasks (no weights configured); the app builds its tasks with weights.
SYNTHETIC_CT, SYNTHETIC_MR = synthesis_specs(None)
