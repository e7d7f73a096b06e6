"""OEF and the five QQ parameters from multi-echo GRE magnitude + QSM.

Methods: the OEF networks (``best``, the default when weights are configured; ``cnn3d``, seed 000;
``lstm``, seed 001), trained for the QQ-NET echo times 4.5..39.5 ms (a study with other echo times
gets a ValueError naming them, HTTP 422 in the app), the classical voxelwise QQ fit ``qq_fit`` and
the spatially regularised QQ fit ``qq_spatial`` (QQ-CCTV's idea) for any echo times.

Every method returns seven maps: OEF (%), S0, R2, Y, v, chi_nb and ``OEF_sd`` (%-points), the
per-voxel standard deviation of the OEF estimate: from a network's calibrated uncertainty head, from
the classical fits' Laplace (Gauss-Newton) approximation, and, for networks without such a head,
the Cramer-Rao bound of the voxel's own data at the estimate (:func:`fisher_oef_sd`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..classical.qq_fit import fit_qq
from ..io import sidecar_values as sv
from ..io.display import display, slot
from ..io.maps import QuantMap
from ..io.sidecar_values import echo_times_s
from ..networks import compute
from ..networks.weights import ReloadingWeights
from .spec import TaskSpec, check_brain_extent, require_channels, voxel_size

NETWORKS = ("best", "cnn3d", "lstm")
CLASSICAL = ("qq_fit", "qq_spatial")

OUTPUTS = {
    "OEF": ("%", (0.0, 80.0), "oxygen extraction fraction"),
    "S0": ("a.u.", None, "signal at TE = 0"),
    "R2": ("1/s", (0.0, 40.0), "tissue transverse relaxation rate"),
    "Y": ("fraction", (0.0, 1.0), "venous oxygenation"),
    "v": ("fraction", (0.0, 0.1), "venous blood volume fraction"),
    "chi_nb": ("ppm", (-0.2, 0.2), "non-blood susceptibility"),
    "OEF_sd": ("%", (0.0, 20.0), "standard deviation of the OEF estimate (%-points)"),
}
DISPLAY = {
    "OEF": display("rainbow", "OEF (%)", threshold=1e-3),
    "S0": display("grey", "S0 (a.u.)", threshold=1e-6, percentile=99.0),
    "R2": display("rainbow", "R2 (1/s)", threshold=1e-3),
    "Y": display("rainbow", "Y (fraction)", threshold=1e-4),
    "v": display("rainbow", "v (fraction)", threshold=1e-6),
    "chi_nb": display("diverging", "chi_nb (ppm)"),
    "OEF_sd": display("heat", "OEF sd (%-points)", threshold=1e-3),
}
SLOTS = [slot("echoes", "Multi-echo GRE magnitudes (one multi-volume or sequence, E echoes)"), slot("qsm", "QSM map (ppm, 0 outside the brain)")]
OEF_SD_MAX = 100.0  # %-points: an sd map is clipped here (a voxel whose data carry no information)


#: Largest accepted 99th percentile of |QSM| inside the brain (ppm). Tissue chi is -0.03..0.35 ppm,
#: haemorrhage/calcification ~+-1.4 ppm; the sample OEF study's QSM channel has 0.37 ppm (max 0.62).
#: A map in ppb (x 1000) is far above.
QSM_P99_MAX_PPM = 3.0


def split_oef_input(image: np.ndarray, sidecar: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Echo magnitudes (x,y,z,E), QSM (ppm), brain mask (QSM != 0) and echo times (s)."""
    te = echo_times_s(sidecar)
    n = len(te)
    image = require_channels(image, n + 1, f"the OEF input ({n} echo magnitudes from the sidecar's echo_times_ms + 1 QSM)")
    sv.expect_units(sidecar, ("ppm",), f"the QSM channel (channel {n}, the last)", channel=n)
    mag, chi = image[..., :n], image[..., n]
    mask = (chi != 0) & (mag[..., 0] > 0)
    if not mask.any():
        raise ValueError("no brain voxels: the QSM channel (last) must be non-zero inside the brain mask")
    if np.any(mag < 0):
        raise ValueError("echo magnitudes must be non-negative (magnitude images, not phase or real parts)")
    p99 = float(np.percentile(np.abs(chi[mask]), 99))
    if p99 > QSM_P99_MAX_PPM:
        raise ValueError(
            f"the QSM channel does not look like ppm: 99% of the brain voxels have |chi| up to {p99:.3g}, while brain susceptibility is -0.03..0.35 ppm (lesions ~1.4 ppm; accepted: 99th percentile <= {QSM_P99_MAX_PPM:g} ppm). Is it in ppb?"
        )
    return mag, chi, mask, te


#: Voxel size (mm) of the phantoms every shipped OEF network was trained on (their checkpoints do not
#: record it); other voxel sizes are resampled to it and back (:class:`qmri.networks.grid.NetworkGrid`).
NETWORK_VOXEL_MM = 2.0


