"""Classical QSM: phase unwrapping, echo fitting, background removal and dipole inversion.

Pipeline (shared/REFERENCE.md section 2)::

    wrapped multi-echo phase --laplacian_unwrap / echo_fit_total_field--> total field (ppm)
        --vsharp--> local field (ppm) in an eroded brain mask
        --tkd | closed_form_l2 | tv_inversion | masked_cg--> susceptibility (ppm)

All heavy maths is torch (CPU or GPU, following the input tensor's device or ``device=``);
numpy in gives numpy out. Fields are in ppm of B0, susceptibility in ppm, voxel sizes in mm,
echo times in ms, B0 in tesla. A QSM map is defined up to a constant (D(0) = 0): compare maps
after referencing (:func:`nrmse` subtracts the mask mean by default).

Why hand-written: torch, MONAI and scipy ship no dipole inversion, no Laplacian/least-squares
phase unwrapping with a mask, no SMV/V-SHARP background removal and no QSM TV-ADMM; the
pieces are short and written on ``torch.fft`` so that they run on the GPU. (scikit-image's
``unwrap_phase`` is a CPU-only path-following unwrapper and not a declared dependency.)
"""

from __future__ import annotations

from collections.abc import Sequence

from ..metrics.maps import nrmse
from .qsm_inversion import closed_form_l2, field_noise_ppm, magnitude_edge_weights, masked_cg, tkd, tv_inversion
from .qsm_phase import echo_fit_total_field, laplacian_unwrap, sphere_kernel, vsharp

__all__ = [
    "nrmse",
    "tkd",
    "closed_form_l2",
    "tv_inversion",
    "masked_cg",
    "field_noise_ppm",
    "magnitude_edge_weights",
    "laplacian_unwrap",
    "echo_fit_total_field",
    "sphere_kernel",
    "vsharp",
    "qsm_from_gre",
]


def qsm_from_gre(
    magnitude,
    phase,
    mask,
    te_ms: Sequence[float],
    voxel_size: float | Sequence[float],
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    B0_T: float = 3.0,
    method: str = "l2",
    radii_mm: Sequence[float] = (12.0, 10.0, 8.0, 6.0, 4.0),
    device=None,
    **inversion_kwargs,
) -> dict:
    """Raw multi-echo GRE -> QSM: echo fit (with unwrapping) -> V-SHARP -> dipole inversion.

    Args:
        magnitude, phase: (X, Y, Z, n_echo), phase wrapped (rad). mask: brain mask.
        te_ms: echo times (ms). voxel_size: mm. b0_dir: B0 in array axes. B0_T: tesla.
        method: "l2" (closed form), "tkd" or "tv" (magnitude-edge-weighted TV-ADMM).
        radii_mm: V-SHARP radii (mm). inversion_kwargs: passed to the inversion.
    Returns:
        dict with ``chi`` (ppm), ``local_field`` (ppm), ``total_field`` (ppm), ``mask`` (eroded).
    """
    total = echo_fit_total_field(magnitude, phase, te_ms, B0_T, mask=mask, voxel_size=voxel_size, device=device)
    local, emask = vsharp(total, mask, voxel_size, radii_mm=radii_mm, device=device)
    if method == "l2":
        chi = closed_form_l2(local, emask, voxel_size, b0_dir, device=device, **inversion_kwargs)
    elif method == "tkd":
        chi = tkd(local, emask, voxel_size, b0_dir, device=device, **inversion_kwargs)
    elif method == "tv":
        mag0 = magnitude[..., 0]
        chi = tv_inversion(local, emask, voxel_size, b0_dir, magnitude=mag0, device=device, **inversion_kwargs)
    else:
        raise ValueError("method must be 'l2', 'tkd' or 'tv'")
    return {"chi": chi, "local_field": local, "total_field": total, "mask": emask}
