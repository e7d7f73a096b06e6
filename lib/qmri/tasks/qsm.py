"""QSM: susceptibility (ppm) from a local field map, or from raw multi-echo magnitude + phase."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..classical import qsm as cq
from ..classical.bounding_box import mask_box, paste
from ..io import sidecar_values as sv
from ..io.display import display, slot
from ..io.maps import QuantMap
from ..io.sidecar_values import echo_times_s
from ..networks import compute
from ..models.qsmnet.predict import load_qsmnet, predict_chi
from ..networks.weights import ReloadingWeights
from ..physics.dipole import GAMMA_BAR_MHZ_PER_T
from .spec import TaskSpec, check_brain_extent, real_volume, require_3d, voxel_size

CLASSICAL = ("l2", "tkd", "tv", "cg")
# qsmnet: network + support-constrained data consistency; qsmnet_direct: the network output alone
METHODS = ("qsmnet", "qsmnet_direct") + CLASSICAL
CHI_RANGE = (-0.2, 0.2)

VSHARP_MIN_RADIUS_MM = 4.0  # smallest sphere of cq.vsharp's default radii
#: The raw path runs on the mask's bounding box grown by this much (mm): V-SHARP's largest sphere
#: (12 mm) and a margin for the FFT-based unwrapping and deconvolution.
RAW_BOX_MARGIN_MM = 16.0

# Unit check of a local field map (ppm of B0) on the 99th percentile of |field| inside the mask
# (ppm does not depend on B0, so neither does the limit; B0_T only converts to Hz in the message).
# Brain tissue chi is -0.03..0.35 ppm and local fields are mostly < 0.1 ppm. Measured: the phantom
# fields (both sample studies; 5 subjects at 2 mm with haemorrhage, calcification and infarct, B0
# tilted 0, 25 and 45 deg) have a 99th percentile of 0.12-0.127 ppm (maxima up to 1.46 ppm next to
# lesions, which the percentile ignores); an ellipsoid brain with a 16 mm-radius haematoma of
# +1.4 ppm (3.5 % of the brain) 0.35 ppm. The same fields in Hz at 3 T (x 127.7) give ~15 Hz and as
# phase in rad at TE = 20 ms, 3 T (x 16.0) ~1.9 rad: both far above the limit. A field in Hz is
# caught down to B0 ~ 0.2 T; a phase in rad at 3 T for TE >~ 10 ms (a shorter TE can pass).
FIELD_P99_MAX_PPM = 1.0
# Below this the values are not ppm either (a field in tesla or as a fraction is ~1e-6 of ppm).
FIELD_P99_MIN_PPM = 1e-4


def b0_direction(sidecar: dict[str, Any]) -> tuple[float, float, float]:
    """The sidecar's ``B0_dir`` as a unit vector in the image's array axes."""
    return sv.direction(sidecar, "B0_dir")


def check_local_field_ppm(field: np.ndarray, mask: np.ndarray, b0_t: float) -> None:
    """Refuse a local field map that is not in ppm of B0 (Hz, rad, tesla) or is constant.

    Args:
        field: local field values; ``mask`` (bool, same shape) marks the brain voxels.
        b0_t: main field strength (T), only used to say what 1 ppm is in Hz.
    """
    vals = np.asarray(field[mask], dtype=np.float64)
    p99 = float(np.percentile(np.abs(vals), 99))
    hz_per_ppm = GAMMA_BAR_MHZ_PER_T * b0_t
    if p99 > FIELD_P99_MAX_PPM:
        raise ValueError(
            f"the local field does not look like ppm of B0: 99% of the brain voxels have |field| up to {p99:.3g}, "
            f"while a brain local field in ppm stays within a few tenths of a ppm (accepted: 99th percentile <= {FIELD_P99_MAX_PPM:g} ppm). "
            f"Is it in Hz (at B0_T = {b0_t:g} T, 1 ppm = {hz_per_ppm:.4g} Hz: divide by {hz_per_ppm:.4g}) "
            f"or in radians of phase (divide by 2 pi x {hz_per_ppm:.4g} Hz/ppm x TE in s)?"
        )
    if p99 < FIELD_P99_MIN_PPM:
        raise ValueError(
            f"the local field does not look like ppm of B0: 99% of the brain voxels have |field| below {p99:.3g}, "
            f"while a brain local field in ppm reaches ~0.1 ppm (accepted: 99th percentile >= {FIELD_P99_MIN_PPM:g} ppm). "
            "Is it in tesla or a fraction of B0 (multiply by 1e6 / B0 for ppm)?"
        )
    lo, hi = np.percentile(vals, [5, 95])
    if hi - lo <= 1e-3 * p99:
        raise ValueError(f"the local field is constant ({float(np.median(vals)):.4g}) in at least 90% of its non-zero voxels: send a local field map (ppm), not a mask or a constant")


def _invert(field, mask, vs, b0, method, magnitude=None, net: ReloadingWeights | None = None):
    if method in ("qsmnet", "qsmnet_direct"):
        if net is None:
            raise ValueError(f"method '{method}' is not available on this server (no weights configured)")
        model, _ = net.get()
        return predict_chi(model, field, mask, vs, b0, device=compute.device(), refine_iterations=None if method == "qsmnet" else 0)
    if method == "tkd":
        return cq.tkd(field, mask, vs, b0)
    if method == "l2":
        return cq.closed_form_l2(field, mask, vs, b0)
    if method == "tv":
        return cq.tv_inversion(field, mask, vs, b0, magnitude=magnitude)
    if method == "cg":
        return cq.masked_cg(field, mask, vs, b0, device=compute.device())
    raise ValueError(f"unknown method '{method}'; choose from {', '.join(METHODS)}")


def run_qsm(image: np.ndarray, affine: np.ndarray, sidecar: dict[str, Any], method: str, net: ReloadingWeights | None = None) -> list[QuantMap]:
    field = require_3d(image, "the local field map (ppm)")
    b0 = b0_direction(sidecar)
    b0_t = sv.field_strength_t(sidecar)
    sv.expect_units(sidecar, ("ppm",), "the local field")
    vs = voxel_size(affine)
    mask = field != 0
    if mask.sum() < 27:
        raise ValueError("the local field is zero almost everywhere: it must be non-zero inside the brain mask")
    check_local_field_ppm(field, mask, b0_t)
    check_brain_extent(mask, vs, "the local field's non-zero region (the brain mask)")
    chi = np.where(mask, np.asarray(_invert(field, mask, vs, b0, method, net=net)), 0.0)
    return [QuantMap("chi", chi.astype(np.float32), "ppm", CHI_RANGE, f"magnetic susceptibility ({method})")]


def run_qsm_raw(image: np.ndarray, affine: np.ndarray, sidecar: dict[str, Any], method: str, net: ReloadingWeights | None = None) -> list[QuantMap]:
    te_ms = 1000.0 * echo_times_s(sidecar)
    n = len(te_ms)
    if np.ndim(image) != 4 or np.shape(image)[3] != 2 * n + 1:
        raise ValueError(f"the raw QSM input must be 4D with {2 * n + 1} channels ({n} magnitudes, {n} phases in rad from the sidecar's {n} echo_times_ms, then the brain mask); got shape {tuple(np.shape(image))}")
    image = real_volume(image, "the raw QSM input")
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}'; choose from {', '.join(METHODS if net else CLASSICAL)}")
    sv.expect_units(sidecar, ("rad", "radian", "radians"), f"the phase channels ({n + 1}..{2 * n})", channel=n)
    b0 = b0_direction(sidecar)
    b0_t = sv.field_strength_t(sidecar)
    vs = voxel_size(affine)
    mag, phase, mask = image[..., :n], image[..., n : 2 * n], image[..., 2 * n] > 0.5
    if mask.sum() < 27:
        raise ValueError("the brain mask channel (last) is empty")
    check_brain_extent(mask, vs, "the brain mask channel (last)")
    if np.abs(phase[mask]).max() > np.pi + 1e-3:
        raise ValueError("phase channels must be wrapped phase in radians (-pi..pi)")
    if np.any(mag < 0):
        raise ValueError("the echo magnitudes (first channels) must be non-negative (magnitude images, not real parts)")
    # the brain's box (plus V-SHARP's largest sphere and a little): a clinical matrix is mostly air
    box = mask_box(mask, int(np.ceil(RAW_BOX_MARGIN_MM / min(vs))))
    full = mask.shape
    if box is not None:
        mag, phase, mask = mag[box], phase[box], mask[box]
    total = cq.echo_fit_total_field(mag, phase, te_ms, b0_t, mask=mask, voxel_size=vs)
    local, m = cq.vsharp(total, mask, vs)
    local, m = np.asarray(local), np.asarray(m, dtype=bool)
    if m.sum() < 27:
        raise ValueError(f"the brain mask keeps {int(m.sum())} voxels after V-SHARP's erosion (sphere radius {VSHARP_MIN_RADIUS_MM:g} mm at voxel sizes {[round(v, 3) for v in vs]} mm): send a whole-brain mask")
    chi = np.asarray(_invert(local, m, vs, b0, method, magnitude=mag[..., 0], net=net))
    chi = np.where(m, chi, 0.0).astype(np.float32)
    local = np.where(m, local, 0.0).astype(np.float32)
    if box is not None:
        chi, local = paste(chi, box, full), paste(local, box, full)
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
        inputs={"image": "3D local field (ppm), 0 outside the brain mask", "sidecar": "B0_dir (B0 direction in array axes)", "slots": [slot("field", "Local field map (ppm, 0 outside the brain)")]},
        outputs={"chi": {"units": "ppm", "display_range": list(CHI_RANGE), "display": display("diverging", "chi (ppm)")}},
        methods=methods,
        default_method=methods[0],
        run=lambda image, affine, sidecar, method: run_qsm(image, affine, sidecar, method, net),
        required_sidecar=("B0_dir",),
        bytes_per_voxel=1000,  # qmri bench memory, two runs: QSMnet 730-759, TV 530-666
        # QSMnet: 484 MiB growth at 2 mm (0.7 M voxels), 3.5 GiB on a 1 mm 256x256x200 field non-zero
        # everywhere (13.1 M; brain box, windows): fixed + slope, rounded up by a quarter
        memory={m: (400.0, 300.0) for m in ("qsmnet", "qsmnet_direct")} if net else {},
        networks=(net,) if net else (),
    )
    raw = TaskSpec(
        name="qsm_raw",
        description="Magnetic susceptibility (ppm) from raw multi-echo GRE: echo fit with unwrapping, V-SHARP, dipole inversion",
        inputs={
            "image": "4D: E magnitudes, E wrapped phases (rad), brain mask; channels last",
            "sidecar": "echo_times_ms, B0_dir, B0_T (default 3)",
            "slots": [slot("magnitudes", "Multi-echo magnitudes (multi-volume or sequence, E echoes)"), slot("phases", "Multi-echo wrapped phases (rad; multi-volume or sequence)"), slot("mask", "Brain mask (0/1)")],
        },
        outputs={"chi": {"units": "ppm", "display_range": list(CHI_RANGE), "display": display("diverging", "chi (ppm)")}, "local_field": {"units": "ppm", "display_range": [-0.05, 0.05], "display": display("diverging", "local field (ppm)")}},
        methods=methods,
        default_method=methods[0],
        run=lambda image, affine, sidecar, method: run_qsm_raw(image, affine, sidecar, method, net),
        required_sidecar=("echo_times_ms", "B0_dir"),
        bytes_per_voxel=1200,  # qmri bench memory, two runs: QSMnet after V-SHARP 886-935 (8 echoes + mask)
        # QSMnet: 620 MiB growth at 2 mm, about 3.0 GiB on the 1 mm 256x256x200 sample (brain box, slabs)
        memory={m: (500.0, 300.0) for m in ("qsmnet", "qsmnet_direct")} if net else {},
        networks=(net,) if net else (),
    )
    return qsm, raw