def _network_maps(net: ReloadingWeights, mag, chi, mask, te_s, b0: float, voxel_mm) -> dict[str, np.ndarray]:
    from ..networks.grid import NetworkGrid
    from ..models.oefnet.predict import predict_oef

    if abs(b0 - 3.0) > 1e-3:
        raise ValueError(f"the OEF networks were trained at B0 = 3 T; this study has B0_T = {b0:g}: use method 'qq_fit'")
    grid = NetworkGrid(mask.shape, voxel_mm, NETWORK_VOXEL_MM, "the OEF network")
    if grid.identity:
        return predict_oef(net.get(), mag, chi, mask, [1000.0 * t for t in te_s], device=compute.device())
    m = grid.mask_to_network(mask)
    if not m.any():
        raise ValueError(f"the brain mask has no voxel left on the OEF network's {NETWORK_VOXEL_MM:g} mm grid: send a whole-brain study")
    out = predict_oef(net.get(), grid.masked_to_network(mag, mask, m), grid.masked_to_network(chi, mask, m), m, [1000.0 * t for t in te_s], device=compute.device())
    return {k: grid.masked_to_input(v, m, mask) for k, v in out.items()}


def fisher_oef_sd(values: Mapping[str, np.ndarray], mag: np.ndarray, mask: np.ndarray, te_s: np.ndarray, b0: float) -> np.ndarray:
    """OEF sd (%-points) from the Cramer-Rao bound of each voxel's own data at the estimate
    (:func:`qmri.physics.qq_crb.oef_crb_voxel`, all five parameters free), with the echo noise
    sigma estimated from the fit residual (median over the brain of the per-voxel RMS residual,
    in the magnitudes' units) and 0.005 ppm QSM noise; clipped to :data:`OEF_SD_MAX`."""
    from ..physics.qq import PARAM_NAMES, qbold_magnitude
    from ..physics.qq_crb import oef_crb_voxel

    p = np.stack([np.asarray(values[n], np.float64)[mask] for n in PARAM_NAMES], -1)
    model = qbold_magnitude(p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4], te_s, b0)
    sigma = float(np.median(np.sqrt(np.mean((np.asarray(mag, np.float64)[mask] - model) ** 2, -1))))
    sd = oef_crb_voxel(p, te_s=tuple(te_s), sigma_signal=max(sigma, 1e-12), B0=b0)
    out = np.zeros(mask.shape, np.float32)
    out[mask] = np.minimum(np.nan_to_num(sd, nan=OEF_SD_MAX, posinf=OEF_SD_MAX), OEF_SD_MAX)
    return out


def run_oef(image: np.ndarray, affine: np.ndarray, sidecar: dict[str, Any], method: str, nets: Mapping[str, ReloadingWeights] | None = None) -> list[QuantMap]:
    """OEF (%) and S0, R2, Y, v, chi_nb maps inside the brain mask by ``method`` (see the module doc)."""
    nets = nets or {}
    if method not in CLASSICAL and method not in nets:
        raise ValueError(f"unknown method '{method}' for oef; choose from {', '.join(tuple(nets) + CLASSICAL)}")
    vs = voxel_size(affine)  # the maps are written with this affine: refuse a singular or non-finite one
    mag, chi, mask, te = split_oef_input(image, sidecar)
    check_brain_extent(mask, vs, "the QSM channel's non-zero region (the brain mask)")
    b0 = sv.field_strength_t(sidecar)
    if method in CLASSICAL:
        if method == "qq_fit":
            r = fit_qq(mag, chi, te, mask, B0=b0, device=compute.device())
        else:
            from ..classical.qq_fit_spatial import fit_qq_spatial

            r = fit_qq_spatial(mag, chi, te, mask, B0=b0, voxel_size_mm=voxel_size(affine), device=compute.device())
        values = {"OEF": 100.0 * r["OEF"], "S0": r["S0"], "R2": r["R2"], "Y": r["Y"], "v": r["v"], "chi_nb": r["chi_nb"]}
        if "OEF_sd" in r:  # the fit's Laplace approximation (fraction)
            values["OEF_sd"] = 100.0 * r["OEF_sd"]
    else:
        values = _network_maps(nets[method], mag, chi, mask, te, b0, voxel_size(affine))
    if "OEF_sd" not in values:
        values["OEF_sd"] = fisher_oef_sd(values, mag, mask, te, b0)
    values["OEF_sd"] = np.minimum(values["OEF_sd"], OEF_SD_MAX)
    label = {"qq_fit": "classical QQ fit", "qq_spatial": "spatially regularised QQ fit"}.get(method, f"{method} network")
    maps = []
    for name, (units, rng, desc) in OUTPUTS.items():
        data = np.where(mask, values[name], 0.0).astype(np.float32)
        if rng is None:
            rng = (0.0, float(np.percentile(data[mask], 99)))
        maps.append(QuantMap(name, data, units, rng, f"{desc} ({label})"))
    return maps


#: Most regions in one label map: each is fitted with its mirror image, within
#: :data:`qmri.classical.qq_region.MAX_REGIONS` regions per call (checked by the tests).
MAX_LABELS = 16


