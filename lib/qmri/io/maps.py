"""Quantitative result maps: float32 NIfTI with the input's geometry plus a JSON with units.

Every infer task of the server returns its maps through :func:`write_maps`, so a client always
gets float32 values in physical units on exactly the grid (shape and affine) of the input it sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .study import save_nifti


@dataclass(frozen=True)
class QuantMap:
    """One named map.

    Attributes:
        name: short name, e.g. ``"OEF"`` or ``"chi"``.
        data: 3D array on the input grid.
        units: physical units, e.g. ``"%"``, ``"ppm"``, ``"HU"``, ``"1/s"``.
        display_range: recommended (low, high) window in ``units``.
        description: one line for people.
    """

    name: str
    data: np.ndarray
    units: str
    display_range: tuple[float, float]
    description: str = ""


def check_geometry(maps: list[QuantMap], shape: tuple[int, ...]) -> None:
    for m in maps:
        if tuple(m.data.shape) != tuple(shape):
            raise ValueError(f"map {m.name} has shape {tuple(m.data.shape)}, input grid is {tuple(shape)}")
        if not np.all(np.isfinite(m.data)):
            raise ValueError(f"map {m.name} contains non-finite values")


def write_maps(maps: list[QuantMap], affine: np.ndarray, shape: tuple[int, ...], path: str | Path) -> tuple[Path, dict]:
    """Write the maps to ``path`` and describe them.

    One map is written as a 3D float32 NIfTI, several as one 4D float32 NIfTI with the maps as
    channels (last axis) in the listed order. Returns the file and the result JSON: ``maps`` (name,
    units, display range, description and channel of each map), shape, affine, dtype.
    """
    check_geometry(maps, shape)
    info = [
        {
            "name": m.name,
            "units": m.units,
            "display_range": [float(m.display_range[0]), float(m.display_range[1])],
            "description": m.description,
            "channel": i,
        }
        for i, m in enumerate(maps)
    ]
    data = maps[0].data if len(maps) == 1 else np.stack([m.data for m in maps], axis=-1)
    path = save_nifti(data.astype(np.float32), affine, path)
    return path, {"maps": info, "shape": list(shape), "affine": np.asarray(affine).tolist(), "dtype": "float32"}


def requested_names(available: list[str], names: str | list[str] | None) -> list[str]:
    """The map names a request asks for (one name or a list; all if None), checked against ``available``."""
    if names is None:
        return list(available)
    wanted = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise ValueError(f"unknown map(s) {unknown}; this task returns {list(available)}")
    return wanted


def select_maps(maps: list[QuantMap], names: str | list[str] | None) -> list[QuantMap]:
    """The maps named in ``names`` (one name or a list), in that order; all maps if None."""
    by_name = {m.name: m for m in maps}
    return [by_name[n] for n in requested_names(list(by_name), names)]
