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


def write_maps(maps: list[QuantMap], affine: np.ndarray, shape: tuple[int, ...], out_dir: str | Path, stem: str) -> tuple[Path, dict]:
    """Write the maps and describe them.

    One map is written as a 3D float32 NIfTI. Several maps are written both as one 4D float32 NIfTI
    (channels last, in the listed order: the file the REST call returns) and as one 3D NIfTI per
    map, so that each can be loaded on its own. Returns the primary file and the result JSON
    (``maps``: name, units, display range, description, channel index and file of each map).
    """
    check_geometry(maps, shape)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = []
    for i, m in enumerate(maps):
        f = out_dir / f"{stem}_{m.name}.nii.gz"
        if len(maps) > 1:
            save_nifti(m.data.astype(np.float32), affine, f)
        info.append(
            {
                "name": m.name,
                "units": m.units,
                "display_range": [float(m.display_range[0]), float(m.display_range[1])],
                "description": m.description,
                "channel": i,
                "file": str(f) if len(maps) > 1 else None,
            }
        )
    if len(maps) == 1:
        primary = save_nifti(maps[0].data.astype(np.float32), affine, out_dir / f"{stem}_{maps[0].name}.nii.gz")
        info[0]["file"] = str(primary)
    else:
        primary = save_nifti(np.stack([m.data for m in maps], axis=-1).astype(np.float32), affine, out_dir / f"{stem}_maps.nii.gz")
    return primary, {"maps": info, "shape": list(shape), "affine": np.asarray(affine).tolist(), "dtype": "float32"}