def region_labels(labels: np.ndarray, shape: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Label value -> boolean region of an integer label map (0 = background) on the study's grid;
    ValueError for another shape, non-integer or negative values, or no region."""
    labels = np.asarray(labels)
    if labels.shape != tuple(shape):
        raise ValueError(f"the label map has shape {labels.shape}; the study's grid is {tuple(shape)}")
    if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)) or labels.min() < 0:
        raise ValueError("the label map must hold non-negative integers (0 = background, one value per region)")
    values = [int(v) for v in np.unique(labels) if v != 0]
    if not values:
        raise ValueError("the label map has no region (every voxel is 0)")
    if len(values) > MAX_LABELS:
        raise ValueError(f"the label map has {len(values)} regions; at most {MAX_LABELS}")
    return {v: labels == v for v in values}


def _mirror(region: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``region`` mirrored across the brain's midline along the array axis closest to the world's
    left-right axis (the contralateral region), restricted to ``mask``."""
    from ..physics.oef_physiology import midline_index, mirror_lr

    axis = int(np.argmax(np.abs(np.asarray(affine)[0, :3])))
    r, m = np.moveaxis(region, axis, 0), np.moveaxis(mask, axis, 0)
    return np.moveaxis(mirror_lr(r, midline_index(m)), 0, axis) & mask


def run_oef_regions(image: np.ndarray, affine: np.ndarray, sidecar: dict[str, Any], labels: np.ndarray) -> list[dict]:
    """The regional OEF (%, :mod:`qmri.classical.qq_region`) of every labelled region, of its mirror
    image across the midline outside every labelled region (the matched contralateral tissue), and
    their difference (region - mirror, sd in quadrature)."""
    from ..classical.qq_region import MIN_VOXELS, region_oef

    mag, chi, mask, te = split_oef_input(image, sidecar)
    regions = region_labels(labels, mask.shape)
    labelled = np.asarray(labels) != 0
    rois = {f"{v}": r for v, r in regions.items()}
    for v, r in regions.items():
        m = _mirror(r, mask, affine) & ~labelled
        if m.sum() >= MIN_VOXELS:
            rois[f"{v}_mirror"] = m
    est = {r.name: r for r in region_oef(mag, chi, mask, te, rois, B0=sv.field_strength_t(sidecar))}
    out = []
    for v in regions:
        entry = {"label": v, **est[f"{v}"].as_dict()}
        entry.pop("name")
        mirror = est.get(f"{v}_mirror")
        entry["mirror"] = None if mirror is None else {k: x for k, x in mirror.as_dict().items() if k != "name"}
        if mirror is not None:
            d, sd = est[f"{v}"].oef - mirror.oef, float(np.hypot(est[f"{v}"].sd, mirror.sd))
            entry["difference"] = {"OEF": round(d, 2), "OEF_sd": round(sd, 2), "ci95": [round(d - 1.96 * sd, 2), round(d + 1.96 * sd, 2)]}
        out.append(entry)
    return out


def oef_spec(weights: Mapping[str, str | Path] | None = None) -> TaskSpec:
    """The ``oef`` task; with ``weights`` (name -> file for best, cnn3d, lstm) the networks are
    selectable and ``best`` is the default. Weights are reloaded when their file changes, so a
    model published by the trainer is used by the next request without a restart."""
    from ..models.oefnet.predict import load_oef_net

    nets = {k: ReloadingWeights(weights[k], load_oef_net, f"OEF {k} network") for k in NETWORKS if weights and k in weights}
    methods = tuple(nets) + CLASSICAL
    return TaskSpec(
        name="oef",
        description="Oxygen extraction fraction (%) and the QQ parameters S0, R2, Y, v, chi_nb from multi-echo GRE magnitude + QSM",
        inputs={"image": "4D: E echo magnitudes then the QSM map (ppm, 0 outside the brain), channels last", "sidecar": "echo_times_ms (E values, ms; the networks need 4.5, 9.5, .., 39.5); B0_T (default 3)", "slots": SLOTS},
        outputs={k: {"units": u, "display_range": list(r) if r else "0 to the 99th percentile", "description": d, "display": DISPLAY[k]} for k, (u, r, d) in OUTPUTS.items()},
        methods=methods,
        default_method=methods[0],
        run=lambda image, affine, sidecar, method: run_oef(image, affine, sidecar, method, nets),
        required_sidecar=("echo_times_ms",),
        bytes_per_voxel=2500,  # qmri bench memory, two runs: qq_fit 1938-1991, LSTM 1787-1864 (8 echoes + QSM)
        # best (on its 2 mm grid): 275 MiB growth at 2 mm (0.7 M voxels), 2.8 GiB on a 1 mm 256x256x200
        # input with a mask filling the grid (13.1 M): fixed + slope, rounded up by a quarter
        memory={"best": (200.0, 270.0)} if "best" in nets else {},
        networks=tuple(nets.values()),
        regions=run_oef_regions,
    )


OEF = oef_spec()  # classical only (no weights); the app builds the spec with its weights
