"""MRML scene logic of the Quantitative Maps module: uses only MRML/VTK, never Qt.

The same code runs inside 3D Slicer (``MapSceneLogic(slicer.mrmlScene,
slicer.app.applicationLogic())``) and headless with the ``slicer-core`` wheel (``MapSceneLogic()``
makes its own scene, application and colour logic), which is how the project's tests exercise it.

Geometry: a NIfTI affine maps voxel indices (i, j, k) to RAS+ world millimetres; Slicer's world is
RAS too and ``vtkMRMLVolumeNode`` stores exactly that map as its IJKToRAS matrix (origin, spacing and
direction cosines), so the affine is copied as is. (Slicer's ITK-based file reader converts via LPS
and back; the net IJKToRAS equals the NIfTI sform/qform, which is what we set directly.) Voxel
arrays are (i, j, k) in numpy; vtkImageData stores i fastest, i.e. numpy Fortran order.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import vtk
from vtkmodules.util import numpy_support

try:  # inside Slicer, or headless with the slicer-core wheel
    import slicer
except ImportError as e:  # pragma: no cover - the module needs one of the two
    raise ImportError("QuantitativeMapsLib.scene needs 3D Slicer or the slicer-core wheel (pip install slicer-core)") from e

from .presets import GREY, QMRI_DIVERGING, QMRI_RAINBOW, RAINBOW, Preset, data_window, preset_for

LAYOUTS = ("Red", "Yellow", "Green")
ORIENTATIONS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}


def affine_to_matrix(affine: np.ndarray) -> "vtk.vtkMatrix4x4":
    """A 4x4 numpy affine (voxel -> RAS mm) as a vtkMatrix4x4."""
    a = np.asarray(affine, dtype=float)
    if a.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {a.shape}")
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


def matrix_to_affine(m: "vtk.vtkMatrix4x4") -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def array_to_image(array: np.ndarray) -> "vtk.vtkImageData":
    """(i, j, k) or (i, j, k, c) numpy array -> vtkImageData with c components (float32 kept)."""
    a = np.asarray(array)
    if a.ndim not in (3, 4):
        raise ValueError(f"a volume must be 3D or 4D (channels last), got shape {a.shape}")
    comps = 1 if a.ndim == 3 else a.shape[3]
    img = vtk.vtkImageData()
    img.SetDimensions(*(int(n) for n in a.shape[:3]))
    flat = a.reshape(-1, comps, order="F") if a.ndim == 4 else a.ravel(order="F")
    # numpy_to_vtk needs a contiguous array; deep copy so VTK owns the memory
    vtk_arr = numpy_support.numpy_to_vtk(np.ascontiguousarray(flat), deep=True)
    vtk_arr.SetNumberOfComponents(comps)
    img.GetPointData().SetScalars(vtk_arr)
    return img


def image_to_array(img: "vtk.vtkImageData") -> np.ndarray:
    """vtkImageData -> (i, j, k) or (i, j, k, c) numpy array (a copy)."""
    dims = img.GetDimensions()
    scalars = img.GetPointData().GetScalars()
    a = numpy_support.vtk_to_numpy(scalars).copy()
    comps = scalars.GetNumberOfComponents()
    if comps == 1:
        return a.reshape(dims, order="F")
    return a.reshape((*dims, comps), order="F")


def to_nifti_parts(image: Any) -> tuple[np.ndarray, np.ndarray]:
    """(float32 array, affine) from a nibabel image, a NIfTI path, raw NIfTI bytes or an
    (array, affine) pair."""
    if isinstance(image, tuple) and len(image) == 2:
        return np.asarray(image[0], dtype=np.float32), np.asarray(image[1], dtype=float)
    import nibabel as nib

    if isinstance(image, (bytes, bytearray)):
        image = nib.Nifti1Image.from_bytes(bytes(image))
    elif isinstance(image, (str, Path)):
        image = nib.load(str(image))
    return np.asarray(image.dataobj, dtype=np.float32), np.asarray(image.affine, dtype=float)


def fit_slice(slice_logic, to_background: bool = True) -> None:
    """Fit a slice view to its background volume (or to every volume): Slicer 5.8 and later take no
    arguments, Slicer 5.6 needs the view's width and height (``FitSliceToBackground(int, int)``)."""
    fit = slice_logic.FitSliceToBackground if to_background else slice_logic.FitSliceToAll
    try:
        fit()
    except TypeError:  # Slicer 5.6
        dims = slice_logic.GetSliceNode().GetDimensions()
        fit(int(dims[0]), int(dims[1]))


