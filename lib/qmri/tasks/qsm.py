"""QSM: susceptibility (ppm) from a local field map, or from raw multi-echo magnitude + phase."""

from __future__ import annotations

from typing import Any

import numpy as np

from pathlib import Path

from ..classical import qsm as cq
from ..io.maps import QuantMap
from ..networks.qsm_predict import load_qsmnet, predict_chi
from ..networks.weights import ReloadingWeights
from .oef import echo_times_s
from .spec import TaskSpec, require_3d, voxel_size

CLASSICAL = ("l2", "tkd", "tv", "cg")
# qsmnet: network + support-constrained data consistency; qsmnet_direct: the network output alone
METHODS = ("qsmnet", "qsmnet_direct") + CLASSICAL
CHI_RANGE = (-0.2, 0.2)


def b0_direction(sidecar: dict[str, Any]) -> tuple[float, float, float]:
    b = sidecar.get("B0_dir")
    if not isinstance(b, (list, tuple)) or len(b) != 3:
        raise ValueError(f"sidecar B0_dir must be 3 numbers (B0 direction in the image's array axes), got {b!r}")
    v = np.asarray(b, dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.linalg.norm(v) < 1e-6:
        raise ValueError(f"sidecar B0_dir {list(b)} is not a direction")
    return tuple(float(x) for x in v / np.linalg.norm(v))


def _invert(field, mask, vs, b0, method, magnitude=None, net: ReloadingWeights | None = None):
    if method in ("qsmnet", "qsmnet_direct"):
        if net is None:
            raise ValueError(f"method '{method}' is not available on this server (no weights configured)")
        model, _ = net.get()
        return predict_chi(model, field, mask, vs, b0, refine_iterations=None if method == "qsmnet" else 0)
    if method == "tkd":
        return cq.tkd(field, mask, vs, b0)
    if method == "l2":
        return cq.closed_form_l2(field, mask, vs, b0)
    if method == "tv":
        return cq.tv_inversion(field, mask, vs, b0, magnitude=magnitude)
    if method == "cg":
        return cq.masked_cg(field, mask, vs, b0)
    raise ValueError(f"unknown method '{method}'; choose from {', '.join(METHODS)}")


def run_qsm(image: np.ndarray, affine: np.ndarray, sidecar: dict[str, Any], method: str, net: ReloadingWeights | None = None) -> list[QuantMap]:
    field = require_3d(image, "the local field map (ppm)")
    b0 = b0_direction(sidecar)
    mask = field != 0
    if mask.sum() < 27:
        raise ValueError("the local field is zero almost everywhere: it must be non-zero inside the brain mask")
    if np.abs(field[mask]).max() > 50:
        raise ValueError(f"local field values up to {np.abs(field[mask]).max():.3g}: expected ppm of B0 (|field| < 1 inside the brain); is it in Hz or rad?")
    chi = np.where(mask, np.asarray(_invert(field, mask, voxel_size(affine), b0, method, net=net)), 0.0)
    return [QuantMap("chi", chi.astype(np.float32), "ppm", CHI_RANGE, f"magnetic susceptibility ({method})")]


def run_qsm_raw(image: np.ndarray, affine: np.ndarray, sidecar: dict[str, Any], method: str, net: ReloadingWeights | None = None) -> list[QuantMap]:
    te_ms = 1000.0 * echo_times_s(sidecar)
    n = len(te_ms)
    if image.ndim != 4 or image.shape[3] != 2 * n + 1:
        raise ValueError(
            f"the raw QSM input must be 4D with {2 * n + 1} channels ({n} magnitudes, {n} phases in rad from the sidecar's "
            f"{n} echo_times_ms, then the brain mask); got shape {tuple(image.shape)}"
        )
    mag, phase, mask = image[..., :n], image[..., n : 2 * n], image[..., 2 * n] > 0.5
    if mask.sum() < 27:
        raise ValueError("the brain mask channel (last) is empty")
    if np.abs(phase[mask]).max() > np.pi + 1e-3:
        raise ValueError("phase channels must be wrapped phase in radians (-pi..pi)")
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}'; choose from {', '.join(METHODS if net else CLASSICAL)}")
    b0 = b0_direction(sidecar)
    vs = voxel_size(affine)
    total = cq.echo_fit_total_field(mag, phase, te_ms, float(sidecar.get("B0_T", 3.0)), mask=mask, voxel_size=vs)
    local, m = cq.vsharp(total, mask, vs)
    local, m = np.asarray(local), np.asarray(m, dtype=bool)
    chi = np.asarray(_invert(local, m, vs, b0, method, magnitude=mag[..., 0], net=net))
    chi = np.where(m, chi, 0.0).astype(np.float32)
    local = np.where(m, local, 0.0).astype(np.float32)
    return [
        QuantMap("chi", chi, "ppm", CHI_RANGE, f"magnetic susceptibility ({method}, after V-SHARP)"),
        QuantMap("local_field", local, "ppm", (-0.05, 0.05), "local field after V-SHARP background removal"),
    ]


def qsm_specs(weights: str | Path | None = None) -> tuple[TaskSpec, TaskSpec]:
    """The ``qsm`` and ``qsm_raw`` tasks; with ``weights`` QSMnet is their default method.

    The weights are reloaded whenever the file changes, so a model published by the trainer is
    used by the next request without a restart.
    """
    net = ReloadingWeights(weights, load_qsmnet, "QSMnet") if weights else None
    methods = METHODS if net else CLASSICAL
    qsm = TaskSpec(
        name="qsm",
        description="Magnetic susceptibility (ppm) from a local field map (ppm of B0, 0 outside the brain)",
        inputs={"image": "3D local field (ppm), 0 outside the brain mask", "sidecar": "B0_dir (B0 direction in array axes)"},
        outputs={"chi": {"units": "ppm", "display_range": list(CHI_RANGE)}},
        methods=methods,
        default_method=methods[0],
        run=lambda image, affine, sidecar, method: run_qsm(image, affine, sidecar, method, net),
        required_sidecar=("B0_dir",),
    )
    raw = TaskSpec(
        name="qsm_raw",
        description="Magnetic susceptibility (ppm) from raw multi-echo GRE: echo fit with unwrapping, V-SHARP, dipole inversion",
        inputs={"image": "4D: E magnitudes, E wrapped phases (rad), brain mask; channels last", "sidecar": "echo_times_ms, B0_dir, B0_T (default 3)"},
        outputs={"chi": {"units": "ppm", "display_range": list(CHI_RANGE)}, "local_field": {"units": "ppm", "display_range": [-0.05, 0.05]}},
        methods=methods,
        default_method=methods[0],
        run=lambda image, affine, sidecar, method: run_qsm_raw(image, affine, sidecar, method, net),
        required_sidecar=("echo_times_ms", "B0_dir"),
    )
    return qsm, raw
