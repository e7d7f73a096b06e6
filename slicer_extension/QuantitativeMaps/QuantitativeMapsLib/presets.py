"""Display presets for the maps the qmri server returns (Slicer-free: plain Python).

A preset says how one result map is shown in Slicer: which colour node (by MRML node ID, in order of
preference: the first one present in the scene wins), the window (display range in the map's units),
an optional lower threshold below which the map is transparent (so the anatomy shows through
outside the brain), the units and the colour-legend title. Extra named windows (e.g. synthetic CT's
brain and bone windows) can be picked in the module.

Known task/map pairs get a curated preset (issue 4); anything else the server offers falls back to
the ``units`` and ``display_range`` it announces in ``/info`` or in the result JSON, shown in grey.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
# File-based table shipped with the Slicer application (not in slicer-core).
SLICER_DIVERGING = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
# Our own blue-white-red table, created by scene.MapSceneLogic when Slicer's is absent.
QMRI_DIVERGING = "qmri:DivergingBlueRed"
QMRI_RAINBOW = "qmri:RainbowReversed"


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
    """

    colour_nodes: tuple[str, ...]
    window: tuple[float, float]
    threshold: float | None
    units: str
    legend_title: str
    windows: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    interpolate: bool = False

    def window_named(self, name: str | None) -> tuple[float, float]:
        """The window called ``name`` ("default" or None: the main window)."""
        if name in (None, "", "default"):
            return self.window
        if name not in self.windows:
            raise KeyError(f"no window '{name}' for {self.legend_title}; choose from default, {', '.join(self.windows)}")
        return self.windows[name]


def _title(name: str, units: str) -> str:
    return f"{name} ({units})" if units else name


# Curated presets. Threshold choice: every qmri map is exactly 0 outside the brain mask (OEF, chi,
# PVC) or has air far below tissue (sCT -1000 HU, sMR ~0), so a small lower threshold makes the
# background transparent. chi and local field are signed with 0 inside the brain too: no threshold.
_CURATED: dict[tuple[str, str], Preset] = {
    ("oef", "OEF"): Preset((QMRI_RAINBOW, RAINBOW), (0.0, 80.0), 1e-3, "%", "OEF (%)"),
    ("oef", "S0"): Preset((GREY,), (0.0, 1.0), 1e-6, "a.u.", "S0 (a.u.)"),
    ("oef", "R2"): Preset((QMRI_RAINBOW, RAINBOW), (0.0, 30.0), 1e-3, "1/s", "R2 (1/s)"),
    ("oef", "Y"): Preset((QMRI_RAINBOW, RAINBOW), (0.0, 1.0), 1e-4, "fraction", "Y venous oxygenation (fraction)"),
    ("oef", "v"): Preset((QMRI_RAINBOW, RAINBOW), (0.0, 0.1), 1e-6, "fraction", "v venous blood volume (fraction)"),
    ("oef", "chi_nb"): Preset((SLICER_DIVERGING, QMRI_DIVERGING, GREY), (-0.2, 0.2), None, "ppm", "chi_nb (ppm)"),
    ("oef", "OEF_sd"): Preset((PET_HEAT,), (0.0, 20.0), 1e-3, "%", "OEF sd (%-points)"),
    ("qsm", "chi"): Preset((SLICER_DIVERGING, QMRI_DIVERGING, GREY), (-0.2, 0.2), None, "ppm", "chi (ppm)"),
    ("qsm_raw", "chi"): Preset((SLICER_DIVERGING, QMRI_DIVERGING, GREY), (-0.2, 0.2), None, "ppm", "chi (ppm)"),
    ("qsm_raw", "local_field"): Preset((SLICER_DIVERGING, QMRI_DIVERGING, GREY), (-0.05, 0.05), None, "ppm", "local field (ppm)"),
    ("pvc", "PVC"): Preset((PET_HEAT,), (0.0, 3.0), 0.05, "SUV", "PVC PET (SUV)"),
    # Brain window W80/L40 HU; bone window W2000/L400 HU (standard CT windows).
    ("synthetic_ct", "sCT"): Preset((GREY,), (0.0, 80.0), -900.0, "HU", "sCT (HU)", {"brain": (0.0, 80.0), "bone": (-600.0, 1400.0)}, True),
    ("synthetic_mr", "sMR"): Preset((GREY,), (0.0, 1.0), 1e-3, "a.u.", "sMR (a.u.)", {}, True),
}

# Maps whose display range the server states as "0 to the Nth percentile": computed from the data.
PERCENTILE_MAPS = {("oef", "S0"): 99.0, ("pvc", "PVC"): 99.5, ("synthetic_mr", "sMR"): 99.5}


def _range_from(value: Any) -> tuple[float, float] | None:
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        try:
            return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            return None
    return None


def preset_for(task: str, map_name: str, map_info: Mapping[str, Any] | None = None) -> Preset:
    """The preset of ``map_name`` from ``task``.

    ``map_info`` is the map's entry from the result JSON or ``/info`` outputs (``units``,
    ``display_range``); for unknown maps it decides units and window, and for known ones a numeric
    ``display_range`` from the server overrides the curated window (the server knows its data).
    """
    info = dict(map_info or {})
    units = str(info.get("units", ""))
    server_range = _range_from(info.get("display_range"))
    curated = _CURATED.get((task, map_name))
    if curated is None:
        return Preset((GREY,), server_range or (0.0, 1.0), None, units, _title(map_name, units))
    if server_range is not None and (task, map_name) != ("synthetic_ct", "sCT"):
        curated = replace(curated, window=server_range)
    return curated


def data_window(task: str, map_name: str, values, preset: Preset):
    """Window for maps whose range is a data percentile (S0, PVC, sMR); ``preset.window`` otherwise.

    ``values`` is the map as a numpy array; only voxels above the threshold count.
    """
    pct = PERCENTILE_MAPS.get((task, map_name))
    if pct is None:
        return preset.window
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    if preset.threshold is not None:
        v = v[v > preset.threshold]
    if v.size == 0:
        return preset.window
    hi = float(np.percentile(v, pct))
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


# How the server's channel layouts (its /info "inputs") map to volumes a user has in Slicer.
_SLOTS: dict[str, tuple[InputSlot, ...]] = {
    "oef": (InputSlot("echoes", "Multi-echo GRE magnitudes (one multi-volume, E echoes)"), InputSlot("qsm", "QSM map (ppm, 0 outside the brain)")),
    "qsm": (InputSlot("field", "Local field map (ppm, 0 outside the brain)"),),
    "qsm_raw": (
        InputSlot("magnitudes", "Multi-echo magnitudes (multi-volume, E echoes)"),
        InputSlot("phases", "Multi-echo wrapped phases (rad, multi-volume)"),
        InputSlot("mask", "Brain mask (0/1)"),
    ),
    "pvc": (InputSlot("pet", "PET (SUV)"), InputSlot("tissues", "Tissue probabilities GM, WM, CSF, other (multi-volume; needed by segmentation-based methods)", optional=True)),
    "synthetic_ct": (InputSlot("t2w", "T2-weighted head MR"),),
    "synthetic_mr": (InputSlot("ct", "Head CT (HU)"),),
}


def input_slots(task: str, task_info: Mapping[str, Any] | None = None) -> tuple[InputSlot, ...]:
    """The volumes to pick for ``task``; a task this module does not know gets one slot described
    by the server's own ``inputs["image"]`` text."""
    if task in _SLOTS:
        return _SLOTS[task]
    desc = str(((task_info or {}).get("inputs") or {}).get("image", "Input image"))
    return (InputSlot("image", desc),)
