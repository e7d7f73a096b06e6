"""Display presets for the maps the qmri server returns (Slicer-free: plain Python).

The server is the one source of how each map is shown and which volumes a task takes: every map in
``/info`` outputs and in each result's JSON carries a ``display`` hint (colour map, threshold,
windows, legend title; see the server's ``qmri.io.display``) and every task's ``inputs["slots"]``
lists the volumes to pick. This module only translates those hints into Slicer terms: a colour map
name into MRML colour node IDs (the first one present in the scene wins), a percentile window into
numbers. A map without a hint (an older or foreign server) is shown in grey over its
``display_range``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

# Built-in Slicer colour nodes (present in every Slicer and in slicer-core after
# vtkMRMLColorLogic.AddDefaultColorNodes()).
GREY = "vtkMRMLColorTableNodeGrey"
RAINBOW = "vtkMRMLColorTableNodeRainbow"
FULL_RAINBOW = "vtkMRMLColorTableNodeFullRainbow"
# Slicer's "Rainbow" runs red (low) -> violet (high); "FullRainbow" spans the whole hue circle (0 and
# the maximum are both red) and "ReverseRainbow" only hues 0.8..1 (magenta -> red). OEF-like maps are
# usually shown blue/violet (low) -> red (high): Slicer's Rainbow reversed, created by
# scene.MapSceneLogic as "qmri RainbowReversed"; Slicer's Rainbow is the fallback.
PET_HEAT = "vtkMRMLPETProceduralColorNodePET-Heat"
# File-based table shipped with the Slicer application (not in slicer-core); its centre is opaque
# white, so ours (transparent about 0) comes first.
SLICER_DIVERGING = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
# Our own tables, created by scene.MapSceneLogic on demand.
QMRI_DIVERGING = "qmri:DivergingBlueRed"
QMRI_RAINBOW = "qmri:RainbowReversed"

#: The server's colour map names (``qmri.io.display.COLORMAPS``) -> colour node IDs by preference.
COLOUR_NODES = {
    "rainbow": (QMRI_RAINBOW, RAINBOW),
    "diverging": (QMRI_DIVERGING, SLICER_DIVERGING, GREY),
    "heat": (PET_HEAT, GREY),
    "grey": (GREY,),
}


@dataclass(frozen=True)
class Preset:
    """How to show one map.

    Attributes:
        colour_nodes: colour node IDs in order of preference.
        window: (low, high) display range in ``units``.
        threshold: values below this (in ``units``) are transparent; None shows every voxel.
        units: physical units of the map ("%", "ppm", "HU", "SUV", "1/s", "a.u.").
        legend_title: title of the colour legend, units included.
        windows: extra named windows, e.g. {"brain": (0, 80), "bone": (-600, 1400)} in HU.
        interpolate: linear interpolation in slice views. Off for quantitative maps: each pixel then
            shows a value the server computed, and no interpolated rim appears at the brain edge.
        percentile: the main window is 0 to this percentile of the map's shown values (None: ``window``).
        blend: shown over the anatomy (True) or as an image to compare with it (False: grey images).
    """

    colour_nodes: tuple[str, ...]
    window: tuple[float, float]
    threshold: float | None
    units: str
    legend_title: str
    windows: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    interpolate: bool = False
    percentile: float | None = None
    blend: bool = True

    def window_named(self, name: str | None) -> tuple[float, float]:
        """The window called ``name`` ("default" or None: the main window)."""
        if name in (None, "", "default"):
            return self.window
        if name not in self.windows:
            raise KeyError(f"no window '{name}' for {self.legend_title}; choose from default, {', '.join(self.windows)}")
        return self.windows[name]


def _title(name: str, units: str) -> str:
    return f"{name} ({units})" if units else name


def _range_from(value: Any) -> tuple[float, float] | None:
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        try:
            lo, hi = float(value[0]), float(value[1])
        except (TypeError, ValueError):
            return None
        return (lo, hi) if hi > lo else None
    return None


def preset_for(map_info: Mapping[str, Any] | None, name: str = "map") -> Preset:
    """The preset of one map from its entry in a result's JSON or ``/info`` outputs (``units``,
    ``display_range``, ``display``); ``name`` titles the legend when the entry has no hint."""
    info = dict(map_info or {})
    name = str(info.get("name", name))
    units = str(info.get("units", ""))
    window = _range_from(info.get("display_range"))
    hint = info.get("display") if isinstance(info.get("display"), Mapping) else None
    if hint is None:
        return Preset((GREY,), window or (0.0, 1.0), None, units, _title(name, units))
    threshold = hint.get("threshold")
    windows = {str(k): r for k, r in ((k, _range_from(v)) for k, v in dict(hint.get("windows") or {}).items()) if r is not None}
    percentile = hint.get("percentile")
    return Preset(
        colour_nodes=COLOUR_NODES.get(str(hint.get("colormap")), (GREY,)),
        window=window or (0.0, 1.0),
        threshold=None if threshold is None else float(threshold),
        units=units,
        legend_title=str(hint.get("legend") or _title(name, units)),
        windows=windows,
        interpolate=bool(hint.get("interpolate", False)),
        percentile=None if window is not None or percentile is None else float(percentile),
        blend=bool(hint.get("blend", True)),
    )


def data_window(values, preset: Preset) -> tuple[float, float]:
    """The preset's main window; for a percentile window, 0 to that percentile of the voxels above
    the threshold (``values``: the map as a numpy array)."""
    if preset.percentile is None:
        return preset.window
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    if preset.threshold is not None:
        v = v[v > preset.threshold]
    if v.size == 0:
        return preset.window
    hi = float(np.percentile(v, preset.percentile))
    return (0.0, hi if hi > 0 else preset.window[1])


@dataclass(frozen=True)
class InputSlot:
    """One input volume the module asks for; the selected volumes are stacked, in slot order, into
    the task's 4D channels-last image (vector/multi-volumes contribute all their components).

    Attributes:
        key: short id.
        label: what to pick, in the user's words (units included).
        optional: the task also runs without it (e.g. PVC without tissue maps).
    """

    key: str
    label: str
    optional: bool = False


def input_slots(task_info: Mapping[str, Any] | None) -> tuple[InputSlot, ...]:
    """The volumes to pick for a task, from its ``/info`` entry's ``inputs["slots"]``; a server that
    lists none gets one slot described by its own ``inputs["image"]`` text."""
    inputs = dict((task_info or {}).get("inputs") or {})
    slots = inputs.get("slots")
    if isinstance(slots, Sequence) and not isinstance(slots, str) and slots:
        out = tuple(InputSlot(str(s.get("key", f"input{i}")), str(s.get("label", "Input")), bool(s.get("optional", False))) for i, s in enumerate(slots) if isinstance(s, Mapping))
        if out:
            return out
    return (InputSlot("image", str(inputs.get("image", "Input image"))),)
