"""What a task is: its inputs, outputs (units, display range), methods, and the function that runs it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..io.maps import QuantMap
from ..io.nifti_input import check_affine

RunFn = Callable[[np.ndarray, np.ndarray, dict[str, Any], str], list[QuantMap]]


@dataclass(frozen=True)
class TaskSpec:
    """One task of the product.

    Attributes:
        name: infer task name on the server (e.g. ``"qsm"``).
        description: one line for people.
        inputs: input name -> what it must be (array layout, units, sidecar keys).
        outputs: map name -> {"units": str, "display_range": [lo, hi]}.
        methods: selectable methods; ``default_method`` is used when a request names none.
        required_sidecar: sidecar keys without which the task refuses to run.
        bytes_per_voxel: peak memory of the task's most demanding method per voxel of the input
            grid (a 4D input's channels included), in bytes: ``qmri bench memory`` measures it
            (``bench-results/bench_memory.md``) and the task modules round it up by about a quarter;
            a server refuses inputs whose estimate exceeds its memory budget before any work.
            0: not measured.
        run: ``run(image, affine, sidecar, method) -> [QuantMap, ...]``; raises ValueError naming
            the problem for bad input.
    """

    name: str
    description: str
    inputs: dict[str, str]
    outputs: dict[str, dict[str, Any]]
    methods: tuple[str, ...]
    default_method: str
    run: RunFn
    required_sidecar: tuple[str, ...] = field(default_factory=tuple)
    bytes_per_voxel: float = 0.0


#: Voxel sizes (mm) the tasks accept: head images from 0.1 mm (high-resolution MR) to 20 mm (thick
#: slices). Smaller values are usually metres or micrometres mistaken for mm, and would make the
#: kernels in voxels (V-SHARP spheres, PSFs) enormous.
VOXEL_SIZE_RANGE_MM = (0.1, 20.0)


def voxel_size(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) per array axis from the affine's column norms; ValueError for a non-finite
    or singular affine (see :func:`qmri.io.nifti_input.check_affine`) or a voxel size outside
    :data:`VOXEL_SIZE_RANGE_MM`."""
    vs = check_affine(affine)
    lo, hi = VOXEL_SIZE_RANGE_MM
    if not all(lo <= v <= hi for v in vs):
        raise ValueError(f"voxel sizes {[round(v, 6) for v in vs]} mm (from the affine) are outside {lo:g}..{hi:g} mm: is the affine in metres or micrometres instead of mm?")
    return vs


def real_volume(image: np.ndarray, what: str) -> np.ndarray:
    """``image`` as a floating-point array (float32 unless it is float64): refuses complex and
    non-numeric arrays, empty arrays and NaN/Inf values with ValueError naming ``what``."""
    a = np.asarray(image)
    if a.dtype.kind == "c":
        raise ValueError(f"{what} is complex-valued ({a.dtype.name}): send real values (magnitude, phase in rad) as channels")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} must hold real numbers, got data type {a.dtype}")
    if a.size == 0:
        raise ValueError(f"{what} is empty (shape {tuple(a.shape)})")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    finite = np.isfinite(a)
    if not finite.all():
        raise ValueError(f"{what} contains {int(a.size - np.count_nonzero(finite))} NaN/Inf voxels")
    return a


def require_3d(image: np.ndarray, what: str) -> np.ndarray:
    """``image`` as a 3D real volume (a 4D array with one channel is squeezed); see :func:`real_volume`."""
    image = np.asarray(image)
    if image.ndim == 4 and image.shape[3] == 1:
        image = image[..., 0]
    if image.ndim != 3:
        raise ValueError(f"{what} must be a 3D volume, got an array of shape {tuple(image.shape)}")
    return real_volume(image, what)


def require_channels(image: np.ndarray, n: int, what: str) -> np.ndarray:
    """``image`` as a 4D real volume with ``n`` channels last; see :func:`real_volume`."""
    image = np.asarray(image)
    if image.ndim != 4:
        raise ValueError(f"{what} must be a 4D volume with {n} channels last, got a {image.ndim}D array of shape {tuple(image.shape)}")
    if image.shape[3] != n:
        raise ValueError(f"{what} must have {n} channels, got {image.shape[3]}")
    return real_volume(image, what)
