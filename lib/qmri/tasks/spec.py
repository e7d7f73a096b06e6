"""What a task is: its inputs, outputs (units, display range), methods, and the function that runs it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..io.maps import QuantMap
from ..io.study import voxel_size_mm as voxel_size  # noqa: F401  (re-exported for the task modules)

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


def require_3d(image: np.ndarray, what: str) -> np.ndarray:
    if image.ndim == 4 and image.shape[3] == 1:
        image = image[..., 0]
    if image.ndim != 3:
        raise ValueError(f"{what} must be a 3D volume, got an array of shape {tuple(image.shape)}")
    return image


def require_channels(image: np.ndarray, n: int, what: str) -> np.ndarray:
    if image.ndim != 4:
        raise ValueError(f"{what} must be a 4D volume with {n} channels last, got a {image.ndim}D array of shape {tuple(image.shape)}")
    if image.shape[3] != n:
        raise ValueError(f"{what} must have {n} channels, got {image.shape[3]}")
    return image
