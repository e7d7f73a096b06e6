"""OEF and the five QQ parameters from multi-echo GRE magnitude + QSM (classical voxelwise QQ fit)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..classical.qq_fit import fit_qq
from ..io.maps import QuantMap
from .spec import TaskSpec, require_channels

OUTPUTS = {
    "OEF": ("%", (0.0, 80.0), "oxygen extraction fraction"),
    "S0": ("a.u.", None, "signal at TE = 0"),
    "R2": ("1/s", (0.0, 40.0), "tissue transverse relaxation rate"),
    "Y": ("fraction", (0.0, 1.0), "venous oxygenation"),
    "v": ("fraction", (0.0, 0.1), "venous blood volume fraction"),
    "chi_nb": ("ppm", (-0.2, 0.2), "non-blood susceptibility"),
}


def echo_times_s(sidecar: dict[str, Any]) -> np.ndarray:
    te = sidecar.get("echo_times_ms")
    if not isinstance(te, (list, tuple)) or len(te) < 3:
        raise ValueError(f"sidecar echo_times_ms must list at least 3 echo times in ms, got {te!r}")
    te = np.asarray(te, dtype=np.float64)
    if np.any(te <= 0) or np.any(np.diff(te) <= 0):
        raise ValueError(f"echo_times_ms must be positive and increasing, got {te.tolist()}")
    if te[-1] > 200 or te[-1] < 1:
        raise ValueError(f"echo_times_ms {te.tolist()} are not plausible GRE echo times in ms")
    return te / 1000.0


def split_oef_input(image: np.ndarray, sidecar: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Echo magnitudes (x,y,z,E), QSM (ppm), brain mask (QSM != 0) and echo times (s)."""
    te = echo_times_s(sidecar)
    n = len(te)
    require_channels(image, n + 1, f"the OEF input ({n} echo magnitudes from the sidecar's echo_times_ms + 1 QSM)")
    mag, chi = image[..., :n], image[..., n]
    mask = (chi != 0) & (mag[..., 0] > 0)
    if not mask.any():
        raise ValueError("no brain voxels: the QSM channel (last) must be non-zero inside the brain mask")
    if np.any(mag < 0):
        raise ValueError("echo magnitudes must be non-negative (magnitude images, not phase or real parts)")
    return mag, chi, mask, te


def run_oef(image: np.ndarray, affine: np.ndarray, sidecar: dict[str, Any], method: str) -> list[QuantMap]:
    if method != "qq_fit":
        raise ValueError(f"unknown method '{method}' for oef")
    mag, chi, mask, te = split_oef_input(image, sidecar)
    r = fit_qq(mag, chi, te, mask, B0=float(sidecar.get("B0_T", 3.0)), device="cpu")
    values = {"OEF": 100.0 * r["OEF"], "S0": r["S0"], "R2": r["R2"], "Y": r["Y"], "v": r["v"], "chi_nb": r["chi_nb"]}
    maps = []
    for name, (units, rng, desc) in OUTPUTS.items():
        data = np.where(mask, values[name], 0.0).astype(np.float32)
        if rng is None:
            rng = (0.0, float(np.percentile(data[mask], 99)))
        maps.append(QuantMap(name, data, units, rng, desc))
    return maps


OEF = TaskSpec(
    name="oef",
    description="Oxygen extraction fraction (%) and the QQ parameters S0, R2, Y, v, chi_nb from multi-echo GRE magnitude + QSM",
    inputs={"image": "4D: E echo magnitudes then the QSM map (ppm, 0 outside the brain), channels last", "sidecar": "echo_times_ms (E values, ms); B0_T (default 3)"},
    outputs={k: {"units": u, "display_range": list(r) if r else "0 to the 99th percentile", "description": d} for k, (u, r, d) in OUTPUTS.items()},
    methods=("qq_fit",),
    default_method="qq_fit",
    run=run_oef,
    required_sidecar=("echo_times_ms",),
)
