"""How a result map should be shown, and which input volumes a task takes: the hints every client
reads from ``/info`` (and each result's JSON), so that no client keeps its own copy.

A map's display hint (``outputs[name]["display"]``):

- ``colormap``: ``rainbow`` (low violet/blue to high red: OEF, R2, Y, v), ``diverging`` (blue-white-red
  about 0: susceptibility), ``heat`` (PET, uncertainty) or ``grey`` (images: S0, synthetic CT/MR);
- ``threshold``: values at or below it (in the map's units) are transparent so the anatomy shows
  through outside the brain; ``None`` for signed maps (their zeros are hidden by the colour map);
- ``windows``: extra named (low, high) windows in the map's units, e.g. a CT's brain and bone windows;
- ``percentile``: when the main window is "0 to this percentile of the map" (S0, PET, sMR);
- ``blend``: False for grey images a user compares with the anatomy rather than overlays on it;
- ``interpolate``: smooth in slice views (images) or not (quantitative maps: each pixel is a value
  the server computed);
- ``legend``: the colour legend's title, units included, short enough to fit a legend.

An input slot (``inputs["slots"]``): ``key``, ``label`` (what to pick, units included) and
``optional``; the slots' volumes are stacked in order into the task's channels-last image.
"""

from __future__ import annotations

from typing import Any, Mapping

COLORMAPS = ("rainbow", "diverging", "heat", "grey")


def display(colormap: str, legend: str, threshold: float | None = None, windows: Mapping[str, tuple[float, float]] | None = None, percentile: float | None = None, blend: bool = True, interpolate: bool = False) -> dict[str, Any]:
    """A map's display hint (JSON-able); ValueError for an unknown colour map or an empty window."""
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colour map '{colormap}'; choose from {', '.join(COLORMAPS)}")
    for name, (lo, hi) in (windows or {}).items():
        if not hi > lo:
            raise ValueError(f"window '{name}' ({lo}, {hi}) is empty")
    return {
        "colormap": colormap,
        "legend": legend,
        "threshold": None if threshold is None else float(threshold),
        "windows": {k: [float(lo), float(hi)] for k, (lo, hi) in (windows or {}).items()},
        "percentile": None if percentile is None else float(percentile),
        "blend": bool(blend),
        "interpolate": bool(interpolate),
    }


def slot(key: str, label: str, optional: bool = False) -> dict[str, Any]:
    """One input volume a task takes (see the module docstring)."""
    return {"key": key, "label": label, "optional": bool(optional)}
