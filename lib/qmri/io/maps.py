"""Quantitative result maps: float32 NIfTI with the input's geometry plus a JSON with units.

Every infer task of the server returns its maps through :func:`write_maps`, so a client always
gets float32 values in physical units on exactly the grid (shape and affine) of the input it sent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .sidecar_values import show
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
    # units in the file itself (Slicer, ITK-SNAP and fslhd show descrip; intent_name: the units of a
    # single map): "qmri: chi [ppm]", "qmri: OEF [%]; S0 [a.u.]; ..."
    descrip = "qmri: " + "; ".join(f"{m.name} [{m.units}]" for m in maps)
    path = save_nifti(data.astype(np.float32), affine, path, descrip=descrip, intent_name=maps[0].units if len(maps) == 1 else "see descrip")
    return path, {"maps": info, "shape": list(shape), "affine": np.asarray(affine).tolist(), "dtype": "float32"}


def requested_names(available: list[str], names: str | list[str] | None) -> list[str]:
    """The map names a request's ``map`` parameter asks for, checked against ``available``.

    ``names`` is one name, a non-empty list of distinct names, or None (all maps). Anything else
    (a number, an object, an empty list, a list holding a non-string or a name twice) raises
    ValueError naming ``map`` and the available names.
    """
    if names is None:
        return list(available)
    choose = f"give one name or a list of names from {list(available)}"
    if isinstance(names, str):
        wanted = [names]
    elif isinstance(names, (list, tuple)):
        wanted = list(names)
        if not wanted:
            raise ValueError(f"request parameter 'map' is an empty list: {choose}")
        odd = [n for n in wanted if not isinstance(n, str)]
        if odd:
            raise ValueError(f"request parameter 'map' must hold map names (strings), got {show(odd)}; {choose}")
        twice = sorted(n for n, k in Counter(wanted).items() if k > 1)
        if twice:
            raise ValueError(f"request parameter 'map' names {twice} more than once; {choose}")
    else:
        raise ValueError(f"request parameter 'map' must be a map name or a list of names, got {show(names)}; {choose}")
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise ValueError(f"unknown map(s) {show(unknown)}; this task returns {list(available)}")
    return wanted


def select_maps(maps: list[QuantMap], names: str | list[str] | None) -> list[QuantMap]:
    """The maps named in ``names`` (one name or a list), in that order; all maps if None."""
    by_name = {m.name: m for m in maps}
    return [by_name[n] for n in requested_names(list(by_name), names)]