def _names_initialised(colour_node) -> None:
    """Mark a colour table's names as set: needed before Slicer 5.10; from 5.10 (which added
    SetColorDefined) SetColor does it and SetNamesInitialised only logs a deprecation error."""
    if not hasattr(colour_node, "SetColorDefined"):
        colour_node.SetNamesInitialised(True)


class MapSceneLogic:
    """Loads quantitative maps into a MRML scene and shows them over the anatomy.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` in Slicer); a new one when None.
        app_logic: the application logic (``slicer.app.applicationLogic()`` in Slicer); a new
            vtkSlicerApplicationLogic with the default colour nodes when None (headless).
    """

    def __init__(self, scene=None, app_logic=None):
        self.scene = scene if scene is not None else slicer.vtkMRMLScene()
        if app_logic is None:
            app_logic = slicer.vtkSlicerApplicationLogic()
            app_logic.SetMRMLScene(self.scene)
        self.app_logic = app_logic
        colour_logic = app_logic.GetColorLogic()
        if colour_logic is not None and self.scene.GetNodeByID(GREY) is None:
            colour_logic.SetMRMLScene(self.scene)
            colour_logic.AddDefaultColorNodes()
        self._own_slice_logics: dict[str, Any] = {}
        self._legend_logic = None

    # -- colour -----------------------------------------------------------------------------------
    def _diverging_node(self):
        """A blue-white-red 256-entry table (our own: slicer-core lacks Slicer's file-based tables).

        The two central entries (|value| under 1/128 of the half-window, 0.0016 ppm for +-0.2 ppm)
        are transparent: a signed map has no threshold that hides the zeros outside the brain, so
        without this the map's whole box covers the anatomy in white."""
        nodes = self.scene.GetNodesByName("qmri DivergingBlueRed")
        if nodes.GetNumberOfItems():
            return nodes.GetItemAsObject(0)
        node = slicer.vtkMRMLColorTableNode()
        node.SetName("qmri DivergingBlueRed")
        node.SetTypeToUser()
        node.SetNumberOfColors(256)
        node.SetHideFromEditors(False)
        for i in range(256):
            t = i / 255.0
            if t < 0.5:  # blue (0.23, 0.30, 0.75) -> white
                u = t / 0.5
                rgb = (0.23 + u * 0.77, 0.30 + u * 0.70, 0.75 + u * 0.25)
            else:  # white -> red (0.71, 0.02, 0.15)
                u = (t - 0.5) / 0.5
                rgb = (1.0 - u * 0.29, 1.0 - u * 0.98, 1.0 - u * 0.85)
            node.SetColor(i, f"c{i}", *rgb, 0.0 if i in (127, 128) else 1.0)
        _names_initialised(node)
        self.scene.AddNode(node)
        return node

    def _rainbow_reversed_node(self):
        """Slicer's Rainbow table reversed: violet/blue (low) -> red (high)."""
        nodes = self.scene.GetNodesByName("qmri RainbowReversed")
        if nodes.GetNumberOfItems():
            return nodes.GetItemAsObject(0)
        src = self.scene.GetNodeByID(RAINBOW).GetLookupTable()
        n = src.GetNumberOfTableValues()
        node = slicer.vtkMRMLColorTableNode()
        node.SetName("qmri RainbowReversed")
        node.SetTypeToUser()
        node.SetNumberOfColors(n)
        node.SetHideFromEditors(False)
        for i in range(n):
            node.SetColor(i, f"c{i}", *src.GetTableValue(n - 1 - i)[:3], 1.0)
        _names_initialised(node)
        self.scene.AddNode(node)
        return node

    def colour_node_id(self, preset: Preset) -> str:
        """The first of the preset's colour nodes present in the scene (ours created on demand)."""
        for cid in preset.colour_nodes:
            if cid == QMRI_DIVERGING:
                return self._diverging_node().GetID()
            if cid == QMRI_RAINBOW and self.scene.GetNodeByID(RAINBOW) is not None:
                return self._rainbow_reversed_node().GetID()
            if self.scene.GetNodeByID(cid) is not None:
                return cid
        return GREY

    # -- volumes ----------------------------------------------------------------------------------
    def add_volume(self, array: np.ndarray, affine: np.ndarray, name: str):
        """A new vtkMRMLScalarVolumeNode (3D array) with IJKToRAS = ``affine``, plus a display node."""
        a = np.asarray(array)
        if a.ndim != 3:
            raise ValueError(f"{name}: a scalar volume must be 3D, got shape {a.shape}")
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        node.SetAndObserveImageData(array_to_image(a))
        node.SetIJKToRASMatrix(affine_to_matrix(affine))
        node.CreateDefaultDisplayNodes()
        return node

    def volume_array(self, node) -> tuple[np.ndarray, np.ndarray]:
        """(array, affine) of a scalar or vector volume node: what gets written for an upload.

        Transforms applied to the node in the scene are not baked in (harden them first).
        """
        if node is None or node.GetImageData() is None:
            raise ValueError("the selected volume has no image data")
        m = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(m)
        return image_to_array(node.GetImageData()), matrix_to_affine(m)

    def stack_volumes(self, nodes: Sequence[Any], atol_mm: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
        """One 4D channels-last float32 array from several volumes on the same grid.

        Vector volumes and MultiVolumes contribute all their components, a Volume Sequence (or its
        proxy volume) all its frames, in order. The grids (shape and IJKToRAS) must agree; resample
        in Slicer first if they do not.
        """
        from .acquisition import frames

        arrays, ref_aff, ref_shape = [], None, None
        for node in nodes:
            a, aff = frames(node)
            a = a[..., None] if a.ndim == 3 else a
            if ref_shape is None:
                ref_shape, ref_aff = a.shape[:3], aff
            elif a.shape[:3] != ref_shape or not np.allclose(aff, ref_aff, atol=atol_mm):
                raise ValueError(f"'{node.GetName()}' is not on the grid of '{nodes[0].GetName()}' (shape {a.shape[:3]} vs {ref_shape}); resample it onto the same grid first")
            arrays.append(a)
        if not arrays:
            raise ValueError("no input volume selected")
        out = np.concatenate(arrays, axis=-1)
        return (out[..., 0] if out.shape[-1] == 1 else out), ref_aff

    def save_nifti(self, array: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
        """Write float32 NIfTI (gzip) for upload; the affine is written as sform and qform."""
        import nibabel as nib

        img = nib.Nifti1Image(np.asarray(array, dtype=np.float32), np.asarray(affine, dtype=float))
        img.set_qform(img.affine, code=1)
        img.set_sform(img.affine, code=1)
        nib.save(img, str(path))
        return Path(path)

    def load_result(self, image: Any, meta: Mapping[str, Any], task: str, base_name: str) -> list:
        """One named float scalar volume per map of an infer result, displayed with its preset.

        Args:
            image: the result (nibabel image, path or NIfTI bytes); 3D for one map, 4D channels-last.
            meta: the server's result JSON (``maps`` with name, units, display_range, channel).
            task: the task that made it (chooses the presets).
            base_name: prefix of the node names, e.g. the input volume's name.
        Returns:
            the new nodes, in the order of ``meta["maps"]``; node names "<base_name> <map> [<method>]"
            ("<base_name> <map>" when the JSON names no method).
        """
        data, affine = to_nifti_parts(image)
        maps = list(meta.get("maps") or [])
        if not maps:
            raise ValueError("the result JSON lists no maps")
        n = 1 if data.ndim == 3 else data.shape[3]
        if n != len(maps):
            raise ValueError(f"the result has {n} channel(s) but the JSON lists {len(maps)} map(s)")
        nodes = []
        for i, m in enumerate(maps):
            ch = int(m.get("channel", i))
            values = data if data.ndim == 3 else data[..., ch]
            method = str(meta.get("method") or "")  # in the name, so that two methods' maps can be told apart
            node = self.add_volume(np.ascontiguousarray(values, dtype=np.float32), affine, f"{base_name} {m['name']}" + (f" [{method}]" if method else ""))
            node.SetAttribute("qmri.task", task)
            node.SetAttribute("qmri.map", str(m["name"]))
            node.SetAttribute("qmri.units", str(m.get("units", "")))
            node.SetAttribute("qmri.method", str(meta.get("method", "")))
            if m.get("description"):
                node.SetDescription(str(m["description"]))
            self._set_units(node, str(m.get("units", "")))
            preset = preset_for(m)
            window = data_window(values, preset)
            # the server's hint and the main window, kept on the node: re-display, "default" window
            node.SetAttribute("qmri.display", json.dumps({k: m[k] for k in ("name", "units", "display_range", "display") if k in m}))
            node.SetAttribute("qmri.window", f"{window[0]:.9g} {window[1]:.9g}")
            node.SetAttribute("qmri.blend", "1" if preset.blend else "0")
            self.apply_preset(node, preset, window=window)
            nodes.append(node)
        return nodes

    @staticmethod
    def node_preset(node) -> Preset:
        """The preset of a map volume this logic loaded (from the hint kept on the node); its main
        window is the one chosen at load time (a percentile window stays what it was)."""
        try:
            info = json.loads(node.GetAttribute("qmri.display") or "{}")
        except ValueError:
            info = {}
        preset = preset_for(info if isinstance(info, dict) else {}, node.GetName())
        try:
            lo, hi = (float(x) for x in (node.GetAttribute("qmri.window") or "").split())
            return replace(preset, window=(lo, hi), percentile=None)
        except ValueError:
            return preset

    def difference(self, a, b, atol_mm: float = 1e-3):
        """A new map ``a - b`` of two maps of the same quantity on one grid (e.g. the same task run
        with two methods), in their units, shown blue-white-red about 0 over +-the 99th percentile
        of ``|a - b|`` where either map is non-zero."""
        ua, ub = a.GetAttribute("qmri.units") or "", b.GetAttribute("qmri.units") or ""
        if ua != ub:
            raise ValueError(f"'{a.GetName()}' is in {ua or 'no units'} and '{b.GetName()}' in {ub or 'no units'}: only maps of one quantity can be subtracted")
        (va, aff_a), (vb, aff_b) = self.volume_array(a), self.volume_array(b)
        if va.shape != vb.shape or not np.allclose(aff_a, aff_b, atol=atol_mm):
            raise ValueError(f"'{b.GetName()}' is not on the grid of '{a.GetName()}' (shape {vb.shape} vs {va.shape}); resample it first")
        diff = (va.astype(np.float64) - vb.astype(np.float64)).astype(np.float32)
        shown = (va != 0) | (vb != 0)
        half = float(np.percentile(np.abs(diff[shown]), 99)) if shown.any() else 0.0
        half = half if half > 0 else 1.0
        name = a.GetAttribute("qmri.map") or a.GetName()
        entry = {"name": f"{name} difference", "units": ua, "display_range": [-half, half], "display": {"colormap": "diverging", "legend": f"diff {name} ({ua})" if ua else f"diff {name}", "threshold": None}}
        (node,) = self.load_result((diff, aff_a), {"maps": [entry]}, a.GetAttribute("qmri.task") or "", f"{a.GetName()} - {b.GetName()}")
        node.SetName(f"{a.GetName()} - {b.GetName()}")
        return node

    @staticmethod
    def probe(nodes: Sequence[Any], ras: Sequence[float]) -> list[tuple[str, float | None, str]]:
        """Each map's value at world point ``ras`` (mm; nearest voxel) with its units: the module's
        data probe line, ``[(node name, value or None outside the map, units), ...]``."""
        out = []
        for node in nodes:
            if node is None or node.GetImageData() is None:
                continue
            m = vtk.vtkMatrix4x4()
            node.GetRASToIJKMatrix(m)
            ijk = np.rint(matrix_to_affine(m) @ np.r_[np.asarray(ras, float)[:3], 1.0])[:3].astype(int)
            dims = node.GetImageData().GetDimensions()
            inside = all(0 <= ijk[a] < dims[a] for a in range(3))
            value = float(node.GetImageData().GetScalarComponentAsDouble(int(ijk[0]), int(ijk[1]), int(ijk[2]), 0)) if inside else None
            out.append((node.GetName(), value, node.GetAttribute("qmri.units") or ""))
        return out

    @staticmethod
    def probe_text(values: Sequence[tuple[str, float | None, str]]) -> str:
        """One line per map, e.g. ``sub-1 OEF [best]: 37.2 %`` (``--`` outside the map)."""
        return "\n".join(f"{name}: {'--' if v is None else f'{v:.4g}'}{'' if v is None or not u else ' ' + u}" for name, v, u in values)

    @staticmethod
    def _set_units(node, units: str) -> None:
        """Voxel value units as a UCUM coded entry (shown by Slicer's data probe)."""
        if not units or not hasattr(slicer, "vtkCodedEntry"):
            return
        ucum = {"%": "%", "ppm": "[ppm]", "HU": "[hnsf'U]", "1/s": "/s", "SUV": "{SUVbw}g/ml", "fraction": "1", "a.u.": "1"}.get(units, units)
        entry = slicer.vtkCodedEntry()
        entry.SetValueSchemeMeaning(ucum, "UCUM", units)
        node.SetVoxelValueUnits(entry)

    def apply_preset(self, node, preset: Preset, window: tuple[float, float] | str | None = None) -> None:
        """Colour node, window/level, threshold and interpolation of ``node``'s display node.

        ``window``: a (low, high) range in the map's units, or the name of one of the preset's
        windows ("brain", "bone"); the preset's main window when None.
        """
        lo, hi = window if isinstance(window, tuple) else preset.window_named(window)
        if not hi > lo:
            raise ValueError(f"empty window ({lo}, {hi}) for {node.GetName()}")
        node.SetAttribute("qmri.legend_title", preset.legend_title)
        dn = node.GetDisplayNode()
        if dn is None:
            node.CreateDefaultDisplayNodes()
            dn = node.GetDisplayNode()
        was = dn.StartModify()
        dn.SetAndObserveColorNodeID(self.colour_node_id(preset))
        dn.SetAutoWindowLevel(False)
        dn.SetWindowLevelMinMax(float(lo), float(hi))
        if preset.threshold is None:
            dn.SetApplyThreshold(False)
        else:
            dn.SetAutoThreshold(False)
            dn.SetApplyThreshold(True)
            dn.SetThreshold(float(preset.threshold), float(np.finfo(np.float32).max))
        dn.SetInterpolate(bool(preset.interpolate))
        dn.EndModify(was)

    def add_colour_legend(self, node, title: str | None = None):
        """A colour legend display node (Slicer draws it in the slice and 3D views) titled with units."""
        if self._legend_logic is None and getattr(getattr(slicer, "modules", None), "colors", None) is not None:
            self._legend_logic = slicer.modules.colors.logic()  # Slicer's own (a second one would re-add the default colour nodes)
        if self._legend_logic is None:  # headless (slicer-core): no Colors module
            logic = slicer.vtkSlicerColorLogic()
            logic.SetMRMLApplicationLogic(self.app_logic)
            logic.SetMRMLScene(self.scene)
            self._legend_logic = logic
        legend = self._legend_logic.AddDefaultColorLegendDisplayNode(node)
        legend.SetTitleText(title or node.GetAttribute("qmri.legend_title") or node.GetName())
        legend.SetLabelFormat("%.3g")
        legend.SetVisibility(True)
        return legend

    # -- slice views ------------------------------------------------------------------------------
    def slice_logics(self) -> dict[str, Any]:
        """Layout name -> vtkMRMLSliceLogic: Slicer's own views, or headless ones we create."""
        out: dict[str, Any] = {}
        coll = self.app_logic.GetSliceLogics() if hasattr(self.app_logic, "GetSliceLogics") else None
        if coll is not None:
            for i in range(coll.GetNumberOfItems()):
                sl = coll.GetItemAsObject(i)
                if sl.GetSliceNode() is not None:
                    out[sl.GetSliceNode().GetLayoutName()] = sl
        if out:
            return out
        if not self._own_slice_logics:
            for name in LAYOUTS:
                sl = slicer.vtkMRMLSliceLogic()
                sl.SetMRMLApplicationLogic(self.app_logic)
                sl.SetMRMLScene(self.scene)
                node = sl.AddSliceNode(name)
                node.SetOrientation(ORIENTATIONS[name])
                self._own_slice_logics[name] = sl
        return dict(self._own_slice_logics)

    def show_overlay(self, background, foreground, opacity: float = 0.6, fit: bool = True) -> list:
        """Anatomy as background and the map as foreground in every slice view (a map whose hint
        says ``blend: false`` is the background instead, under the anatomy at ``opacity``).

        Returns the vtkMRMLSliceCompositeNodes that were set.
        """
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"opacity must be within 0..1, got {opacity}")
        if foreground is not None and foreground.GetAttribute("qmri.blend") == "0" and background is not None:
            # a grey image (synthetic CT/MR) blended over grey anatomy is unreadable: it is shown on
            # its own as the background, and ``opacity`` fades the anatomy in over it
            background, foreground = foreground, background
        comps = []
        for sl in self.slice_logics().values():
            cn = sl.GetSliceCompositeNode()
            cn.SetBackgroundVolumeID(background.GetID() if background is not None else None)
            cn.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
            cn.SetForegroundOpacity(float(opacity))
            comps.append(cn)
            if fit:
                fit_slice(sl, background is not None)
        return comps

    def set_opacity(self, opacity: float) -> None:
        """Foreground (map) opacity in every slice view, 0..1."""
        for sl in self.slice_logics().values():
            sl.GetSliceCompositeNode().SetForegroundOpacity(float(opacity))

    def blend_slice(self, background, foreground, opacity: float = 0.6, offset_mm: float | None = None, size: int = 400, layout: str = "Red") -> tuple[np.ndarray, np.ndarray]:
        """Slicer's slice logic blends one slice of the background and foreground layers.

        Args:
            offset_mm: slice position along the view normal (for Red: the world S coordinate, mm);
                the centre of the foreground volume when None.
            size: slice view size (pixels, square).
        Returns:
            (RGBA uint8 image as shown in the view, rows top to bottom;
             foreground map values resliced onto the same pixels (float, NaN outside the volume)).
        """
        self.show_overlay(background, foreground, opacity, fit=False)
        sl = self.slice_logics()[layout]
        sn = sl.GetSliceNode()
        sn.SetDimensions(int(size), int(size), 1)
        fit_slice(sl, background is not None)
        if offset_mm is None:
            b = [0.0] * 6
            foreground.GetRASBounds(b)
            offset_mm = 0.5 * (b[4] + b[5])
        sl.SetSliceOffset(float(offset_mm))
        port = sl.GetImageDataConnection()
        port.GetProducer().Update()
        blend = port.GetProducer().GetOutputDataObject(port.GetIndex())
        rgba = image_to_array(blend)[:, :, 0, :]  # (x, y, 4), y from the bottom
        rgba = np.ascontiguousarray(np.flipud(np.transpose(rgba, (1, 0, 2))))  # rows top to bottom
        fg_values = self._foreground_values(sl, foreground, size)
        return rgba, fg_values

    @staticmethod
    def _foreground_values(sl, foreground, size: int) -> np.ndarray:
        """The foreground map's values at each slice pixel (nearest voxel), NaN outside the volume."""
        xy_to_ras = sl.GetSliceNode().GetXYToRAS()
        ras_to_ijk = vtk.vtkMatrix4x4()
        foreground.GetRASToIJKMatrix(ras_to_ijk)
        x, y = np.meshgrid(np.arange(size) + 0.0, np.arange(size) + 0.0)
        pts = np.stack([x.ravel(), y.ravel(), np.zeros(x.size), np.ones(x.size)])
        ijk = matrix_to_affine(ras_to_ijk) @ matrix_to_affine(xy_to_ras) @ pts
        idx = np.rint(ijk[:3]).astype(int)
        data = image_to_array(foreground.GetImageData())
        inside = np.all((idx >= 0) & (idx < np.array(data.shape)[:, None]), axis=0)
        vals = np.full(x.size, np.nan)
        vals[inside] = data[idx[0, inside], idx[1, inside], idx[2, inside]]
        return np.flipud(vals.reshape(size, size))

    def legend_lookup_table(self, node) -> "vtk.vtkLookupTable":
        """A 256-entry lookup table over the node's display window, sampled from its colour node."""
        dn = node.GetDisplayNode()
        s2c = dn.GetColorNode().GetScalarsToColors()
        lut = vtk.vtkLookupTable()
        lut.SetNumberOfTableValues(256)
        if isinstance(s2c, vtk.vtkLookupTable):
            n = s2c.GetNumberOfTableValues()
            for i in range(256):
                lut.SetTableValue(i, *s2c.GetTableValue(int(round(i * (n - 1) / 255.0)))[:3], 1.0)
        else:  # procedural (e.g. PET-Heat): a colour transfer function over its own range
            r0, r1 = s2c.GetRange()
            for i in range(256):
                lut.SetTableValue(i, *s2c.GetColor(r0 + (r1 - r0) * i / 255.0), 1.0)
        lut.SetRange(dn.GetWindowLevelMin(), dn.GetWindowLevelMax())
        lut.Build()
        return lut

    def render_png(self, background, foreground, path: str | Path, opacity: float = 0.6, offset_mm: float | None = None, size: int = 400, legend: bool = True) -> dict:
        """Blend one slice with Slicer's slice logic and save it as PNG, with a colour legend.

        The slice occupies the left ``size`` x ``size`` pixels; the legend (title with units) is
        drawn by VTK off-screen in a panel to its right. Returns {"path", "rgba", "values",
        "legend"} where rgba/values are the slice pixels (see :meth:`blend_slice`).
        """
        rgba, values = self.blend_slice(background, foreground, opacity, offset_mm, size)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        drew_legend = False
        if legend:
            try:
                self._render_with_legend(rgba, foreground, path)
                drew_legend = True
            except Exception:  # no OpenGL context: fall back to the slice alone
                drew_legend = False
        if not drew_legend:
            self._write_png(rgba, path)
        return {"path": path, "rgba": rgba, "values": values, "legend": drew_legend}

    @staticmethod
    def _rgba_image(rgba: np.ndarray) -> "vtk.vtkImageData":
        a = np.flipud(rgba)  # VTK rows start at the bottom
        img = vtk.vtkImageData()
        img.SetDimensions(a.shape[1], a.shape[0], 1)
        arr = numpy_support.numpy_to_vtk(np.ascontiguousarray(a.reshape(-1, a.shape[2])), deep=True)
        img.GetPointData().SetScalars(arr)
        return img

    def _write_png(self, rgba: np.ndarray, path: Path) -> None:
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(str(path))
        writer.SetInputData(self._rgba_image(rgba[..., :3]))
        writer.Write()

    def _render_with_legend(self, rgba: np.ndarray, foreground, path: Path, panel: int = 170) -> None:
        h, w = rgba.shape[:2]
        mapper = vtk.vtkImageMapper()
        mapper.SetInputData(self._rgba_image(rgba[..., :3]))
        mapper.SetColorWindow(255)
        mapper.SetColorLevel(127.5)
        actor = vtk.vtkActor2D()
        actor.SetMapper(mapper)
        bar = vtk.vtkScalarBarActor()
        bar.SetLookupTable(self.legend_lookup_table(foreground))
        bar.SetTitle(foreground.GetAttribute("qmri.legend_title") or foreground.GetName())
        bar.SetNumberOfLabels(5)
        bar.SetLabelFormat("%.3g")
        bar.SetMaximumWidthInPixels(panel - 20)
        bar.GetPositionCoordinate().SetCoordinateSystemToDisplay()
        bar.GetPositionCoordinate().SetValue(w + 10, 20)
        bar.GetPosition2Coordinate().SetCoordinateSystemToDisplay()
        bar.GetPosition2Coordinate().SetValue(panel - 20, h - 40)
        for prop in (bar.GetTitleTextProperty(), bar.GetLabelTextProperty()):
            prop.SetColor(1, 1, 1)
            prop.SetFontSize(14)
            prop.ShadowOff()
            prop.ItalicOff()
        bar.UnconstrainedFontSizeOn()
        renderer = vtk.vtkRenderer()
        renderer.SetBackground(0, 0, 0)
        renderer.AddViewProp(actor)
        renderer.AddViewProp(bar)
        window = vtk.vtkRenderWindow()
        window.SetOffScreenRendering(1)
        window.SetSize(w + panel, h)
        window.AddRenderer(renderer)
        window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(window)
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.Update()
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(str(path))
        writer.SetInputConnection(grab.GetOutputPort())
        writer.Write()
        window.Finalize()
